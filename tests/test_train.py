"""Training: overfitting, resume, schedules, early stopping, logs, TL phases, fine tuning, Config wiring."""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
import types

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deepssm_nb import ConfigError, DataError, NotFittedError, get_profile
from deepssm_nb import train as train_mod
from deepssm_nb.checkpoints import LOG_COLUMNS, read_train_log
from deepssm_nb.config import DecayLRConfig, FineTuneConfig, TLNetConfig, TrainerConfig
from deepssm_nb.model_files import load_trained_model, parameter_changes
from deepssm_nb.models import DeepSSMNet, TLDeepSSMNet, init_pca_decoder
from deepssm_nb.train import fine_tune, fit, fit_tl, train_deepssm
from deepssm_nb.train_loop import StageSpec, make_scheduler, resolve_precision, run_stage
from deepssm_nb.viz.training import LivePlot, plot_focal_loss, plot_latent_agreement, plot_training_log

pytestmark = pytest.mark.usefixtures('one_torch_thread')

SHAPE, M, L, CH = (10, 12, 14), 24, 3, (4, 4, 8, 8, 8)


class ToyData(Dataset):
    """Smooth volumes whose blobs' amplitudes are the PCA scores; particles from the same scores."""

    def __init__(self, n: int, seed: int = 0, noise: float = 0.0):
        rng = np.random.default_rng(seed)
        pca_rng = np.random.default_rng(123)  # the same shape model for every split
        q, _ = np.linalg.qr(pca_rng.normal(size=(3 * M, L)))
        self.mean = pca_rng.normal(size=(M, 3)) * 20 + 50
        self.components = q.T.reshape(L, M, 3)
        self.std = np.array([6.0, 3.0, 1.5])
        centers = pca_rng.uniform(-0.6, 0.6, size=(L, 3))
        self.scores = rng.normal(size=(n, L)) * self.std
        grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing='ij'), -1)
        blobs = np.stack([np.exp(-np.sum((grid - c) ** 2, -1) / 0.15) for c in centers])
        self.images = np.einsum('nk,kdhw->ndhw', self.scores / self.std, blobs).astype(np.float32)
        self.particles = (self.mean + np.einsum('nk,kmc->nmc', self.scores, self.components)).astype(np.float32)
        self.noise = noise

    def __len__(self):
        return len(self.scores)

    def __getitem__(self, i):
        image = self.images[i][None]
        if self.noise:  # uses numpy's global generator, so resuming must restore it
            image = image + np.float32(self.noise) * np.random.standard_normal(image.shape).astype(np.float32)
        return {
            'image': torch.from_numpy(image),
            'scores': torch.from_numpy((self.scores[i] / self.std).astype(np.float32)),
            'particles': torch.from_numpy(self.particles[i]),
            'name': f's{i}',
        }


def _loaders(n_train=12, n_val=4, batch_size=4, noise=0.0):
    train = DataLoader(
        ToyData(n_train, 0, noise), batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(7)
    )
    val = DataLoader(ToyData(n_val, 1), batch_size=batch_size)
    return train, val


def _net(kind='base', dropout=0.0, seed=0):
    torch.manual_seed(seed)
    data = ToyData(1)
    cls = DeepSSMNet if kind == 'base' else TLDeepSSMNet
    net = cls((1, *SHAPE), L, M, channels=CH, dropout=dropout)
    return init_pca_decoder(net, data.mean, data.components, np.zeros(L), data.std)


def _tc(**kw):
    kw = {'epochs': 2, 'learning_rate': 3e-3, 'device': 'cpu', 'precision': 'fp32', **kw}
    return TrainerConfig(**kw)


def test_overfits_a_few_samples(tmp_path):
    train = DataLoader(ToyData(4, 0), batch_size=4)
    res = fit(
        _net(),
        train,
        train,
        trainer_cfg=_tc(epochs=100, learning_rate=1e-2, val_freq=100),
        model_dir=tmp_path,
        progress=False,
    )
    first, last = res.history[0], res.history[-1]
    assert first['train_rmse_mm'] > 1.0
    assert last['train_rmse_mm'] < 0.03 * first['train_rmse_mm']
    assert res.final_val_rmse_mm < 0.05 * first['val_rmse_mm']


@pytest.mark.parametrize('precision', ['fp32', 'auto'])
def test_resume_gives_identical_weights(tmp_path, precision):
    tc = _tc(epochs=2, precision=precision, decay_lr=DecayLRConfig(enabled=True, type='CosineAnnealing'))
    full = fit(_net(dropout=0.2), *_loaders(noise=0.1), trainer_cfg=tc, model_dir=tmp_path / 'a', progress=False)

    def interrupt(row):
        if row['epoch'] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(
            _net(dropout=0.2),
            *_loaders(noise=0.1),
            trainer_cfg=tc,
            model_dir=tmp_path / 'b',
            callback=interrupt,
            progress=False,
        )
    np.random.seed(999)  # global state changed in between must not matter
    torch.manual_seed(999)
    resumed = fit(
        _net(dropout=0.2, seed=5), *_loaders(noise=0.1), trainer_cfg=tc, model_dir=tmp_path / 'b', progress=False
    )
    a = torch.load(tmp_path / 'a' / 'final_model.torch', weights_only=True)['state_dict']
    b = torch.load(tmp_path / 'b' / 'final_model.torch', weights_only=True)['state_dict']
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r['train_rmse_mm'] for r in full.history] == [r['train_rmse_mm'] for r in resumed.history]
    # a finished run returns at once, without training
    calls = []
    t0 = time.perf_counter()
    again = fit(
        _net(dropout=0.2), *_loaders(), trainer_cfg=tc, model_dir=tmp_path / 'b', callback=calls.append, progress=False
    )
    assert calls == [] and time.perf_counter() - t0 < 2.0 and again.history == resumed.history


def test_log_and_model_files(tmp_path):
    res = fit(_net(), *_loaders(), trainer_cfg=_tc(epochs=3, val_freq=2), model_dir=tmp_path, progress=False)
    text = (tmp_path / 'train_log.csv').read_text().splitlines()
    assert text[0] == ','.join(LOG_COLUMNS) and 'train_rmse_mm' in text[0] and 'val_rmse_mm' in text[0]
    rows = read_train_log(tmp_path)
    assert [r['epoch'] for r in rows] == [1, 2, 3] and all(r['stage'] == 'base' for r in rows)
    assert not math.isnan(rows[0]['val_rmse_mm']) and not math.isnan(rows[1]['val_rmse_mm'])
    assert not math.isnan(rows[2]['val_rmse_mm'])  # the last epoch is always validated
    best = torch.load(tmp_path / 'best_model.torch', weights_only=True)
    assert best['kind'] == 'base' and best['epoch'] == res.best_epoch
    assert best['val_rmse_mm'] == pytest.approx(min(r['val_rmse_mm'] for r in rows))
    assert set(best) >= {'state_dict', 'kind', 'model_kwargs', 'normalization', 'epoch', 'val_rmse_mm'}
    final = load_trained_model(tmp_path, use_best=False)
    assert final.model_info['epoch'] == 3
    fig = plot_training_log(tmp_path)
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == 'learning rate'


def test_base_keeps_the_pca_decoder_and_fine_tuning_frees_it(tmp_path):
    net = _net()
    pca_weight = net.decoder.linear.weight.clone()
    train, val = _loaders()
    fit(net, train, val, trainer_cfg=_tc(epochs=1), model_dir=tmp_path, progress=False)
    assert torch.equal(net.decoder.linear.weight, pca_weight)
    ft = fine_tune(
        net,
        train,
        val,
        trainer_cfg=_tc(),
        model_dir=tmp_path,
        progress=False,
        fine_tune_cfg=FineTuneConfig(enabled=True, epochs=1, learning_rate=1e-3),
    )
    assert not torch.equal(net.decoder.linear.weight, pca_weight)
    assert ft.best_path.name == 'best_model_ft.torch' and ft.final_path.is_file()
    assert [r['stage'] for r in read_train_log(tmp_path)] == ['base', 'fine_tune']
    assert load_trained_model(tmp_path).model_info['stage'] == 'fine_tune'


def test_tl_three_phases(tmp_path):
    net = _net('tl')
    res = fit_tl(
        net,
        *_loaders(),
        trainer_cfg=_tc(),
        model_dir=tmp_path,
        loss='Focal',
        progress=False,
        tl_cfg=TLNetConfig(enabled=True, ae_epochs=2, tf_epochs=1, joint_epochs=1, alpha=0.5),
    )
    assert list(res) == ['tl_ae', 'tl_tf', 'tl_joint']
    ae = torch.load(tmp_path / 'final_model_ae.torch', weights_only=True)['state_dict']
    tf = torch.load(tmp_path / 'final_model_tf.torch', weights_only=True)['state_dict']
    joint = torch.load(tmp_path / 'final_model.torch', weights_only=True)['state_dict']
    ae_keys = [k for k in ae if k.startswith('ae_')]
    img_keys = [k for k in ae if k.startswith('image_encoder') and ae[k].ndim >= 2]  # conv and linear weights
    assert all(torch.equal(ae[k], tf[k]) for k in ae_keys)  # autoencoder frozen in the T-flank phase
    assert not any(torch.equal(ae[k], tf[k]) for k in img_keys)  # image encoder trained
    assert not all(torch.equal(tf[k], joint[k]) for k in ae_keys)  # joint phase trains the autoencoder
    changes = parameter_changes(tmp_path / 'final_model_ae.torch', tmp_path / 'final_model_tf.torch')
    assert changes['ae_encoder'] == changes['ae_decoder'] == 0.0 and changes['image_encoder'] > 0
    fig = plot_latent_agreement(net, _loaders()[1], max_dims=2)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines[1].get_xdata()) == 4
    assert [r['stage'] for r in read_train_log(tmp_path)] == ['tl_ae'] * 2 + ['tl_tf', 'tl_joint']
    loaded = load_trained_model(tmp_path)
    with torch.no_grad():
        _, p = loaded(torch.zeros(2, 1, *SHAPE))
    assert isinstance(loaded, TLDeepSSMNet) and p.shape == (2, M, 3)


def test_cosine_reaches_eta_min_and_never_restarts():
    for t_max in (0, 3):  # 0: the whole run
        opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=0.1)
        sched = make_scheduler(opt, DecayLRConfig(parameters={'T_max': t_max, 'eta_min': 0.01}), epochs=6)
        lrs = []
        for _ in range(10):
            lrs.append(opt.param_groups[0]['lr'])
            opt.step()
            sched.step()
        lrs.append(opt.param_groups[0]['lr'])
        reach = t_max or 6
        assert lrs[0] == pytest.approx(0.1) and lrs[reach] == pytest.approx(0.01)
        assert all(b <= a + 1e-12 for a, b in itertools.pairwise(lrs))
        assert all(lr == pytest.approx(0.01) for lr in lrs[reach:])


def test_step_and_constant_schedules():
    opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt, DecayLRConfig(type='Step', parameters={'step_size': 2, 'gamma': 0.5}), epochs=9)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]['lr'])
        opt.step()
        sched.step()
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.25]
    opt2 = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=0.3)
    const = make_scheduler(opt2, DecayLRConfig(enabled=False), epochs=5)
    opt2.step()
    const.step()
    assert opt2.param_groups[0]['lr'] == pytest.approx(0.3)


class _Scripted(nn.Module):
    """A stand-in network whose validation error follows a script (for early stopping)."""

    kind = 'base'

    def __init__(self, val_errors):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.model_kwargs = {}
        self.val_errors, self.val_calls, self.grad_in_val = list(val_errors), 0, []

    def step(self, net, b):
        target = b.particles
        if self.training:
            return (self.w**2).sum(), target, target
        self.grad_in_val.append(torch.is_grad_enabled())
        err = self.val_errors[min(self.val_calls, len(self.val_errors) - 1)]
        self.val_calls += 1
        return self.w.sum(), target + err / math.sqrt(3), target


def test_early_stopping_stops(tmp_path):
    net = _Scripted([2.0, 1.0, 1.5, 1.2, 0.5, 0.1])
    spec = StageSpec('base', '', epochs=20, learning_rate=0.1, step=net.step, trainable=lambda n: [n], early_stopping=2)
    val = DataLoader(ToyData(2, 1), batch_size=2)
    res = run_stage(
        net,
        val,
        val,
        spec,
        model_dir=tmp_path,
        device=torch.device('cpu'),
        precision=resolve_precision('fp32', torch.device('cpu')),
        progress=False,
    )
    assert res.stopped_early and len(res.history) == 4
    assert res.best_epoch == 2 and res.best_val_rmse_mm == pytest.approx(1.0)
    assert net.grad_in_val and not any(net.grad_in_val)  # validation under torch.no_grad()


@pytest.mark.parametrize('script, best_epoch, best_val', [([1.0, 2.0, 1.5], 0, 1.0), ([1.0, 2.0, 0.5], 2, 0.5)])
def test_keep_start_counts_the_incoming_model_as_epoch_0(tmp_path, script, best_epoch, best_val):
    net = _Scripted(script)  # the first validation is the incoming model's
    spec = StageSpec(
        'fine_tune', '_ft', epochs=2, learning_rate=0.1, step=net.step, trainable=lambda n: [n], keep_start=True
    )
    val = DataLoader(ToyData(2, 1), batch_size=2)
    res = run_stage(
        net,
        val,
        val,
        spec,
        model_dir=tmp_path,
        device=torch.device('cpu'),
        precision=resolve_precision('fp32', torch.device('cpu')),
        progress=False,
    )
    assert net.val_calls == 3 and len(res.history) == 2  # the start is validated but not logged as an epoch
    assert res.best_epoch == best_epoch and res.best_val_rmse_mm == pytest.approx(best_val, rel=1e-5)
    best = torch.load(tmp_path / 'best_model_ft.torch', weights_only=True)
    assert best['epoch'] == best_epoch and best['val_rmse_mm'] == pytest.approx(best_val, rel=1e-5)


def test_fine_tuning_never_selects_a_model_worse_than_its_start(tmp_path):
    net = _net()
    train, val = _loaders()
    base = fit(net, train, val, trainer_cfg=_tc(epochs=2), model_dir=tmp_path, progress=False)
    net.load_state_dict(torch.load(base.best_path, weights_only=True)['state_dict'])
    ft = fine_tune(
        net,
        train,
        val,
        trainer_cfg=_tc(),
        model_dir=tmp_path,
        progress=False,  # a rate that diverges
        fine_tune_cfg=FineTuneConfig(enabled=True, epochs=2, learning_rate=1.0, decay_lr=False),
    )
    assert ft.final_val_rmse_mm > base.best_val_rmse_mm
    assert ft.best_epoch == 0 and ft.best_val_rmse_mm == pytest.approx(base.best_val_rmse_mm, rel=1e-4)
    chosen = load_trained_model(tmp_path)
    assert chosen.model_info['stage'] == 'fine_tune' and chosen.model_info['epoch'] == 0


def test_live_plot_collects_rows_headless(tmp_path):
    live = LivePlot()
    fit(_net(), *_loaders(), trainer_cfg=_tc(epochs=2), model_dir=tmp_path, callback=live, progress=False)
    assert [r['epoch'] for r in live.rows] == [1, 2] and live.rows[-1]['epochs'] == 2
    fig = live.figure()
    assert len(fig.axes[0].lines) >= 2


def test_focal_loss_plot():
    fig = plot_focal_loss(a=2.0, c=5.0)
    focal = fig.axes[0].lines[1].get_ydata()
    assert len(fig.axes) == 2 and focal[-1] == pytest.approx(12.5**2, rel=1e-3)


def test_precision_rules():
    cpu = torch.device('cpu')
    assert resolve_precision('fp32', cpu).autocast_dtype is None
    assert resolve_precision('bf16', cpu).autocast_dtype == torch.bfloat16
    assert resolve_precision('auto', cpu).name in ('bf16', 'fp32')


def test_precision_environment_variable_overrides_auto_only(monkeypatch):
    cpu = torch.device('cpu')
    monkeypatch.setenv('DEEPSSM_PRECISION', 'FP32')
    assert resolve_precision('auto', cpu).name == 'fp32'
    monkeypatch.setenv('DEEPSSM_PRECISION', 'bf16')
    assert resolve_precision('auto', cpu).autocast_dtype == torch.bfloat16
    assert resolve_precision('fp32', cpu).name == 'fp32'  # an explicit choice wins
    monkeypatch.setenv('DEEPSSM_PRECISION', 'half')
    with pytest.raises(ConfigError, match=r"DEEPSSM_PRECISION: expected 'fp32', 'bf16' or 'fp16'; got 'half'"):
        resolve_precision('auto', cpu)


def test_train_deepssm_wiring(tmp_path, monkeypatch):
    data = ToyData(1)
    pca = types.SimpleNamespace(mean_=data.mean, components_=data.components)
    norm = {'score_mean': [0.0] * L, 'score_std': data.std.tolist(), 'image_shape': list(SHAPE)}
    calls = []

    def fake_inputs(cfg, paths, loaders=None):
        calls.append(loaders)
        return (*_loaders(), norm, pca)

    monkeypatch.setattr(train_mod, '_load_inputs', fake_inputs)
    cfg = get_profile('smoke', work_dir=str(tmp_path))
    cfg.deepssm.encoder.channels = list(CH)
    cfg.deepssm.trainer = dataclasses.replace(cfg.deepssm.trainer, epochs=2, device='cpu')
    res = train_deepssm(cfg, progress=False)
    assert list(res.stages) == ['base', 'fine_tune'] and res.model_path.name == 'best_model_ft.torch'
    assert 'best val mm' in res.summary() and len(res.history) == 3
    # the model prediction uses is calibrated on the validation split, once
    assert len(res.calibration['alpha']) == L and 'calibration: validation RMSE' in res.summary()
    assert res.calibration['val_rmse_mm_after'] <= res.calibration['val_rmse_mm_before'] + 1e-6
    assert list((res.model_dir / 'calibration.json').read_text().split('"')[1:2]) == ['best_model_ft.torch']
    assert load_trained_model(res.model_dir).normalization['score_std'] == data.std.tolist()
    again = train_deepssm(cfg, progress=False)  # finished and calibrated: no data is loaded
    assert calls == [None] and again.history == res.history and again.calibration == res.calibration
    cfg.deepssm.calibrate = False
    assert train_deepssm(cfg, progress=False).calibration is None
    cfg.deepssm.calibrate = True
    cfg.deepssm.fine_tune.enabled = False
    handed = types.SimpleNamespace(train=None, val=None, normalization=norm)
    fresh = train_deepssm(cfg, handed, progress=False, restart=True)  # earlier files are removed, none goes stale
    assert calls[-1] is handed  # the loaders the pipeline hands on are the ones trained on
    assert list(fresh.stages) == ['base'] and not list(res.model_dir.glob('*_ft.*')) and len(fresh.history) == 2
    assert 'best_model_ft.torch' not in (res.model_dir / 'calibration.json').read_text()
    assert load_trained_model(res.model_dir).model_info['stage'] == 'base'
    cfg.deepssm.num_latent_dim = L + 1
    with pytest.raises(ConfigError, match='num_latent_dim'):
        train_deepssm(cfg, progress=False, restart=True)


def test_input_margin_masks_and_crops_the_encoder_input(tmp_path, monkeypatch):
    data = ToyData(1)
    pca = types.SimpleNamespace(mean_=data.mean, components_=data.components)
    grid = {'spacing': [10.0] * 3, 'origin': [0.0] * 3, 'direction': [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]}
    norm = {'score_mean': [0.0] * L, 'score_std': data.std.tolist(), 'image_shape': list(SHAPE), 'grid': grid}
    monkeypatch.setattr(train_mod, '_load_inputs', lambda cfg, paths, loaders=None: (*_loaders(), norm, pca))
    cfg = get_profile('smoke', work_dir=str(tmp_path))
    cfg.deepssm.encoder.channels = list(CH)
    cfg.deepssm.trainer = dataclasses.replace(cfg.deepssm.trainer, epochs=1, device='cpu')
    cfg.deepssm.fine_tune.enabled = False
    cfg.deepssm.encoder.input_margin_mm = 12.0
    res = train_deepssm(cfg, progress=False)
    net = load_trained_model(res.model_dir)
    mask = train_mod.input_mask(norm, data.mean, 12.0)
    # voxels within 12 mm of a particle (the band is widened to the particles' spacing, here about 20 mm)
    zz, yy, xx = np.nonzero(mask)
    centres = np.stack([xx, yy, zz], axis=1) * 10.0
    nearest = np.min(np.linalg.norm(centres[:, None] - data.mean[None], axis=2), axis=1)
    assert 0 < mask.sum() < mask.size and nearest.max() < 25.0
    box = net.model_kwargs['input_box']
    assert box == [[int(np.min(a)), int(np.max(a)) + 1] for a in (zz, yy, xx)]
    np.testing.assert_array_equal(
        net.encoder.input_mask.mask.numpy(), mask[box[0][0] : box[0][1], box[1][0] : box[1][1], box[2][0] : box[2][1]]
    )
    x = torch.randn(1, 1, *SHAPE)
    y = x.clone()
    y[0, 0][torch.from_numpy(mask == 0)] = 100.0  # what lies outside the mask is never read
    with torch.no_grad():
        torch.testing.assert_close(net(x)[1], net(y)[1])
        y[0, 0][torch.from_numpy(mask == 1)] += 1.0
        assert not torch.allclose(net(x)[1], net(y)[1])
    cfg.deepssm.encoder.input_margin_mm = 0.0  # another encoder is another run, not the finished one
    with pytest.raises(ConfigError, match="input_margin_mm': 12.0} -> .*input_margin_mm': 0.0}"):
        train_deepssm(cfg, progress=False)
    res = train_deepssm(cfg, progress=False, restart=True)
    assert 'input_box' not in load_trained_model(res.model_dir).model_kwargs


def test_input_mask_bad_settings():
    from deepssm_nb.models import InputMask, input_box, set_input_mask

    with pytest.raises(ValueError, match='at least one nonzero'):
        input_box(np.zeros((4, 4, 4)))
    with pytest.raises(ValueError, match=r'0 <= start < stop <= size for an input of size \(10, 12, 14\)'):
        InputMask((1, *SHAPE), [[0, 11], [0, 12], [0, 14]])
    with pytest.raises(ValueError, match='built without input_box'):
        set_input_mask(_net(), np.ones(SHAPE))
    net = DeepSSMNet((1, *SHAPE), L, M, channels=CH, input_box=[[2, 6], [0, 12], [0, 14]])
    with pytest.raises(ValueError, match=r'input shape \(10, 12, 14\)'):
        set_input_mask(net, np.ones((10, 12, 13)))
    with pytest.raises(ValueError, match='outside'):
        set_input_mask(net, np.ones(SHAPE))
    with pytest.raises(DataError, match='loader grid'):
        train_mod.input_mask({'image_shape': list(SHAPE)}, np.zeros((4, 3)), 8.0)


@pytest.mark.bad_input
def test_bad_training_inputs(tmp_path):
    train, val = _loaders()
    with pytest.raises(TypeError, match='fit_tl'):
        fit(_net('tl'), train, val, trainer_cfg=_tc(), model_dir=tmp_path, progress=False)
    with pytest.raises(NotFittedError, match='init_pca_decoder'):
        fit(DeepSSMNet((1, *SHAPE), L, M, channels=CH), train, val, trainer_cfg=_tc(), model_dir=tmp_path)
    with pytest.raises(DataError, match='validation loader'):
        fit(_net(), train, [], trainer_cfg=_tc(epochs=1), model_dir=tmp_path / 'e', progress=False)
    fit(_net(), train, val, trainer_cfg=_tc(epochs=1), model_dir=tmp_path / 'x', progress=False)
    with pytest.raises(ConfigError, match=r'epochs: 1 -> 3.*restart=True'):
        fit(_net(), train, val, trainer_cfg=_tc(epochs=3), model_dir=tmp_path / 'x', progress=False)
    res = fit(_net(), train, val, trainer_cfg=_tc(epochs=3), model_dir=tmp_path / 'x', progress=False, restart=True)
    assert len(res.history) == 3
    bad = ToyData(4)
    bad.images[0, 0, 0, 0] = np.nan
    with pytest.raises(FloatingPointError, match='learning rate'):
        fit(_net(), DataLoader(bad, batch_size=4), val, trainer_cfg=_tc(), model_dir=tmp_path / 'nan', progress=False)


def test_checkpoints_of_earlier_versions_match_at_the_default_encoder():
    from deepssm_nb.checkpoints import fingerprint_diffs
    from deepssm_nb.config import EncoderConfig

    e = EncoderConfig()
    default = {'channels': e.channels, 'dropout': e.dropout, 'input_margin_mm': e.input_margin_mm}
    assert default == {'channels': [12, 24, 48, 96, 192], 'dropout': 0.0, 'input_margin_mm': 0.0}
    old = {'stage': 'base', 'epochs': 15}  # written before the encoder was fingerprinted
    assert fingerprint_diffs(old, {'stage': 'base', 'epochs': 15, 'encoder': default}) == []
    assert fingerprint_diffs(old, {'stage': 'base', 'epochs': 15, 'encoder': {**default, 'dropout': 0.1}}) == [
        f'encoder: {default!r} -> {dict(default, dropout=0.1)!r}'
    ]
    assert fingerprint_diffs(old, {'stage': 'base', 'epochs': 20}) == ['epochs: 15 -> 20']
