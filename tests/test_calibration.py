"""Validation calibration: per-mode shrinkage factors, folding them into the network, the file beside the model."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from deepssm_nb import DataError
from deepssm_nb.calibration import (
    apply_calibration,
    calibrate_model,
    calibration_record,
    fit_calibration,
    load_calibration,
)
from deepssm_nb.model_files import load_model_file
from deepssm_nb.models import DeepSSMNet, TLDeepSSMNet, init_pca_decoder

pytestmark = pytest.mark.usefixtures('one_torch_thread')

SHAPE, M, L = (12, 12, 12), 20, 4
CH = (2, 2, 4, 4, 4)


def _net(seed: int = 0) -> DeepSSMNet:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3 * M, L)))
    net = DeepSSMNet((1, *SHAPE), L, M, channels=CH)
    init_pca_decoder(
        net, rng.normal(size=(M, 3)) * 10, q.T.reshape(L, M, 3), np.zeros(L), np.array([4.0, 3.0, 2.0, 1.0])
    )
    return net.eval()


def _loader(net: DeepSSMNet, true_from_pred, n: int = 24, seed: int = 1):
    """Batches whose true scores are ``true_from_pred(predicted scores)``; particles decoded from the true scores."""
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.normal(size=(n, 1, *SHAPE)).astype(np.float32))
    with torch.no_grad():
        z, _ = net(images)
        y = true_from_pred(z)
        particles = net.decoder(y)
    return [
        {'image': images[i : i + 6], 'scores': y[i : i + 6], 'particles': particles[i : i + 6]} for i in range(0, n, 6)
    ]


def test_factors_are_the_least_squares_shrinkage_per_mode():
    net = _net()
    noise = torch.from_numpy(np.random.default_rng(5).normal(size=(24, L)).astype(np.float32))

    def truth(z):
        # mode 0 overshoots by 2x, mode 1 is exact, mode 2 has the wrong sign, mode 3 is unrelated to the prediction
        return torch.stack([0.5 * z[:, 0], z[:, 1], -z[:, 2], noise[:, 3]], 1)

    loader = _loader(net, truth)
    alpha, report = fit_calibration(net, loader)
    z = torch.cat([net(b['image'])[0] for b in loader]).detach().numpy()
    expected_3 = np.clip((z[:, 3] * noise[:, 3].numpy()).sum() / (z[:, 3] ** 2).sum(), 0, 1)
    assert alpha[:3] == pytest.approx([0.5, 1.0, 0.0], abs=1e-5)
    assert alpha[3] == pytest.approx(expected_3, abs=1e-5)
    assert report['num_samples'] == 24
    assert report['val_rmse_mm_after'] < report['val_rmse_mm_before']


def test_an_exact_network_is_left_unchanged():
    net = _net()
    alpha, report = fit_calibration(net, _loader(net, lambda z: z))
    assert np.allclose(alpha, 1.0, atol=1e-5)
    assert report['val_rmse_mm_before'] < 1e-4 and report['val_rmse_mm_after'] < 1e-4


def test_applied_factors_scale_the_scores_and_zero_gives_the_mean_shape():
    net = _net()
    x = torch.from_numpy(np.random.default_rng(2).normal(size=(3, 1, *SHAPE)).astype(np.float32))
    with torch.no_grad():
        z0, _ = net(x)
        alpha = np.array([0.25, 1.0, 0.5, 0.0])
        z1, _ = apply_calibration(net, alpha)(x)
        assert torch.allclose(z1, z0 * torch.tensor(alpha, dtype=torch.float32), atol=1e-6)
        apply_calibration(net, np.zeros(L))
        _, p_mean = net(x)
        assert torch.allclose(p_mean, net.decoder(torch.zeros(1, L)).expand(3, -1, -1), atol=1e-5)


def test_file_beside_the_model_follows_the_model_file(tmp_path):
    net = _net()
    loader = _loader(net, lambda z: 0.5 * z)
    best, final = tmp_path / 'best_model.torch', tmp_path / 'final_model.torch'
    for path in (best, final):
        torch.save({'kind': 'base', 'model_kwargs': net.model_kwargs, 'state_dict': net.state_dict()}, path)
    assert load_calibration(best) is None
    rec = calibrate_model(net, best, loader)
    assert np.allclose(rec['alpha'], 0.5, atol=1e-5)
    assert np.allclose(load_calibration(best), rec['alpha']) and load_calibration(final) is None
    calibrate_model(net, final, _loader(net, lambda z: z))
    assert np.allclose(load_calibration(best), 0.5, atol=1e-5) and np.allclose(load_calibration(final), 1.0, atol=1e-5)
    # loading applies it only when asked
    x = loader[0]['image']
    plain, calibrated = load_model_file(best), load_model_file(best, calibrated=True)
    assert plain.model_info['calibration'] is None and np.allclose(calibrated.model_info['calibration'], 0.5, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(calibrated(x)[0], 0.5 * plain(x)[0], atol=1e-5)
    # a model file written again (new training) makes its calibration stale
    os.utime(best, ns=(best.stat().st_atime_ns, best.stat().st_mtime_ns + 10**9))
    assert load_calibration(best) is None and calibration_record(final) is not None
    assert load_model_file(best, calibrated=True).model_info['calibration'] is None


@pytest.mark.bad_input
def test_bad_calibration_inputs():
    net = _net()
    with pytest.raises(DataError, match=r'alpha must lie in \[0, 1\]'):
        apply_calibration(net, np.array([0.5, 1.5, 0.0, 0.2]))
    with pytest.raises(DataError, match='alpha'):
        apply_calibration(net, np.ones(L + 1))
    with pytest.raises(DataError, match='loader is empty'):
        fit_calibration(net, [])
    with pytest.raises(TypeError, match='Base-DeepSSM'):
        fit_calibration(TLDeepSSMNet((1, *SHAPE), L, M, channels=CH), _loader(net, lambda z: z))


def test_calibration_plot_has_one_bar_per_mode():
    from deepssm_nb.viz.training import plot_calibration

    fig = plot_calibration({'alpha': [1.0, 0.4, 0.0], 'val_rmse_mm_before': 3.1, 'val_rmse_mm_after': 2.8})
    ax = fig.axes[0]
    assert [round(p.get_height(), 3) for p in ax.patches] == [1.0, 0.4, 0.0]
    assert '3.10 -> 2.80 mm' in ax.get_title()


def test_key_figures_report_the_calibrated_validation_error(tmp_path):
    import json

    from deepssm_nb import get_profile
    from deepssm_nb.pipeline import key_figures

    cfg = get_profile('smoke', work_dir=str(tmp_path))
    paths = cfg.resolved_paths()
    paths['pred_dir'].mkdir(parents=True)
    (paths['model_dir'] / 'train_log.csv').write_text('stage,epoch,val_rmse_mm\nbase,1,3.5\nbase,2,3.25\n')
    (paths['model_dir'] / 'calibration.json').write_text(
        json.dumps({'best_model_ft.torch': {'alpha': [0.5], 'val_rmse_mm_before': 3.25, 'val_rmse_mm_after': 2.9}})
    )
    model = str(paths['model_dir'] / 'best_model_ft.torch')
    (paths['pred_dir'] / 'predictions.json').write_text(json.dumps({'model': model, 'calibration': [0.5]}))
    assert key_figures(cfg) == {'best_val_rmse_mm': 3.25, 'calibrated_val_rmse_mm': 2.9}
    (paths['pred_dir'] / 'predictions.json').write_text(json.dumps({'model': model, 'calibration': None}))
    assert 'calibrated_val_rmse_mm' not in key_figures(cfg)
