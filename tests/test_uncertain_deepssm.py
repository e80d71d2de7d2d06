"""Every combination of the three seed flags of Uncertain-DeepSSM, through training, prediction and analysis."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from deepssm_nb import cli, get_profile
from deepssm_nb.config import save_config
from deepssm_nb.pipeline import ensure
from deepssm_nb.predict import predict_image, read_std, write_std
from deepssm_nb.uncertainty_analysis import COVERAGE_RADIUS, analyze_uncertainty, ood_check

FLAGS = list(itertools.product((True, False), repeat=3))  # encoder.deterministic, decoder.linear, supervised_latent


def _cfg(root, data_dir, deterministic, linear, supervised):
    cfg = get_profile('smoke', work_dir=str(root))
    cfg.data.data_dir = str(data_dir)
    cfg.groom.processes = cfg.augment.processes = 1
    cfg.deepssm.trainer.epochs = 1
    cfg.deepssm.fine_tune.enabled = False
    cfg.deepssm.uncertainty.epochs = 1
    cfg.deepssm.uncertainty.burn_in_epochs = 0  # the likelihood from the first (only) epoch
    cfg.deepssm.encoder.deterministic = deterministic
    cfg.deepssm.decoder.linear = linear
    cfg.deepssm.loss.supervised_latent = supervised
    cfg.deepssm.model_name = f'flags_{int(deterministic)}{int(linear)}{int(supervised)}'
    return cfg.validate()


@pytest.fixture(scope='module')
def shared(smoke_cohort, tmp_path_factory):
    root = tmp_path_factory.mktemp('flags') / 'work'
    ensure(_cfg(root, smoke_cohort.root.parent, True, True, True), 'loaders', verbose=False)
    return root, smoke_cohort.root.parent


@pytest.mark.parametrize(('deterministic', 'linear', 'supervised'), FLAGS)
def test_every_flag_combination_trains_predicts_and_is_analysed(shared, deterministic, linear, supervised):
    root, data_dir = shared
    cfg = _cfg(root, data_dir, deterministic, linear, supervised)
    result = ensure(cfg, 'analyze', verbose=False)
    paths = cfg.resolved_paths()
    model_dir = paths['model_dir']
    stages = [r.split(',')[0] for r in (model_dir / 'train_log.csv').read_text().splitlines()[1:]]
    assert stages == ['base'] + ([] if deterministic else ['uncertainty'])
    payload = torch.load(
        model_dir / ('final_model_unc.torch' if not deterministic else 'best_model.torch'), weights_only=True
    )
    assert payload['model_kwargs'].get('stochastic', False) is (not deterministic)
    assert payload['model_kwargs'].get('nonlinear_decoder', False) is (not linear)
    # the default decoder stays the frozen PCA decoder; a free one (non-linear, or an unsupervised latent) learns
    from deepssm_nb.pca import ShapePCA

    pca = ShapePCA.load(paths['aug_dir'] / 'PCA_Particle_Info')
    pca_weight = torch.as_tensor(pca.components_.reshape(pca.components_.shape[0], -1).T, dtype=torch.float32)
    weight = torch.load(model_dir / 'best_model.torch', weights_only=True)['state_dict']['decoder.linear.weight']
    frozen = torch.allclose(weight, pca_weight, atol=1e-6)
    assert frozen is (linear and supervised)
    assert np.isfinite(result.summary['mean_surface_distance_mm'])
    assert 0 < result.summary['mean_surface_distance_mm'] < 10
    stds = sorted((paths['pred_dir'] / 'local_predictions').glob('*.std'))
    if deterministic:
        assert not stds and paths['pred_dir'].name == 'test_predictions'
        return
    assert paths['pred_dir'].name == 'test_predictions_uncertain' and len(stds) == 2
    info = json.loads((paths['pred_dir'] / 'predictions.json').read_text())['uncertainty']
    assert info['mc_passes'] == cfg.deepssm.uncertainty.mc_passes and info['threshold_mm'] > 0
    assert info['feature_threshold'] > 0 and (model_dir / 'feature_distance.npz').is_file()
    for sid, entry in info['subjects'].items():
        v = read_std(paths['pred_dir'] / 'world_predictions' / f'{sid}.std', num_particles=128)
        assert np.all(v['epistemic_mm'] > 0) and np.all(v['aleatoric_mm'] > 0)
        np.testing.assert_allclose(v['total_mm'] ** 2, v['aleatoric_mm'] ** 2 + v['epistemic_mm'] ** 2, rtol=1e-4)
        assert entry['mean_total_mm'] == pytest.approx(float(v['total_mm'].mean()), rel=1e-4)
        by_unc = entry['mean_total_mm'] > info['threshold_mm']
        by_fd = entry['feature_distance'] > info['feature_threshold']
        assert entry['uncertain'] is (by_unc or by_fd)
        assert entry['uncertain_by'] == ['uncertainty'] * by_unc + ['feature_distance'] * by_fd
    ua = analyze_uncertainty(cfg)
    s = ua.summary()
    assert ua.error_mm.shape == (2, 128) and 0 <= s['coverage_95'] <= 1
    assert s['coverage_95'] == pytest.approx(float(np.mean(ua.error_mm <= COVERAGE_RADIUS * ua.std['total_mm'])))
    assert -1 <= s['pearson_r_particle'] <= 1


def test_prediction_of_one_image_and_the_cli_report_the_uncertainty(shared, smoke_cohort, tmp_path, capsys):
    root, data_dir = shared
    cfg = _cfg(root, data_dir, False, True, True)
    ensure(cfg, 'predict', verbose=False)
    image = smoke_cohort[smoke_cohort.ids('test')[0]].image
    local, info = predict_image(image, cfg, out_dir=tmp_path / 'new', return_uncertainty=True)
    assert local.shape == (128, 3) and info['std'].is_file() and info['threshold_mm'] > 0
    assert info['feature_threshold'] > 0 and info['feature_distance'] > 0
    assert info['uncertain'] is (
        info['mean_total_mm'] > info['threshold_mm'] or info['feature_distance'] > info['feature_threshold']
    )
    # the test image was predicted in the test run too: the same feature distance
    sid = smoke_cohort.ids('test')[0]
    record = json.loads((cfg.resolved_paths()['pred_dir'] / 'predictions.json').read_text())['uncertainty']
    assert info['feature_distance'] == pytest.approx(record['subjects'][sid]['feature_distance'], rel=0.05)
    assert read_std(info['std'], num_particles=128)['total_mm'].shape == (128,)
    out = capsys.readouterr().out
    assert 'mean uncertainty' in out and 'feature distance' in out
    # the same config from a file, through the command line
    path = save_config(cfg, tmp_path / 'config.json')
    assert cli.main(['predict', str(image), '--config', str(path), '--out-dir', str(tmp_path / 'cli')]) == 0
    assert 'uncertain: ' in capsys.readouterr().out
    stem = image.name.split('.')[0]
    np.testing.assert_allclose(
        read_std(tmp_path / 'cli' / f'{stem}.std')['total_mm'], read_std(info['std'])['total_mm'], rtol=1e-5
    )


def test_the_uncertainty_rises_on_corrupted_images(shared):
    root, data_dir = shared
    cfg = _cfg(root, data_dir, False, True, True)
    ensure(cfg, 'predict', verbose=False)
    out = ood_check(cfg)
    assert set(out['mean_total_mm']) == {'clean', 'noise', 'blur', 'shift', 'invert', 'no_femur'}
    assert all(len(v) == 2 and all(x > 0 for x in v) for v in out['mean_total_mm'].values())
    assert 0 <= out['ood_auroc'] <= 1 and set(out['flagged']) == set(out['mean_total_mm'])
    assert set(out['feature_distance']) == set(out['mean_total_mm']) and 0 <= out['ood_auroc_feature_distance'] <= 1
    # an inverted image lies far outside the training features, even after one smoke epoch
    assert min(out['feature_distance']['invert']) > max(out['feature_distance']['clean'])
    assert out['flagged']['invert'] == 1.0
    again = ood_check(cfg)
    assert again['mean_total_mm'] == out['mean_total_mm'] and again['feature_distance'] == out['feature_distance']


def test_std_files_round_trip_and_bad_ones_are_named(tmp_path):
    a, e = np.linspace(0.1, 1, 5), np.full(5, 0.2)
    path = write_std(tmp_path / 'x.std', a, e, np.sqrt(a**2 + e**2))
    assert path.read_text().splitlines()[0] == '# aleatoric_mm epistemic_mm total_mm'
    np.testing.assert_allclose(read_std(path, num_particles=5)['aleatoric_mm'], a, rtol=1e-5)
    from deepssm_nb._validation import DataError

    with pytest.raises(DataError, match=r'x\.std" has 5 rows; expected 6'):
        read_std(path, num_particles=6)
    with pytest.raises(DataError, match='finite and >= 0'):
        write_std(tmp_path / 'y.std', -a, e, a)
    with pytest.raises(FileNotFoundError, match=r'z\.std'):
        read_std(tmp_path / 'z.std')


@pytest.mark.parametrize('supervised', [True, False])
def test_the_uncertainty_stage_starts_at_the_residual_variance(supervised):
    from deepssm_nb.models import DeepSSMNet, init_pca_decoder
    from deepssm_nb.train import init_log_variance

    torch.manual_seed(0)
    m, lat = 6, 2
    net = DeepSSMNet((1, 8, 8, 8), num_latent=lat, num_correspondences=m, channels=(2, 2, 2, 2, 2), stochastic=True)
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3 * m, lat)))
    init_pca_decoder(net, np.zeros((m, 3)), q.T.reshape(lat, m, 3), np.zeros(lat), np.ones(lat))
    net.eval()
    images = torch.randn(4, 1, 8, 8, 8)
    with torch.no_grad():
        mean = net.encode(images)[0]
    offset = torch.tensor([[0.5, 2.0], [-0.5, -2.0]]).repeat(2, 1)  # residuals of 0.5 and 2 whitened units
    scores = mean + offset
    with torch.no_grad():
        particles = net.decoder(scores)
    loader = [{'image': images[:2], 'scores': scores[:2], 'particles': particles[:2]}] * 3
    log_var = init_log_variance(net, loader, torch.device('cpu'), supervised_latent=supervised, batches=2)
    if supervised:
        expected = torch.log(torch.tensor([0.25, 4.0]))
    else:  # orthonormal components with unit spread: one value, the mean squared residual per score
        expected = torch.log(torch.tensor([(0.25 + 4.0) / 2] * 2))
    assert torch.allclose(log_var, expected, atol=1e-4)
    assert torch.allclose(net.encoder.log_var_head.bias, expected, atol=1e-4)
    assert torch.equal(net.encoder.log_var_head.weight, torch.zeros_like(net.encoder.log_var_head.weight))
    assert not any(mod.training for mod in net.modules())  # modes restored
