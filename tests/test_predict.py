"""Tests of deepssm_nb.predict on a small synthetic pipeline folder (groom output + a tiny saved model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from deepssm_nb import DataError, get_profile, read_particles
from deepssm_nb.calibration import calibrate_model
from deepssm_nb.loaders import get_test_loader
from deepssm_nb.models import DeepSSMNet, init_pca_decoder
from deepssm_nb.predict import predict_image, predict_loader, prediction_errors, test_deepssm

M, L = 12, 2
SHAPE = (20, 18, 16)  # z, y, x of the groomed grid (2 mm)


def _rigid(angle_deg: float, shift) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    T = np.eye(4)
    T[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    T[:3, 3] = shift
    return T


def _blob(size_xyz, spacing, origin, center, radii=(9.0, 7.0, 11.0)) -> sitk.Image:
    """A smooth ellipsoid (intensity 100 inside, 0 outside) at ``center`` (mm)."""
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size_xyz[::-1]], indexing='ij'), -1)[..., ::-1]
    pts = np.asarray(origin) + idx * spacing
    r = np.sqrt((((pts - center) / radii) ** 2).sum(-1))
    img = sitk.GetImageFromArray((100.0 / (1 + np.exp((r - 1) * 8))).astype(np.float32))
    img.SetSpacing([spacing] * 3)
    img.SetOrigin(origin)
    return img


def _tiny_net(mean: np.ndarray, seed: int = 0) -> DeepSSMNet:
    """A DeepSSMNet whose encoder head is zeroed, so it always predicts ``mean`` (M, 3)."""
    torch.manual_seed(seed)
    net = DeepSSMNet((1, *SHAPE), num_latent=L, num_correspondences=M, channels=(2, 2, 2, 2, 2))
    comps = np.linalg.qr(np.random.default_rng(seed).normal(size=(3 * M, L)))[0].T.reshape(L, M, 3)
    init_pca_decoder(net, mean, comps, np.zeros(L), np.ones(L))
    with torch.no_grad():
        net.encoder.head.weight.zero_()
        net.encoder.head.bias.zero_()
    return net.eval()


def _save(net: DeepSSMNet, path: Path, norm: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            'kind': 'base',
            'model_kwargs': net.model_kwargs,
            'state_dict': net.state_dict(),
            'normalization': norm,
            'epoch': 1,
            'val_rmse_mm': 0.0,
            'stage': 'base',
        },
        path,
    )


@pytest.fixture
def run(tmp_path):
    """A pipeline folder: groomed reference + 2 test subjects, normalization, a tiny best model."""
    cfg = get_profile('smoke', work_dir=str(tmp_path / 'work'))
    cfg.deepssm.fine_tune.enabled = False
    paths = cfg.resolved_paths()
    groom = paths['groom_dir']
    rng = np.random.default_rng(0)
    size = SHAPE[::-1]
    ref = _blob(size, 2.0, (0.0, 0.0, 0.0), np.array([16.0, 18.0, 20.0]))
    (groom / 'images').mkdir(parents=True)
    (groom / 'particles').mkdir()
    sitk.WriteImage(ref, str(groom / 'reference_image.nrrd'))
    mean = np.array([16.0, 18.0, 20.0]) + rng.normal(0, 5, (M, 3))
    np.savetxt(groom / 'mean.particles', mean)
    subjects = []
    for i, sid in enumerate(('T1', 'T2')):
        sitk.WriteImage(ref, str(groom / 'images' / f'{sid}.nrrd'))
        np.savetxt(groom / 'particles' / f'{sid}.particles', mean + (i + 1.0))  # true world = mean + offset
        subjects.append(
            {
                'id': sid,
                'split': 'test',
                'image': f'images/{sid}.nrrd',
                'particles': f'particles/{sid}.particles',
                'transform': _rigid(20 * (i + 1), [3, -4, 5]).tolist(),
                'registration_error_mm': 0.5,
            }
        )
    info = {
        'format': 1,
        'reference': 'T1',
        'spacing': 2.0,
        'padding': 4.0,
        'registration_iterations': 60,
        'stages': ['translation'],
        'bbox': [[0, 0, 0], [32, 36, 40]],
        'reference_image': 'reference_image.nrrd',
        'mean_particles': 'mean.particles',
        'subjects': subjects,
    }
    (groom / 'groom.json').write_text(json.dumps(info))
    norm = {
        'image_mean': 20.0,
        'image_std': 30.0,
        'score_mean': [0.0] * L,
        'score_std': [1.0] * L,
        'image_shape': list(SHAPE),
        'down_factor': 1.0,
        'grid': {'spacing': [2.0] * 3, 'origin': [0.0] * 3, 'direction': [1, 0, 0, 0, 1, 0, 0, 0, 1]},
    }
    _save(_tiny_net(mean), paths['model_dir'] / 'best_model.torch', norm)
    return cfg, mean, norm


def test_predict_loader_writes_world_and_local_particles(tmp_path, run):
    cfg, mean, norm = run
    groom = cfg.resolved_paths()['groom_dir']
    T = _rigid(30, [1, 2, 3])
    loader = get_test_loader(tmp_path / 'l', [groom / 'images' / 'T1.nrrd'], normalization=norm)

    class StandIn(torch.nn.Module):  # same call signature as DeepSSMNet
        def forward(self, images):
            particles = torch.as_tensor(mean, dtype=torch.float32)[None].repeat(len(images), 1, 1)
            return torch.zeros(len(images), L), particles

    out = predict_loader(StandIn(), loader, tmp_path / 'pred', transforms={'T1': T}, verbose=False)
    world, local = read_particles(out['T1']['world']), read_particles(out['T1']['local'])
    assert world.shape == local.shape == (M, 3)
    np.testing.assert_allclose(world, mean, atol=1e-4)
    back = np.c_[local, np.ones(M)] @ T.T  # p_world = T @ [p_local, 1]
    np.testing.assert_allclose(back[:, :3], world, atol=1e-4)
    assert out['T1']['seconds'] > 0


def test_test_deepssm_writes_one_file_per_test_image_and_reuses_them(run, capsys):
    cfg, mean, _ = run
    pred_dir = cfg.resolved_paths()['pred_dir']
    predictions = test_deepssm(cfg)
    local = predictions.local
    assert predictions.ids == ['T1', 'T2'] and predictions.folder == pred_dir
    assert [p.name for p in local] == ['T1.particles', 'T2.particles']
    assert predictions.world == [pred_dir / 'world_predictions' / f'{sid}.particles' for sid in ('T1', 'T2')]
    assert 's per image' in capsys.readouterr().out
    for i, sid in enumerate(('T1', 'T2')):
        world = read_particles(pred_dir / 'world_predictions' / f'{sid}.particles', num_particles=M)
        np.testing.assert_allclose(world, mean, atol=1e-3)
        T = _rigid(20 * (i + 1), [3, -4, 5])
        loc = read_particles(local[i], num_particles=M)
        np.testing.assert_allclose((np.c_[loc, np.ones(M)] @ T.T)[:, :3], world, atol=1e-3)
    info = json.loads((pred_dir / 'predictions.json').read_text())
    assert set(info['seconds']) == {'T1', 'T2'} and info['model'].endswith('best_model.torch')
    stamp = local[0].stat().st_mtime_ns
    assert test_deepssm(cfg) == predictions and local[0].stat().st_mtime_ns == stamp  # up to date: reused
    test_deepssm(cfg, overwrite=True, verbose=False)
    assert local[0].stat().st_mtime_ns != stamp
    rows = prediction_errors(cfg)
    assert [r['id'] for r in rows] == ['T1', 'T2']
    # true world particles are mean + (i + 1) on every coordinate: distance sqrt(3) (i + 1); rigid T keeps it
    np.testing.assert_allclose([r['rmse_world_mm'] for r in rows], [np.sqrt(3), 2 * np.sqrt(3)], rtol=1e-4)
    np.testing.assert_allclose([r['rmse_mm'] for r in rows], [np.sqrt(3), 2 * np.sqrt(3)], rtol=1e-4)


def test_prediction_applies_the_calibration_of_its_model_file(run):
    cfg, mean, norm = run
    model = cfg.resolved_paths()['model_dir'] / 'best_model.torch'
    net = _tiny_net(mean)
    with torch.no_grad():
        net.encoder.head.bias.fill_(2.0)  # every image: 2 (whitened) along each mode
    _save(net, model, norm)
    calibrate_model(
        net,
        model,
        [{'image': torch.zeros(2, 1, *SHAPE), 'scores': torch.ones(2, L), 'particles': torch.zeros(2, M, 3)}],
    )  # the truth is half the prediction
    world_file = cfg.resolved_paths()['pred_dir'] / 'world_predictions' / 'T1.particles'
    test_deepssm(cfg, verbose=False)
    with torch.no_grad():
        expected = net.decoder(torch.ones(1, L))[0].numpy()
    np.testing.assert_allclose(read_particles(world_file), expected, atol=1e-3)
    info = json.loads((cfg.resolved_paths()['pred_dir'] / 'predictions.json').read_text())
    assert np.allclose(info['calibration'], 0.5)
    cfg.deepssm.calibrate = False  # off: the raw network, and the predictions are redone
    test_deepssm(cfg, verbose=False)
    with torch.no_grad():
        raw = net.decoder(torch.full((1, L), 2.0))[0].numpy()
    np.testing.assert_allclose(read_particles(world_file), raw, atol=1e-3)


def test_fine_tuned_model_is_used_when_fine_tuning_is_enabled(run):
    cfg, mean, norm = run
    cfg.deepssm.fine_tune.enabled = True
    with pytest.raises(FileNotFoundError, match='best_model_ft.torch'):
        test_deepssm(cfg)
    _save(_tiny_net(mean + 10.0), cfg.resolved_paths()['model_dir'] / 'best_model_ft.torch', norm)
    test_deepssm(cfg, verbose=False)
    world = read_particles(cfg.resolved_paths()['pred_dir'] / 'world_predictions' / 'T1.particles')
    np.testing.assert_allclose(world, mean + 10.0, atol=1e-3)


def test_predict_image_registers_and_maps_back_to_the_image_frame(tmp_path, run, capsys):
    cfg, mean, _ = run
    shift = np.array([4.0, -2.0, 3.0])  # the new image shows the anatomy shifted by this (mm)
    moving = _blob((22, 24, 26), 2.0, (-6.0, -6.0, -6.0), np.array([16.0, 18.0, 20.0]) + shift)
    path = tmp_path / 'new_scan.nii.gz'
    sitk.WriteImage(moving, str(path))
    local = predict_image(path, cfg, out_dir=tmp_path / 'new', stages=None)  # grooming's stages: translation
    assert local.shape == (M, 3)
    np.testing.assert_allclose(local, mean + shift, atol=0.6)
    np.testing.assert_allclose(read_particles(tmp_path / 'new' / 'new_scan.particles'), local, atol=1e-5)
    assert 'registration' in capsys.readouterr().out
    fast = predict_image(path, cfg, out_dir=tmp_path / 'new', verbose=False)  # default: one similarity stage
    assert np.sqrt(np.mean(np.sum((fast - (mean + shift)) ** 2, axis=1))) < 1.5


@pytest.mark.bad_input
def test_missing_model_or_groom_output_is_named(tmp_path, run):
    cfg, _, _ = run
    (cfg.resolved_paths()['model_dir'] / 'best_model.torch').unlink()
    with pytest.raises(FileNotFoundError, match='best_model.torch'):
        test_deepssm(cfg)
    other = get_profile('smoke', work_dir=str(tmp_path / 'empty'))
    with pytest.raises(FileNotFoundError, match='groom.json'):
        test_deepssm(other)
    with pytest.raises(FileNotFoundError, match='nothing.nrrd'):
        predict_image(tmp_path / 'nothing.nrrd', cfg)
    with pytest.raises(DataError, match="side must be 'L', 'R' or None .*got 'left'"):
        predict_image(tmp_path / 'nothing.nrrd', cfg, side='left')


def test_predict_image_side_without_sides_in_grooming_warns(tmp_path, run):
    cfg, mean, _ = run
    path = tmp_path / 'scan_R.nrrd'
    sitk.WriteImage(_blob((22, 24, 26), 2.0, (-6.0, -6.0, -6.0), np.array([16.0, 18.0, 20.0])), str(path))
    with pytest.warns(UserWarning, match='groomed without sides'):
        local = predict_image(path, cfg, out_dir=tmp_path / 'new', side='R', verbose=False)
    np.testing.assert_allclose(local, mean, atol=1.5)  # not reflected


@pytest.mark.bad_input
def test_non_finite_predictions_raise(tmp_path, run):
    cfg, _, norm = run
    loader = get_test_loader(
        tmp_path / 'l', [cfg.resolved_paths()['groom_dir'] / 'images' / 'T1.nrrd'], normalization=norm
    )

    class Broken(torch.nn.Module):
        def forward(self, images):
            return torch.zeros(len(images), L), torch.full((len(images), M, 3), float('nan'))

    with pytest.raises(DataError, match='T1'):
        predict_loader(Broken(), loader, tmp_path / 'pred', verbose=False)


def test_loaders_and_prediction_on_the_smoke_cohort(smoke_cohort, tmp_path):
    """The real grooming and augmentation outputs, through the loaders, to one prediction file per test image."""
    from deepssm_nb.augment import run_augmentation
    from deepssm_nb.groom import run_grooming
    from deepssm_nb.loaders import build_loaders
    from deepssm_nb.pca import ShapePCA

    cfg = get_profile('smoke', work_dir=str(tmp_path / 'work'))
    paths = cfg.resolved_paths()
    groomed = run_grooming(cfg, smoke_cohort, progress=False)
    run_augmentation(cfg, groomed, progress=False)
    loaders = build_loaders(cfg)
    rows = json.loads((paths['aug_dir'] / 'augmentation.json').read_text())['rows']
    base = {r['name']: r['base'] for r in rows}
    train_bases = {base[n] for n in loaders.train.dataset.names}
    val_bases = {base[n] for n in loaders.val.dataset.names}
    assert train_bases.isdisjoint(val_bases) and train_bases | val_bases == set(groomed.ids('train'))
    assert [b['name'][0] for b in loaders.test] == groomed.ids('test')
    norm = loaders.normalization
    pca = ShapePCA.load(paths['aug_dir'] / 'PCA_Particle_Info')
    net = DeepSSMNet(
        (1, *norm['image_shape']), num_latent=pca.n_components_, num_correspondences=128, channels=(2, 2, 2, 2, 2)
    )
    init_pca_decoder(net, pca.mean_, pca.components_, norm['score_mean'], norm['score_std'])
    for name in ('best_model.torch', 'best_model_ft.torch'):
        _save(net, paths['model_dir'] / name, norm)
    predictions = test_deepssm(cfg, groomed, verbose=False)
    files = predictions.local
    assert predictions.ids == groomed.ids('test') and [f.stem for f in files] == groomed.ids('test')
    assert all(read_particles(f).shape == (128, 3) for f in files)
    assert [r['id'] for r in prediction_errors(cfg)] == groomed.ids('test')
