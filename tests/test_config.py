"""Config tree: profiles, JSON round trip, validation messages."""

from __future__ import annotations

import json

import pytest

from deepssm_nb import Config, ConfigError, get_profile, load_config, save_config
from deepssm_nb.config import PROFILES, notebook_config, profile_table, set_field


@pytest.mark.parametrize('name', PROFILES)
def test_profiles_are_valid_and_round_trip(name, tmp_path):
    cfg = get_profile(name, work_dir=str(tmp_path))
    path = save_config(cfg, tmp_path / 'cfg.json')
    back = load_config(path)
    assert back == cfg
    assert json.loads(path.read_text())['profile'] == name


def test_profiles_grow_from_smoke_to_full():
    s, w, f = (get_profile(p) for p in PROFILES)
    assert s.augment.num_samples < w.augment.num_samples < f.augment.num_samples
    assert s.deepssm.trainer.epochs < w.deepssm.trainer.epochs < f.deepssm.trainer.epochs
    assert s.groom.spacing > w.groom.spacing >= f.groom.spacing
    table = profile_table()
    assert table['augment.num_samples'] == {'smoke': 12, 'workshop': 400, 'full': 4000}


def test_deepssm_json_has_every_seed_key(tmp_path):
    d = get_profile('smoke', work_dir=str(tmp_path)).deepssm_json()
    for key in (
        'model_name',
        'num_latent_dim',
        'paths',
        'encoder',
        'decoder',
        'loss',
        'trainer',
        'fine_tune',
        'tl_net',
        'use_best_model',
    ):
        assert key in d
    assert set(d['paths']) == {'out_dir', 'loader_dir', 'aug_dir'}
    assert d['paths']['aug_dir'] == str(tmp_path / 'augmentation')
    assert set(d['trainer']['decay_lr']) >= {'enabled', 'type', 'parameters'}
    assert {'enabled', 'loss', 'epochs', 'learning_rate', 'decay_lr', 'val_freq'} <= set(d['fine_tune'])
    assert {'enabled', 'ae_epochs', 'tf_epochs', 'joint_epochs', 'alpha', 'a_ae', 'c_ae', 'a_lat', 'c_lat'} <= set(
        d['tl_net']
    )
    assert {'function', 'supervised_latent'} <= set(d['loss'])


def test_a_deepssm_only_file_loads_into_the_deepssm_branch(tmp_path):
    d = get_profile('smoke').deepssm_json()
    d['trainer']['epochs'] = 7
    p = tmp_path / 'femur_deepssm.json'
    p.write_text(json.dumps(d))
    assert load_config(p).deepssm.trainer.epochs == 7


BAD_CONFIGS = [
    ({'deepssm': {'trainer': {'epoch': 3}}}, r"config\.deepssm\.trainer\.epoch: unknown key\. Did you mean 'epochs'"),
    (
        {'deepssm': {'trainer': {'epochs': 0}}},
        r'config\.deepssm\.trainer\.epochs: expected a value in \[1, inf\); got 0',
    ),
    ({'deepssm': {'trainer': {'epochs': 2.5}}}, r'config\.deepssm\.trainer\.epochs: expected an integer; got 2\.5'),
    ({'deepssm': {'trainer': {'epochs': True}}}, r'config\.deepssm\.trainer\.epochs: expected an integer; got True'),
    (
        {'deepssm': {'trainer': {'learning_rate': -0.1}}},
        r'config\.deepssm\.trainer\.learning_rate: expected a value in \(0\.0, 1\.0\]; got -0\.1',
    ),
    (
        {'deepssm': {'trainer': {'learning_rate': 'fast'}}},
        r'config\.deepssm\.trainer\.learning_rate: expected a number; got \'fast\'',
    ),
    (
        {'deepssm': {'loss': {'function': 'mse'}}},
        r"config\.deepssm\.loss\.function: expected one of \['MSE', 'Focal'\]; got 'mse'\. Did you mean 'MSE'",
    ),
    (
        {'deepssm': {'trainer': {'decay_lr': {'type': 'Cosine'}}}},
        r"decay_lr\.type: expected one of \['CosineAnnealing', 'Step'\]; got 'Cosine'\. Did you mean 'CosineAnnealing'",
    ),
    (
        {'deepssm': {'trainer': {'decay_lr': {'parameters': {'tmax': 10}}}}},
        r"decay_lr\.parameters\.tmax: unknown key\. Did you mean 'T_max'",
    ),
    (
        {'deepssm': {'trainer': {'decay_lr': {'parameters': {'gamma': -1}}}}},
        r'decay_lr\.parameters\.gamma: expected a number >= 0; got -1',
    ),
    (
        {'deepssm': {'uncertainty': {'mc_passes': 0}}},
        r'config\.deepssm\.uncertainty\.mc_passes: expected a value in \[1, inf\); got 0',
    ),
    (
        {'deepssm': {'uncertainty': {'burn_in_epochs': -1}}},
        r'config\.deepssm\.uncertainty\.burn_in_epochs: expected a value in \[0, inf\); got -1',
    ),
    (
        {'deepssm': {'uncertainty': {'dropout': 1}}},
        r'config\.deepssm\.uncertainty\.dropout: expected a value in \[0\.0, 0\.9\]; got 1',
    ),
    (
        {'deepssm': {'uncertainty': {'threshold_quantile': 1.0}}},
        r'config\.deepssm\.uncertainty\.threshold_quantile: expected a value in \(0\.0, 0\.999\]; got 1\.0',
    ),
    (
        {'deepssm': {'uncertainty': {'grad_clip': 0}}},
        r'config\.deepssm\.uncertainty\.grad_clip: expected a value in \(0\.0, inf\); got 0',
    ),
    (
        {'deepssm': {'uncertainty': {'epochs': 0}}},
        r'config\.deepssm\.uncertainty\.epochs: expected a value in \[1, inf\)',
    ),
    ({'deepssm': {'uncertainty': {'mcpasses': 3}}}, r"uncertainty\.mcpasses: unknown key\. Did you mean 'mc_passes'"),
    (
        {'deepssm': {'encoder': {'deterministic': False}, 'uncertainty': {'dropout': 0}}},
        r'uncertainty\.mc_passes: 20 passes with uncertainty\.dropout=0 would all be the same; expected dropout > 0',
    ),
    (
        {'deepssm': {'decoder': {'deterministic': False}}},
        r'decoder\.deterministic: only deterministic decoders are implemented .*expected true, got false',
    ),
    (
        {'deepssm': {'encoder': {'deterministic': False}, 'tl_net': {'enabled': True}}},
        r'tl_net\.enabled: .*expected encoder\.deterministic, decoder\.linear and loss\.supervised_latent all true',
    ),
    ({'deepssm': {'encoder': {'channels': [8, 16]}}}, r'encoder\.channels: expected a list of 5 positive integers'),
    ({'deepssm': {'tl_net': {'alpha': -2}}}, r'config\.deepssm\.tl_net\.alpha: expected a value in \[0\.0, inf\)'),
    (
        {'deepssm': {'fine_tune': {'enabled': 'yes'}}},
        r"config\.deepssm\.fine_tune\.enabled: expected a boolean; got 'yes'",
    ),
    ({'deepssm': {'use_best_model': 1}}, r'config\.deepssm\.use_best_model: expected a boolean; got 1'),
    (
        {'deepssm': {'trainer': {'device': 'gpu'}}},
        r"trainer\.device: expected one of \['auto', 'cpu', 'cuda'\]; got 'gpu'",
    ),
    ({'augment': {'sampler': 'KDE'}}, r"config\.augment\.sampler: .*got 'KDE'\. Did you mean 'kde'"),
    (
        {'augment': {'percent_variability': 95}},
        r'config\.augment\.percent_variability: expected a value in \(0\.0, 1\.0\]; got 95',
    ),
    ({'loader': {'down_factor': 0}}, r'config\.loader\.down_factor: expected a value in \(0\.0, 1\.0\]; got 0'),
    ({'loader': {'batch_size': 0}}, r'config\.loader\.batch_size: expected a value in \[1, 4096\]; got 0'),
    ({'data': {'num_particles': 'many'}}, r"config\.data\.num_particles: expected an integer; got 'many'"),
    ({'data': {'num_test': 24}}, r'config\.data\.num_test: must leave at least 3 training subjects'),
    ({'groom': {'spacing': float('nan')}}, r'config\.groom\.spacing: expected a finite number'),
    ({'profile': 'laptop'}, r"config\.profile: expected one of \['smoke', 'workshop', 'full'\]; got 'laptop'"),
    ({'deepssm': 3}, r'config\.deepssm: expected an object; got 3'),
    ({'augmnet': {}}, r"config\.augmnet: unknown key\. Did you mean 'augment'"),
]


@pytest.mark.bad_input
@pytest.mark.parametrize('bad, message', BAD_CONFIGS, ids=[str(i) for i in range(len(BAD_CONFIGS))])
def test_bad_config_is_rejected_with_its_message(bad, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_dict(bad)


@pytest.mark.bad_input
def test_all_problems_are_reported_at_once():
    bad = {'deepssm': {'trainer': {'epoch': 3, 'learning_rate': -1}}, 'augment': {'sampler': 'kdee'}}
    with pytest.raises(ConfigError) as info:
        Config.from_dict(bad)
    assert len(info.value.problems) == 3
    assert '3 problem(s)' in str(info.value)


@pytest.mark.bad_input
def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.json'):
        load_config(tmp_path / 'missing.json')
    p = tmp_path / 'broken.json'
    p.write_text('{"deepssm": {"trainer": ')
    with pytest.raises(ConfigError, match=r'broken\.json" is not valid JSON'):
        load_config(p)
    p.write_text('[1, 2]')
    with pytest.raises(ConfigError, match='must hold a JSON object; got list'):
        load_config(p)


@pytest.mark.bad_input
def test_unknown_profile_suggests_spelling():
    with pytest.raises(ConfigError, match="Did you mean 'smoke'"):
        get_profile('smok')
    with pytest.raises(ConfigError, match="unknown override 'workdir'. Did you mean 'work_dir'"):
        get_profile('smoke', workdir='x')


def test_notebook_config_sets_the_cells_values_and_keeps_the_profiles_for_none(tmp_path):
    cfg = notebook_config(
        'smoke',
        tmp_path / 'w',
        tmp_path / 'd',
        {'deepssm.trainer.epochs': 5, 'groom.padding': 0.0, 'loader.batch_size': None, 'augment.sampler': 'gaussian'},
    )
    smoke = get_profile('smoke')
    assert cfg.deepssm.trainer.epochs == 5 and cfg.groom.padding == 0.0 and cfg.augment.sampler == 'gaussian'
    assert cfg.loader.batch_size == smoke.loader.batch_size  # None keeps the profile's value
    assert cfg.work_dir == str(tmp_path / 'w') and cfg.data.data_dir == str(tmp_path / 'd')
    assert notebook_config('smoke', 'out') == get_profile('smoke', work_dir='out')
    set_field(cfg, 'deepssm.encoder.dropout', 0.25)
    assert cfg.deepssm.encoder.dropout == 0.25


@pytest.mark.bad_input
def test_notebook_config_names_an_unknown_key_and_every_bad_value():
    with pytest.raises(ConfigError, match=r"'deepssm.trainer.epoch': deepssm.trainer has no key 'epoch'. Did you mean"):
        notebook_config('smoke', 'out', settings={'deepssm.trainer.epoch': 3})
    with pytest.raises(ConfigError, match=r"'loader.batch_size.x': loader.batch_size has no key 'x'"):
        set_field(get_profile('smoke'), 'loader.batch_size.x', 1)
    with pytest.raises(ConfigError) as err:
        notebook_config('smoke', 'out', settings={'deepssm.trainer.epochs': 0, 'loader.down_factor': 2.0})
    assert len(err.value.problems) == 2
