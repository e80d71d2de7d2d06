"""Corruptions of whitened test images for the out-of-distribution check, and the scores of that check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepssm_nb._validation import ConfigError, DataError
from deepssm_nb.corruptions import CORRUPTIONS, corrupt, corrupt_all, fit_threshold, ood_auroc

N = 24


def _volume(seed: int = 0, n: int = N) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, n, n)).astype(np.float32)


def _cube_mask(n: int = N) -> np.ndarray:
    mask = np.zeros((n, n, n), bool)
    mask[8:16, 8:16, 8:16] = True
    return mask


def _femur_scene(n: int = N) -> tuple[np.ndarray, np.ndarray]:
    """A bright cube ("femur", 3.0) in dark tissue (-1.0 with noise of std 0.1)."""
    x = (-1.0 + 0.1 * np.random.default_rng(3).standard_normal((n, n, n))).astype(np.float32)
    mask = _cube_mask(n)
    x[mask] = 3.0
    return x, mask


@pytest.mark.parametrize('kind', CORRUPTIONS)
@pytest.mark.parametrize('shape', [(N, N, N), (1, N, N, N), (2, 1, N, N, N)])
def test_each_kind_keeps_shape_dtype_and_input(kind, shape):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    before = x.copy()
    out = corrupt(x, kind, seed=4, femur_mask=_cube_mask())
    assert isinstance(out, np.ndarray) and out.shape == shape and out.dtype == np.float32
    np.testing.assert_array_equal(x, before)
    assert not np.allclose(out, x)


@pytest.mark.parametrize('kind', CORRUPTIONS)
def test_numpy_and_torch_agree_and_torch_keeps_its_type(kind):
    x = _volume()[None]
    t = torch.from_numpy(x.copy())
    out_np = corrupt(x, kind, seed=7, femur_mask=_cube_mask())
    out_t = corrupt(t, kind, seed=7, femur_mask=torch.from_numpy(_cube_mask()))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32 and out_t.device == t.device
    assert tuple(out_t.shape) == x.shape
    assert np.allclose(out_t.numpy(), out_np, atol=1e-6)
    np.testing.assert_array_equal(t.numpy(), x)  # the tensor is not changed either
    out64 = corrupt(t.double(), kind, seed=7, femur_mask=_cube_mask())
    assert out64.dtype == torch.float64 and np.allclose(out64.numpy(), out_np, atol=1e-5)


@pytest.mark.parametrize('kind', ['noise', 'shift', 'no_femur'])
def test_seed_repeats_and_other_seeds_differ(kind):
    x = _volume()
    mask = _cube_mask()
    a = corrupt(x, kind, seed=11, femur_mask=mask)
    np.testing.assert_array_equal(a, corrupt(x, kind, seed=11, femur_mask=mask))
    others = [corrupt(x, kind, seed=s, femur_mask=mask) for s in range(12, 20)]
    assert any(not np.array_equal(a, o) for o in others)  # shift has 8 sign patterns: one of 8 seeds differs


@pytest.mark.parametrize('kind', ['blur', 'invert'])
def test_deterministic_kinds_ignore_the_seed(kind):
    x = _volume()
    np.testing.assert_array_equal(corrupt(x, kind, seed=0), corrupt(x, kind, seed=99))


def test_noise_std_matches_the_strength():
    x = _volume(n=32)
    for strength in (0.5, 2.0):
        d = corrupt(x, 'noise', seed=2, strength=strength).astype(np.float64) - x
        assert abs(d.std() / strength - 1.0) < 0.05
        assert abs(d.mean()) < 0.05 * strength


def test_blur_lowers_the_std_and_more_with_strength():
    x = _volume()
    s1 = corrupt(x, 'blur', strength=0.5).std()
    s2 = corrupt(x, 'blur', strength=1.0).std()
    assert s2 < s1 < 0.5 * x.std()
    np.testing.assert_allclose(corrupt(np.full((8, 8, 8), 2.5, np.float32), 'blur'), 2.5, rtol=1e-6)


def test_blur_does_not_mix_the_images_of_a_batch():
    x = np.stack([np.zeros((N, N, N), np.float32), np.ones((N, N, N), np.float32)])[:, None]
    out = corrupt(x, 'blur')
    np.testing.assert_allclose(out[0], 0.0, atol=1e-6)
    np.testing.assert_allclose(out[1], 1.0, atol=1e-6)


def test_invert_twice_is_the_identity():
    x = _volume()
    np.testing.assert_array_equal(corrupt(x, 'invert'), -x)
    np.testing.assert_array_equal(corrupt(corrupt(x, 'invert'), 'invert'), x)


@pytest.mark.parametrize('strength', [1.0, 0.5])
def test_shift_moves_a_voxel_and_fills_with_zero(strength):
    x = np.ones((N, N, N), np.float32)
    x[12, 11, 10] = 50.0
    expected = round(0.15 * strength * N)  # 4 at strength 1, 2 at 0.5
    out = corrupt(x, 'shift', seed=5, strength=strength)
    new = np.array(np.unravel_index(int(np.argmax(out)), out.shape))
    move = new - np.array([12, 11, 10])
    np.testing.assert_array_equal(np.abs(move), [expected] * 3)
    assert out.max() == 50.0 and np.count_nonzero(out == 50.0) == 1
    assert np.count_nonzero(out == 0.0) == N**3 - (N - expected) ** 3  # the voxels that came in, nothing wrapped
    assert np.count_nonzero(out == 1.0) == (N - expected) ** 3 - 1
    moves = set()
    for s in range(16):
        o = corrupt(x, 'shift', seed=s, strength=strength)
        moves.add(tuple(np.array(np.unravel_index(int(np.argmax(o)), o.shape)) - [12, 11, 10]))
    assert len(moves) > 1 and all(set(np.abs(m)) == {expected} for m in moves)


def test_no_femur_fills_the_mask_with_the_surrounding_tissue():
    x, mask = _femur_scene()
    out = corrupt(x, 'no_femur', seed=0, femur_mask=mask.astype(np.uint8))
    np.testing.assert_array_equal(out[~mask], x[~mask])
    grown = np.zeros_like(mask)
    grown[5:19, 5:19, 5:19] = True
    ring = grown & ~mask
    assert abs(out[mask].mean() - np.median(x[ring])) < 0.1
    assert out[mask].max() < 0.0  # no voxel keeps the femur's brightness
    assert 0.05 < out[mask].std() < 0.2  # noise of the ring's spread (0.1), not a flat fill


def test_no_femur_with_a_batch_uses_each_image_s_own_tissue():
    x, mask = _femur_scene()
    batch = np.stack([x, x + 2.0])[:, None]
    out = corrupt(batch, 'no_femur', femur_mask=mask)
    assert abs(out[0, 0][mask].mean() + 1.0) < 0.1
    assert abs(out[1, 0][mask].mean() - 1.0) < 0.1


def test_corrupt_all_gives_every_kind_with_its_own_seed():
    x = _volume()
    out = corrupt_all(x, seed=3)
    assert list(out) == [k for k in CORRUPTIONS if k != 'no_femur']
    np.testing.assert_array_equal(out['invert'], -x)
    assert not np.array_equal(out['noise'], corrupt(x, 'noise', seed=3))  # a derived seed, not the seed itself
    again = corrupt_all(x, seed=3, femur_mask=_cube_mask())
    assert list(again) == list(CORRUPTIONS)
    np.testing.assert_array_equal(again['noise'], out['noise'])
    assert not np.array_equal(corrupt_all(x, seed=4)['noise'], out['noise'])


def test_ood_auroc_known_values():
    assert ood_auroc([0.1, 0.2, 0.3], [0.5, 0.6]) == 1.0
    assert ood_auroc([0.5, 0.6], [0.1, 0.2, 0.3]) == 0.0
    assert ood_auroc([0.4, 0.4, 0.4], [0.4, 0.4]) == 0.5
    # pairs (corrupted, clean): 0.2 vs (0.1, 0.2, 0.3) -> 1 + 0.5 + 0; 0.3 vs ... -> 1 + 1 + 0.5; sum 4 of 6
    assert ood_auroc([0.1, 0.2, 0.3], [0.2, 0.3]) == pytest.approx(4 / 6)
    assert ood_auroc(torch.tensor([0.0, 1.0]), np.array([2.0])) == 1.0


def test_fit_threshold_is_the_quantile():
    assert fit_threshold(np.arange(101)) == 95.0
    assert fit_threshold(np.arange(101), quantile=0.5) == 50.0
    assert fit_threshold([0.0, 1.0], quantile=0.25) == 0.25


@pytest.mark.bad_input
def test_unknown_kind_lists_the_options_and_the_nearest_spelling():
    with pytest.raises(
        ConfigError, match=r"kind must be one of \['noise', 'blur', .*'no_femur'\]; got 'nosie'.*'noise'"
    ):
        corrupt(_volume(), 'nosie')


@pytest.mark.bad_input
@pytest.mark.parametrize('strength', [0, -1.0, float('inf'), float('nan')])
def test_strength_must_be_positive_and_finite(strength):
    with pytest.raises(ConfigError, match=r'strength must be'):
        corrupt(_volume(), 'noise', strength=strength)


@pytest.mark.bad_input
def test_seed_must_be_a_non_negative_integer():
    with pytest.raises(ConfigError, match=r'seed must be'):
        corrupt(_volume(), 'noise', seed=-1)


@pytest.mark.bad_input
def test_no_femur_needs_a_mask():
    with pytest.raises(DataError, match=r"femur_mask is required for kind 'no_femur'.*got None"):
        corrupt(_volume(), 'no_femur')


@pytest.mark.bad_input
def test_mask_of_the_wrong_shape():
    with pytest.raises(
        DataError, match=r'femur_mask must have the spatial shape .*\(24, 24, 24\).*got shape \(8, 8, 8\)'
    ):
        corrupt(_volume(), 'no_femur', femur_mask=np.ones((8, 8, 8), bool))


@pytest.mark.bad_input
def test_mask_all_zero_or_everything():
    with pytest.raises(DataError, match=r'femur_mask must have at least one nonzero voxel'):
        corrupt(_volume(), 'no_femur', femur_mask=np.zeros((N, N, N), bool))
    with pytest.raises(DataError, match=r'femur_mask covers all'):
        corrupt(_volume(), 'no_femur', femur_mask=np.ones((N, N, N), bool))


@pytest.mark.bad_input
@pytest.mark.parametrize('shape', [(N, N), (2, N, N, N), (1, 2, N, N, N), (1, 1, 1, N, N, N)])
def test_images_of_the_wrong_shape(shape):
    with pytest.raises(DataError, match=r'images must be a one-channel volume .*got a \dD array of shape'):
        corrupt(np.zeros(shape, np.float32), 'invert')


@pytest.mark.bad_input
def test_images_with_nan_voxels():
    x = _volume()
    x[3, 4, 5] = np.nan
    with pytest.raises(DataError, match=r'images contains 1 NaN or infinite value'):
        corrupt(x, 'blur')


@pytest.mark.bad_input
def test_ood_auroc_bad_scores():
    with pytest.raises(DataError, match=r'clean must be a non-empty 1D array; got an empty array'):
        ood_auroc([], [1.0])
    with pytest.raises(DataError, match=r'corrupted must be a non-empty 1D array; got an empty array'):
        ood_auroc([1.0], np.array([]))
    with pytest.raises(DataError, match=r'corrupted must be 1D; got a 2D array'):
        ood_auroc([1.0], np.ones((2, 2)))
    with pytest.raises(DataError, match=r'clean contains 1 NaN'):
        ood_auroc([np.nan, 1.0], [1.0])


@pytest.mark.bad_input
@pytest.mark.parametrize('quantile', [1.0, 0.0, 1.5])
def test_fit_threshold_quantile_out_of_range(quantile):
    with pytest.raises(ConfigError, match=r'quantile must be in \(0.0, 1.0\); got'):
        fit_threshold(np.arange(10.0), quantile=quantile)


@pytest.mark.bad_input
def test_fit_threshold_empty_values():
    with pytest.raises(DataError, match=r'values must be a non-empty 1D array'):
        fit_threshold([])
