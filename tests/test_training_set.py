"""Training-time augmentation: fresh warped samples, pose jitter and intensity changes, each rebuilt from its seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepssm_nb import ConfigError, DataError, get_profile
from deepssm_nb.imageops import ImageGrid
from deepssm_nb.intensity import IntensityParams, RandomIntensity, adjust_intensity, bias_field
from deepssm_nb.pipeline import ensure
from deepssm_nb.synthesis import BaseScan, SampleSynthesizer, random_pose
from deepssm_nb.training_set import FRESH, EpochDraws

pytestmark = pytest.mark.usefixtures('one_torch_thread')


# --------------------------------------------------------------------------- intensity


def _blob(shape=(16, 20, 24)) -> np.ndarray:
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing='ij')
    return (np.exp(-4 * (x**2 + y**2 + z**2)) * 3 - 1).astype(np.float32)


def test_identity_parameters_leave_the_image_unchanged():
    x = _blob()
    same = IntensityParams(
        blur_sigma_mm=0.0, gamma=1.0, bias=np.zeros((3, 3, 3)), scale=1.0, shift=0.0, noise_std=0.0, noise_seed=0
    )
    np.testing.assert_allclose(adjust_intensity(x, same, spacing=(2, 2, 2)), x, atol=1e-5)


def test_each_change_does_what_it_says():
    x = _blob()
    none = {
        'blur_sigma_mm': 0.0,
        'gamma': 1.0,
        'bias': np.zeros((3, 3, 3)),
        'scale': 1.0,
        'shift': 0.0,
        'noise_std': 0.0,
        'noise_seed': 0,
    }
    y = adjust_intensity(x, IntensityParams(**{**none, 'scale': 1.5, 'shift': 0.25}), spacing=(2, 2, 2))
    np.testing.assert_allclose(y, 1.5 * x + 0.25, atol=1e-5)
    noisy = adjust_intensity(x, IntensityParams(**{**none, 'noise_std': 0.2, 'noise_seed': 3}), spacing=(2, 2, 2))
    assert abs(float(np.std(noisy - x)) - 0.2) < 0.01
    blurred = adjust_intensity(x, IntensityParams(**{**none, 'blur_sigma_mm': 4.0}), spacing=(2, 2, 2))
    assert blurred.max() < x.max() - 0.05 and abs(blurred.mean() - x.mean()) < 0.02  # lower peak, same mass
    gamma = adjust_intensity(x, IntensityParams(**{**none, 'gamma': 2.0}), spacing=(2, 2, 2))
    assert gamma.min() == pytest.approx(x.min(), abs=1e-5) and gamma.max() == pytest.approx(x.max(), abs=1e-5)
    assert np.all(gamma <= x + 1e-5) and gamma.mean() < x.mean() - 0.05
    coef = np.zeros((3, 3, 3))
    coef[0, 0, 1] = 0.5  # a ramp along x, from -0.5 to 0.5
    field = bias_field(coef, x.shape)
    np.testing.assert_allclose(field[0, 0, [0, -1]], [-0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(field[:, :, 3], field[0, 0, 3])  # constant across z and y
    biased = adjust_intensity(x, IntensityParams(**{**none, 'bias': coef}), spacing=(2, 2, 2))
    np.testing.assert_allclose(biased - x, field, atol=1e-5)


def test_random_intensity_is_seeded_and_stays_in_its_ranges():
    aug = RandomIntensity(scale=0.2, shift=0.3, gamma=0.4, noise=0.1, blur_mm=2.0, bias=0.5)
    x = _blob()
    a = aug(x, np.random.default_rng(7), spacing=(2, 2, 2))
    b = aug(x, np.random.default_rng(7), spacing=(2, 2, 2))
    c = aug(x, np.random.default_rng(8), spacing=(2, 2, 2))
    assert np.array_equal(a, b) and not np.allclose(a, c) and a.dtype == np.float32
    draws = [aug.sample(np.random.default_rng(s)) for s in range(200)]
    assert all(1 / 1.2 - 1e-9 <= d.scale <= 1.2 + 1e-9 and abs(d.shift) <= 0.3 for d in draws)
    assert all(np.exp(-0.4) - 1e-9 <= d.gamma <= np.exp(0.4) + 1e-9 and 0 <= d.noise_std <= 0.1 for d in draws)
    assert all(0 <= d.blur_sigma_mm <= 2.0 for d in draws)
    assert max(float(np.abs(bias_field(d.bias, x.shape)).max()) for d in draws) <= 0.5 + 1e-6
    assert np.std([d.scale for d in draws]) > 0.03 and np.std([d.shift for d in draws]) > 0.1


@pytest.mark.bad_input
@pytest.mark.parametrize(
    'key, value',
    [('scale', -0.1), ('scale', 0.95), ('gamma', 3.0), ('noise', -1.0), ('blur_mm', 11.0), ('bias', float('nan'))],
)
def test_bad_intensity_amounts_are_refused_by_name(key, value):
    with pytest.raises(ConfigError, match=f'intensity.{key}'):
        RandomIntensity(**{key: value})
    cfg = get_profile('smoke')
    setattr(cfg.augment.intensity, key, value)
    with pytest.raises(ConfigError, match=f'augment.intensity.{key}'):
        cfg.validate()


@pytest.mark.bad_input
def test_pose_jitter_without_fresh_samples_and_an_unknown_warp_source_are_refused():
    cfg = get_profile('smoke')
    cfg.augment.pose_jitter_mm = 1.0
    with pytest.raises(ConfigError, match=r'pose_jitter.*expected augment.fresh_samples > 0, got 0'):
        cfg.validate()
    cfg.augment.pose_jitter_mm = 0.0
    cfg.augment.warp_from = 'mesh'
    with pytest.raises(ConfigError, match=r"augment.warp_from: expected one of \['groomed', 'original'\]; got 'mesh'"):
        cfg.validate()


# --------------------------------------------------------------------------- pose and warp


def test_random_pose_is_rigid_seeded_and_of_the_asked_size():
    center = np.array([10.0, -5.0, 30.0])
    poses = [
        random_pose(np.random.default_rng(s), translation_mm=1.0, rotation_deg=2.0, center=center) for s in range(400)
    ]
    assert np.array_equal(
        poses[3], random_pose(np.random.default_rng(3), translation_mm=1.0, rotation_deg=2.0, center=center)
    )
    for p in poses[:20]:
        np.testing.assert_allclose(p[:3, :3] @ p[:3, :3].T, np.eye(3), atol=1e-12)
        assert np.linalg.det(p[:3, :3]) == pytest.approx(1.0)
    moves = np.array([p[:3, :3] @ center + p[:3, 3] - center for p in poses])  # the centre moves by the shift
    assert np.std(moves, axis=0) == pytest.approx([1.0, 1.0, 1.0], rel=0.15)
    angles = np.degrees([np.arccos(np.clip((np.trace(p[:3, :3]) - 1) / 2, -1, 1)) for p in poses])
    assert np.sqrt(np.mean(angles**2)) == pytest.approx(2.0, rel=0.15)
    same = random_pose(np.random.default_rng(0), translation_mm=0.0, rotation_deg=0.0, center=center)
    np.testing.assert_allclose(same, np.eye(4), atol=1e-12)


def _ball_scan(center_mm, radius=8.0):
    grid = ImageGrid((24, 24, 24), np.zeros(3), np.full(3, 2.0), np.eye(3))
    idx = np.stack(np.meshgrid(*[np.arange(24) * 2.0] * 3, indexing='ij'))  # (z, y, x) mm
    r = np.sqrt(sum((idx[a] - center_mm[2 - a]) ** 2 for a in range(3)))
    array = (r < radius).astype(np.float32) * 100.0
    rng = np.random.default_rng(0)
    d = rng.standard_normal((64, 3))
    particles = center_mm + radius * d / np.linalg.norm(d, axis=1, keepdims=True)
    return BaseScan('ball', array, grid, np.eye(4), particles, background=0.0), grid


def _bright_centroid(image, grid):
    z, y, x = np.nonzero(image > 50)
    return grid.origin + grid.spacing * np.array([x.mean(), y.mean(), z.mean()])


@pytest.mark.parametrize('interpolation', ['linear', 'cubic'])
def test_the_warped_ball_follows_its_particles(interpolation):
    center = np.array([24.0, 22.0, 23.0])
    base, grid = _ball_scan(center)
    synth = SampleSynthesizer(
        [base], grid, landmark_step=1, grid_step=2.0, interpolation=interpolation, kink_radius=0.0
    )
    np.testing.assert_allclose(_bright_centroid(synth.warp(0, base.particles), grid), center, atol=0.3)
    pose = random_pose(np.random.default_rng(1), translation_mm=3.0, rotation_deg=5.0, center=center)
    moved = base.particles @ pose[:3, :3].T + pose[:3, 3]
    new_center = pose[:3, :3] @ center + pose[:3, 3]
    assert np.linalg.norm(new_center - center) > 2.0
    np.testing.assert_allclose(_bright_centroid(synth.warp(0, moved), grid), new_center, atol=0.5)


# --------------------------------------------------------------------------- epoch draws


def test_epoch_draws_list_every_row_once_and_fresh_samples_with_new_seeds():
    g = torch.Generator().manual_seed(5)
    draws = EpochDraws([3, 1, 4], fresh=5, generator=g)
    first, second = list(draws), list(draws)
    assert len(first) == len(draws) == 8
    assert sorted(r for r, _ in first) == [FRESH] * 5 + [1, 3, 4]
    assert len({s for _, s in first + second}) == 16  # a new seed for every draw
    again = list(EpochDraws([3, 1, 4], fresh=5, generator=torch.Generator().manual_seed(5)))
    assert again == first
    with pytest.raises(DataError, match='empty'):
        EpochDraws([], fresh=0, generator=g)
    with pytest.raises(ConfigError, match='fresh'):
        EpochDraws([1], fresh=-1, generator=g)


# --------------------------------------------------------------------------- on the smoke cohort


def _fresh_cfg(root, data_dir, **loader):
    cfg = get_profile('smoke', work_dir=str(root))
    cfg.data.data_dir = str(data_dir)
    cfg.augment.processes = 1
    cfg.augment.warp_from = 'original'
    cfg.augment.fresh_samples = 12
    cfg.augment.pose_jitter_mm = 1.0
    cfg.augment.pose_jitter_deg = 1.0
    cfg.augment.intensity.enabled = True
    cfg.deepssm.encoder.dropout = 0.2  # a global random stream the loader must not disturb
    for k, v in loader.items():
        setattr(cfg.loader, k, v)
    return cfg.validate()


@pytest.fixture(scope='module')
def fresh_run(smoke_cohort, tmp_path_factory):
    root = tmp_path_factory.mktemp('fresh')
    cfg = _fresh_cfg(root / 'work', smoke_cohort.root.parent)
    return cfg, ensure(cfg, 'loaders', verbose=False)


def test_a_fresh_sample_is_rebuilt_from_its_seed(fresh_run):
    _, loaders = fresh_run
    ds = loaders.train.dataset
    a, b, c = ds[(FRESH, 11)], ds[(FRESH, 11)], ds[(FRESH, 12)]
    assert torch.equal(a['image'], b['image']) and torch.equal(a['particles'], b['particles'])
    assert not torch.equal(a['image'], c['image'])
    assert a['image'].shape == ds.rows[0]['image'].shape and a['scores'].shape == ds.rows[0]['scores'].shape
    assert torch.isfinite(a['image']).all() and abs(float(a['image'].mean())) < 1.5
    # the scores are the whitened PCA projection of the (jittered) particles
    pca, norm = ds.pca, ds.normalization
    z = (pca.transform(a['particles'].numpy()[None].astype(float))[0] - norm['score_mean']) / np.asarray(
        norm['score_std']
    )
    np.testing.assert_allclose(a['scores'].numpy(), z, rtol=1e-4, atol=1e-4)
    # a stored row gets new intensity changes for each seed, and none for a plain index
    row = ds[0]['image']
    assert not torch.equal(ds[(0, 1)]['image'], row) and torch.equal(ds[(0, 1)]['image'], ds[(0, 1)]['image'])


def test_pose_jitter_moves_the_particles_rigidly(fresh_run):
    _, loaders = fresh_run
    ds = loaders.train.dataset
    plain = type(ds)(
        ds.rows, normalization=ds.normalization, synthesizer=ds.synthesizer, pca=ds.pca, sampler=ds.sampler
    )
    shifts = []
    for seed in range(6):
        p0 = plain.fresh_sample(np.random.default_rng(seed))['particles'].numpy().astype(float)
        p1 = ds.fresh_sample(np.random.default_rng(seed))['particles'].numpy().astype(float)
        c0, c1 = p0 - p0.mean(0), p1 - p1.mean(0)
        u, _, vt = np.linalg.svd(c1.T @ c0)
        rot = u @ vt
        assert np.abs(c0 @ rot.T - c1).max() < 1e-3  # the same shape, rigidly moved
        shifts.append(np.linalg.norm(p1.mean(0) - p0.mean(0)))
    assert 0.2 < np.mean(shifts) < 4.0  # about sqrt(3) x 1 mm


def test_fresh_samples_reach_the_training_and_workers_give_the_same_batches(fresh_run):
    from deepssm_nb.loaders import build_loaders

    cfg, loaders = fresh_run
    train = loaders.train
    names = [n for batch in train for n in batch['name']]
    assert len(names) == len(train.sampler) == 12 + len(train.sampler.rows)
    assert sum(n.startswith('fresh_') for n in names) == 12
    assert {n for n in names if not n.startswith('fresh_')} <= set(train.dataset.rows.names)
    batches = {}
    for workers in (0, 1):
        cfg.loader.num_workers = workers
        loader = build_loaders(cfg).train
        assert loader.num_workers == workers
        batches[workers] = [b for _ in range(2) for b in loader]  # two epochs
    cfg.loader.num_workers = 0
    assert len(batches[0]) == len(batches[1]) == 2 * len(train)
    for a, b in zip(batches[0], batches[1]):
        assert a['name'] == b['name'] and torch.equal(a['image'], b['image']) and torch.equal(a['scores'], b['scores'])
    first, second = batches[0][: len(train)], batches[0][len(train) :]
    fresh = [n for b in first for n in b['name'] if n.startswith('fresh_')]
    assert fresh and not set(fresh) & {n for b in second for n in b['name']}  # a new set every epoch


def test_the_shapes_loader_gives_the_particles_of_the_same_draws_without_images(fresh_run):
    from deepssm_nb.checkpoints import loader_generators
    from deepssm_nb.training_set import shapes_loader

    _, loaders = fresh_run
    train = loaders.train
    shapes = shapes_loader(train)
    assert shapes is not train and len(loader_generators(shapes)) == len(loader_generators(train))
    epochs = {}
    for name, loader in (('images', train), ('shapes', shapes)):
        for g in loader_generators(loader):  # as every training stage seeds its loader
            g.manual_seed(5)
        epochs[name] = [b for _ in range(2) for b in loader]
    assert len(epochs['images']) == len(epochs['shapes']) == 2 * len(train)
    for a, b in zip(epochs['images'], epochs['shapes']):
        assert a['name'] == b['name'] and torch.equal(a['particles'], b['particles'])
        assert 'image' not in b
    # a loader that is not over fresh samples is kept as it is
    assert shapes_loader(loaders.val) is loaders.val
