"""Thin-plate spline fitting, the fast warp field and image warping."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from deepssm_nb import DataError
from deepssm_nb.imageops import ImageGrid
from deepssm_nb.tps import ThinPlateSpline, resample, warp_field, warp_image


def _sphere_points(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    phi, theta = np.arccos(1 - 2 * i / n), np.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)


def _ellipsoid(radii, center, n=256):
    return np.asarray(center) + _sphere_points(n) * np.asarray(radii)


def _grid(shape=(30, 26, 34), spacing=(1.5, 1.5, 1.5), origin=(-20.0, 5.0, 3.0), direction=None):
    return ImageGrid(
        shape,
        np.array(origin, float),
        np.array(spacing, float),
        np.eye(3) if direction is None else np.asarray(direction, float),
    )


def test_spline_interpolates_and_reproduces_affine_maps():
    rng = np.random.default_rng(0)
    src = rng.normal(scale=20, size=(40, 3))
    dst = src + rng.normal(scale=2, size=src.shape)
    tps = ThinPlateSpline.fit(src, dst)
    np.testing.assert_allclose(tps(src), dst, atol=1e-8)
    np.testing.assert_allclose(tps.weights.sum(0), 0, atol=1e-10)  # side conditions
    a = np.array([[1.1, 0.1, 0.0], [0.0, 0.9, 0.2], [0.05, 0.0, 1.0]])
    affine = ThinPlateSpline.fit(src, src @ a.T + [3, -1, 2])
    np.testing.assert_allclose(affine.weights, 0, atol=1e-9)
    q = rng.normal(scale=30, size=(100, 3))
    np.testing.assert_allclose(affine(q), q @ a.T + [3, -1, 2], atol=1e-8)


def test_repeated_control_points_fall_back_to_least_squares():
    src = _ellipsoid((10, 8, 12), (0, 0, 0), 30)
    src = np.concatenate([src, src[:3]])
    tps = ThinPlateSpline.fit(src, src + 1.0)
    np.testing.assert_allclose(tps(src), src + 1.0, atol=1e-6)


def test_image_grid_matches_simpleitk_and_numpy_order():
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    grid = _grid(spacing=(1.0, 2.0, 3.0), direction=rot)
    img = sitk.Image(34, 26, 30, sitk.sitkFloat32)  # sizes x, y, z
    img.SetOrigin(tuple(grid.origin))
    img.SetSpacing(tuple(grid.spacing))
    img.SetDirection(tuple(rot.ravel()))
    assert ImageGrid.from_image(img).shape == (30, 26, 34)
    zyx = np.array([[2.5, 7.0, 11.25]])
    expected = img.TransformContinuousIndexToPhysicalPoint((11.25, 7.0, 2.5))
    np.testing.assert_allclose(grid.index_to_physical(zyx)[0], expected, atol=1e-12)
    np.testing.assert_allclose(grid.physical_to_index(grid.index_to_physical(zyx)), zyx, atol=1e-12)


def test_image_grid_from_a_file_header_equals_the_grid_of_the_read_image(tmp_path):
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    img = sitk.Image(9, 7, 5, sitk.sitkInt16)
    img.SetOrigin((1.5, -2.0, 30.0))
    img.SetSpacing((1.0, 2.0, 3.0))
    img.SetDirection(tuple(rot.ravel()))
    path = tmp_path / 'scan.nrrd'
    sitk.WriteImage(img, str(path))
    a, b = ImageGrid.from_file(path), ImageGrid.from_image(sitk.ReadImage(str(path)))
    assert a.shape == b.shape == (5, 7, 9)
    for key in ('origin', 'spacing', 'direction'):
        assert np.array_equal(getattr(a, key), getattr(b, key))
    with pytest.raises(FileNotFoundError, match='Base scan not found: ".*missing.nrrd"'):
        ImageGrid.from_file(tmp_path / 'missing.nrrd', name='base scan')


def _noisy_pair(grid):
    center = grid.index_to_physical(np.array([20.0, 18.0, 22.0]))
    base = _ellipsoid((14, 11, 16), center)
    rng = np.random.default_rng(1)
    target = base + 2.0 * np.sin(base[:, [1, 2, 0]] / 7.0) + rng.normal(scale=0.3, size=base.shape)
    return ThinPlateSpline.fit(target, base)


def test_fast_field_matches_exact_spline():
    grid = _grid(shape=(40, 36, 44), spacing=(1.0, 1.0, 1.0), origin=(0, 0, 0))
    tps = _noisy_pair(grid)
    exact = warp_field(tps, grid, grid_step=None)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in grid.shape], indexing='ij'), -1).reshape(-1, 3)
    direct = grid.physical_to_index(tps(grid.index_to_physical(idx))) - idx
    np.testing.assert_allclose(exact.reshape(3, -1).T, direct, atol=1e-4)
    error = {}
    for kind, radius in (('cubic', 2), ('cubic', 0), ('linear', 2)):
        fast = warp_field(tps, grid, grid_step=4, interpolation=kind, kink_radius=radius)
        error[kind, radius] = np.linalg.norm(fast - exact, axis=0).max()  # 1 mm voxels
    assert error['cubic', 2] < 0.1  # the default
    assert error['cubic', 0] > 2 * error['cubic', 2]  # the kink correction matters
    assert error['linear', 2] > 2 * error['cubic', 2]  # so does the cubic interpolation


def test_fast_field_converges_with_anisotropic_voxels():
    spacing = np.array([1.5, 2.0, 1.0])
    grid = _grid(shape=(40, 36, 44), spacing=spacing, origin=(0, 0, 0))
    tps = _noisy_pair(grid)
    exact = warp_field(tps, grid, grid_step=None)
    mm = spacing[::-1, None, None, None]
    errors = [
        np.linalg.norm((warp_field(tps, grid, grid_step=3, kink_radius=r) - exact) * mm, axis=0).max()
        for r in (1, 2, 3)
    ]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.1


def test_identity_warp_leaves_the_image_unchanged():
    rng = np.random.default_rng(2)
    arr = ndimage.gaussian_filter(rng.normal(size=(20, 22, 24)), 2).astype(np.float32)
    grid = _grid(shape=arr.shape)
    pts = _ellipsoid((8, 7, 9), grid.index_to_physical(np.array([10.0, 11.0, 12.0])), 64)
    tps = ThinPlateSpline.fit(pts, pts)
    out = resample(arr, warp_field(tps, grid, grid_step=3))
    np.testing.assert_allclose(out, arr, atol=1e-4)


def test_warped_segmentation_agrees_with_the_output_particles():
    # A segmentation with a linear partial-volume ramp `ramp` voxels wide across the surface:
    # value 0.5 on the surface, and 0.5 - d / ramp at signed distance d (voxels) near it.
    ramp = 4.0
    shape = (48, 44, 52)
    grid = _grid(shape=shape, spacing=(1.0, 1.0, 1.0), origin=(0, 0, 0))
    center, radii = np.array([26.0, 22.0, 24.0]), np.array([15.0, 12.0, 17.0])  # x, y, z
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing='ij'), -1)
    rel = grid.index_to_physical(idx) - center
    f = ((rel / radii) ** 2).sum(-1)
    dist = (f - 1) / np.linalg.norm(2 * rel / radii**2, axis=-1).clip(1e-9)  # first-order distance, mm
    seg = sitk.GetImageFromArray(np.clip(0.5 - dist / ramp, 0, 1).astype(np.float32))
    base = _ellipsoid(radii, center, 512)
    # a smooth, non-affine shape change of a few mm
    moved = center + (base - center) * [1.1, 0.9, 1.05] + 2.0 * np.sin((base - center)[:, [2, 0, 1]] / 9.0)
    assert np.linalg.norm(moved - base, axis=1).max() > 2.5
    warped = sitk.GetArrayFromImage(warp_image(seg, base, moved, landmark_step=2, grid_step=4))
    value = ndimage.map_coordinates(warped, grid.physical_to_index(moved).T, order=1)
    distance_voxels = np.abs(0.5 - value) * ramp
    assert distance_voxels.max() <= 1.0
    # the control points (every 2nd particle) land on the surface almost exactly
    assert distance_voxels[::2].max() < 0.1


def test_warp_image_keeps_geometry_and_type():
    arr = (np.arange(20 * 18 * 16).reshape(20, 18, 16) % 200 - 100).astype(np.int16)
    img = sitk.GetImageFromArray(arr)
    img.SetOrigin((1.0, 2.0, 3.0))
    img.SetSpacing((2.0, 2.0, 2.0))
    pts = _ellipsoid((8, 8, 10), (16, 18, 22), 32)
    out = warp_image(img, pts, pts + 0.5)
    assert out.GetPixelID() == sitk.sitkInt16
    assert out.GetOrigin() == img.GetOrigin() and out.GetSpacing() == img.GetSpacing()
    assert out.GetSize() == img.GetSize()


@pytest.mark.bad_input
def test_bad_control_points_are_rejected():
    with pytest.raises(DataError, match='at least 4'):
        ThinPlateSpline.fit(np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(DataError, match='NaN'):
        ThinPlateSpline.fit(np.full((5, 3), np.nan), np.zeros((5, 3)))
    with pytest.raises(DataError, match='target'):
        ThinPlateSpline.fit(np.zeros((5, 3)), np.zeros((6, 3)))
    with pytest.raises(ValueError, match='grid_step'):
        warp_field(ThinPlateSpline.fit(_sphere_points(8), _sphere_points(8)), _grid(), grid_step=0.5)


def test_image_grid_to_image_round_trips_the_geometry_and_the_voxels():
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    grid = _grid(spacing=(1.0, 2.0, 3.0), direction=rot)
    arr = np.arange(np.prod(grid.shape), dtype=np.float32).reshape(grid.shape)
    img = grid.to_image(arr)
    back = ImageGrid.from_image(img)
    assert back.shape == grid.shape
    for key in ('origin', 'spacing', 'direction'):
        np.testing.assert_array_equal(getattr(back, key), getattr(grid, key))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), arr)
    with pytest.raises(ValueError, match=r'grid shape \(30, 26, 34\) \(z, y, x\); got \(30, 26, 33\)'):
        grid.to_image(arr[:, :, :-1])
