"""Surfaces from images and particles, distances, and the 3D views."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault('VTK_DEFAULT_OPENGL_WINDOW', 'vtkEGLRenderWindow')

import pyvista as pv
import SimpleITK as sitk

from deepssm_nb import ConfigError, DataError
from deepssm_nb.surface import (
    distance_stats,
    image_to_mesh,
    particle_error_map,
    read_surface,
    save_mesh,
    surface_distance,
    symmetric_surface_distance,
    warp_mesh,
)
from deepssm_nb.viz import surface as vs


def ball_image(
    radius,
    center,
    *,
    size=(48, 44, 40),
    spacing=(0.8, 1.0, 1.2),
    origin=(100.0, -40.0, 25.0),
    direction=None,
    axes=(1.0, 1.0, 1.0),
    signed_distance=False,
):
    """A 0/1 ellipsoid (or its signed distance) on a grid with a non-trivial origin and spacing."""
    img = sitk.Image(size, sitk.sitkUInt8)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(np.asarray(direction, dtype=float).ravel().tolist())
    k, j, i = np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing='ij')  # [z, y, x]
    idx = np.stack([i, j, k], axis=-1).astype(float)
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    phys = np.asarray(origin) + (idx * np.asarray(spacing)) @ d.T
    rel = (phys - np.asarray(center)) / (radius * np.asarray(axes))
    r = np.linalg.norm(rel, axis=-1)
    arr = (r - 1.0) * radius if signed_distance else (r <= 1.0).astype(np.uint8)
    out = sitk.GetImageFromArray(arr.astype(np.float32) if signed_distance else arr)
    out.CopyInformation(img)
    return out


def bumped_sphere(radius=10.0, height=3.0, width=0.25):
    """A sphere with a radial bump of ``height`` mm at the north pole (a thin spike when ``width`` is tiny)."""
    s = pv.Sphere(radius=radius, theta_resolution=120, phi_resolution=120)
    pts = np.asarray(s.points)
    angle = np.arccos(np.clip(pts[:, 2] / radius, -1, 1))
    bump = height * np.exp(-0.5 * (angle / width) ** 2)
    out = s.copy()
    out.points = pts * ((radius + bump) / radius)[:, None]
    return out, angle


# --------------------------------------------------------------------------- distances


def test_distance_of_a_mesh_to_itself_is_zero():
    s = pv.Sphere(radius=7.0)
    a, b, stats = symmetric_surface_distance(s, s)
    assert np.max(a['distance']) < 1e-9 and np.max(b['distance']) < 1e-9
    assert stats['symmetric']['hausdorff'] < 1e-9


def test_distance_to_a_concentric_sphere_is_the_radius_offset():
    inner = pv.Sphere(radius=10.0, theta_resolution=60, phi_resolution=60)
    outer = pv.Sphere(radius=12.5, theta_resolution=200, phi_resolution=200)
    d = surface_distance(inner, outer)['distance']
    assert np.allclose(d, 2.5, rtol=0.01)
    back = surface_distance(outer, inner)['distance']  # the coarse inner sphere is a little smaller
    assert np.allclose(back, 2.5, rtol=0.01, atol=0.02)


def test_distance_is_to_the_closest_point_on_triangles_not_vertices():
    plane = pv.Plane(i_size=100, j_size=100, i_resolution=1, j_resolution=1).triangulate()  # 4 corner vertices
    points = pv.PolyData(np.array([[0.0, 0.0, 3.0], [10.0, -5.0, -2.0]]))
    d = surface_distance(points, plane)['distance']
    assert np.allclose(d, [3.0, 2.0], atol=1e-9)
    nearest_vertex = np.min(np.linalg.norm(points.points[:, None] - plane.points[None], axis=2), axis=1)
    assert np.all(nearest_vertex > 50)


def test_asymmetry_shows_at_the_bump_in_one_direction_only():
    sphere = pv.Sphere(radius=10.0, theta_resolution=120, phi_resolution=120)
    bumped, angle = bumped_sphere(height=3.0, width=0.01)  # only the pole vertex moves: a thin spike
    b_d, _, stats = symmetric_surface_distance(bumped, sphere)
    far = b_d['distance'] > 0.5
    assert far.any() and np.all(angle[far] < 0.1)  # large distances only at the spike
    assert stats['a_to_b']['hausdorff'] == pytest.approx(3.0, rel=0.02)
    assert stats['b_to_a']['hausdorff'] < 0.5 * stats['a_to_b']['hausdorff']
    assert stats['symmetric']['hausdorff'] == stats['a_to_b']['hausdorff']


def test_hausdorff_equals_the_max_of_the_vertex_field():
    bumped, _ = bumped_sphere()
    a, b, stats = symmetric_surface_distance(bumped, pv.Sphere(radius=9.0))
    assert stats['a_to_b']['hausdorff'] == pytest.approx(float(np.max(a['distance'])), abs=1e-12)
    assert stats['b_to_a']['hausdorff'] == pytest.approx(float(np.max(b['distance'])), abs=1e-12)


def test_distance_stats_values():
    s = distance_stats(np.array([0.0, 1.0, 2.0, 3.0, -4.0]))
    assert s['mean'] == pytest.approx(2.0)
    assert s['rms'] == pytest.approx(np.sqrt(6.0))
    assert s['p95'] == pytest.approx(np.percentile([0, 1, 2, 3, 4], 95))
    assert s['hausdorff'] == 4.0


def test_signed_distance_is_negative_inside():
    pts = pv.PolyData(np.array([[0.0, 0.0, 5.0], [0.0, 0.0, 15.0]]))
    d = surface_distance(pts, pv.Sphere(radius=10.0, theta_resolution=200, phi_resolution=200), signed=True)
    assert d['distance'][0] == pytest.approx(-5.0, abs=0.02) and d['distance'][1] == pytest.approx(5.0, abs=0.02)


# --------------------------------------------------------------------------- meshes from images


def test_marching_cubes_volume_and_physical_coordinates():
    center, r = np.array([118.0, -18.0, 48.0]), 12.0
    mesh = image_to_mesh(ball_image(r, center))
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * r**3, rel=0.02)
    assert np.allclose(np.asarray(mesh.points).mean(axis=0), center, atol=0.3)
    assert np.max(np.abs(np.linalg.norm(mesh.points - center, axis=1) - r)) < 1.2  # within a voxel


def test_direction_matrix_is_honoured():
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 degrees about z
    center = np.array([80.0, -10.0, 50.0])
    img = ball_image(
        8.0, center, axes=(1.6, 1.0, 1.0), origin=(110.0, -40.0, 25.0), direction=rot, spacing=(1.0, 1.0, 1.0)
    )
    pts = np.asarray(image_to_mesh(img).points)
    assert np.allclose(pts.mean(axis=0), center, atol=0.3)
    extent = pts.max(axis=0) - pts.min(axis=0)
    assert extent[0] == pytest.approx(2 * 8.0 * 1.6, rel=0.08) and extent[1] == pytest.approx(16.0, rel=0.08)


def test_distance_transform_is_meshed_at_zero():
    center, r = np.array([118.0, -18.0, 48.0]), 11.0
    mesh = image_to_mesh(ball_image(r, center, signed_distance=True))
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * r**3, rel=0.01)


def test_smoothing_keeps_the_volume_and_reduces_staircase():
    img = ball_image(12.0, (118.0, -18.0, 48.0))
    raw = image_to_mesh(img, smooth_iterations=0)
    smooth = image_to_mesh(img, smooth_iterations=20)
    assert abs(smooth.volume - raw.volume) / raw.volume < 0.01
    err = lambda m: np.std(np.linalg.norm(m.points - np.array([118.0, -18.0, 48.0]), axis=1))
    assert err(smooth) < err(raw)


def test_read_surface_images_and_meshes(tmp_path):
    img = ball_image(10.0, (118.0, -18.0, 48.0))
    sitk.WriteImage(img, str(tmp_path / 'a.nrrd'))
    mesh = read_surface(tmp_path / 'a.nrrd')
    save_mesh(mesh, tmp_path / 'a.vtk')
    again = read_surface(tmp_path / 'a.vtk')
    assert again.n_points == mesh.n_points and np.allclose(again.points, mesh.points, atol=1e-5)


@pytest.mark.bad_input
def test_empty_segmentation_is_refused():
    img = sitk.Image((10, 10, 10), sitk.sitkUInt8)
    with pytest.raises(DataError, match='no surface'):
        image_to_mesh(img)


@pytest.mark.bad_input
def test_multi_label_image_needs_an_iso_value():
    arr = np.zeros((10, 10, 10), np.uint8)
    arr[2:5] = 1
    arr[5:8] = 2
    with pytest.raises(DataError, match='iso_value'):
        image_to_mesh(sitk.GetImageFromArray(arr))


@pytest.mark.bad_input
def test_read_surface_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='nothing.vtk'):
        read_surface(tmp_path / 'nothing.vtk')
    (tmp_path / 'x.txt').write_text('1 2 3')
    with pytest.raises(DataError, match='x.txt'):
        read_surface(tmp_path / 'x.txt')


# --------------------------------------------------------------------------- meshes from particles


def _fibonacci(n, radius=10.0):
    i = np.arange(n) + 0.5
    phi, theta = np.arccos(1 - 2 * i / n), np.pi * (1 + 5**0.5) * i
    return radius * np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)


def test_warp_of_the_mean_particles_returns_the_mean_mesh():
    mean_mesh = pv.Sphere(radius=10.0)
    mean_particles = _fibonacci(64)
    out = warp_mesh(mean_mesh, mean_particles, mean_particles.copy())
    assert np.max(np.abs(out.points - mean_mesh.points)) < 1e-6
    nudged = mean_particles + 1e-3 * np.sin(mean_particles)
    out = warp_mesh(mean_mesh, mean_particles, nudged)
    back = warp_mesh(out, nudged, mean_particles)
    assert np.max(np.abs(back.points - mean_mesh.points)) < 1e-4


def test_warp_interpolates_particles_and_reproduces_affine_maps():
    mesh = pv.Sphere(radius=10.0)
    src = np.asarray(mesh.points)[::7]
    rng = np.random.default_rng(0)
    A = np.eye(3) + 0.2 * rng.normal(size=(3, 3))
    t = np.array([5.0, -3.0, 40.0])
    out = warp_mesh(mesh, src, src @ A.T + t)
    assert np.max(np.abs(out.points - (mesh.points @ A.T + t))) < 1e-6
    tgt = src + rng.normal(scale=0.5, size=src.shape)
    out = warp_mesh(mesh, src, tgt)
    assert np.max(np.abs(out.points[::7] - tgt)) < 1e-6
    assert out.n_cells == mesh.n_cells


@pytest.mark.bad_input
def test_warp_bad_particles():
    mesh, p = pv.Sphere(), _fibonacci(20)
    with pytest.raises(DataError, match='target_points'):
        warp_mesh(mesh, p, p[:10])
    with pytest.raises(DataError, match='repeated'):
        warp_mesh(mesh, np.vstack([p, p[:1]]), np.vstack([p, p[:1]]))


def test_particle_error_map():
    mesh = pv.Sphere(radius=10.0)
    parts = np.asarray(mesh.points)[::5]
    errs = np.linalg.norm(parts, axis=1) * 0 + np.arange(len(parts)) % 3
    out = particle_error_map(mesh, parts, errs)
    assert np.allclose(out['particle_error'][::5], errs, atol=1e-6)
    assert out['particle_error'].min() >= 0 and out['particle_error'].max() <= 2


# --------------------------------------------------------------------------- 3D views


def _variance(img):
    return float(np.asarray(img, dtype=float).var())


def test_comparison_view_renders_a_non_blank_png_headless(tmp_path):
    bumped, _ = bumped_sphere()
    a, b, _ = symmetric_surface_distance(bumped, pv.Sphere(radius=10.0))
    p = vs.plot_comparison(a, b, true_particles=_fibonacci(30), off_screen=True, window_size=(400, 200))
    p.render()
    img = p.screenshot(str(tmp_path / 'cmp.png'), return_img=True)
    p.close()
    assert (tmp_path / 'cmp.png').stat().st_size > 1000
    assert img.shape[:2] == (200, 400) and _variance(img) > 50
    # both panels show something (the cameras are linked, so both are filled)
    assert _variance(img[:, :200]) > 50 and _variance(img[:, 200:]) > 50


def test_distance_view_uses_the_colour_map(tmp_path):
    bumped, _ = bumped_sphere()
    a = surface_distance(bumped, pv.Sphere(radius=10.0))
    p = vs.plot_distance(a, off_screen=True, window_size=(300, 300), title='bump')
    p.render()
    img = p.screenshot(return_img=True)
    p.close()
    colours = img.reshape(-1, 3)
    assert len(np.unique(colours, axis=0)) > 50
    vs.show(vs.plot_distance(a, off_screen=True, window_size=(200, 200)), screenshot=tmp_path / 's.png')
    assert (tmp_path / 's.png').is_file()


def test_select_backend(monkeypatch):
    for k in ('PYVISTA_JUPYTER_BACKEND', 'CI', 'JPY_SESSION_NAME', 'DISPLAY', 'WAYLAND_DISPLAY'):
        monkeypatch.delenv(k, raising=False)
    assert vs.select_backend('html') == 'html'
    monkeypatch.setattr(vs, '_in_kernel', lambda: True)
    monkeypatch.setenv('JPY_SESSION_NAME', 'nb.ipynb')
    assert vs.select_backend() == 'trame'
    monkeypatch.setitem(sys.modules, 'google.colab', object())
    assert vs.select_backend() == 'html'
    monkeypatch.setenv('CI', 'true')
    assert vs.select_backend() == 'static'
    monkeypatch.setenv('PYVISTA_JUPYTER_BACKEND', 'trame')
    assert vs.select_backend() == 'trame'
    monkeypatch.delenv('PYVISTA_JUPYTER_BACKEND')
    monkeypatch.delenv('CI')
    monkeypatch.delitem(sys.modules, 'google.colab')
    monkeypatch.delenv('JPY_SESSION_NAME')  # a kernel run by nbclient, no display
    monkeypatch.setattr(vs.sys, 'platform', 'linux')
    assert vs.select_backend() == 'static'


@pytest.mark.bad_input
def test_select_backend_rejects_unknown_names():
    with pytest.raises(ConfigError, match="Did you mean 'static'"):
        vs.select_backend('statc')


def test_3d_views_skip_the_vtk_wasm_download_unless_its_files_are_there(monkeypatch, tmp_path):
    from deepssm_nb.viz import surface as vsurf

    wasm = pytest.importorskip('trame_vtklocal.module.wasm')
    monkeypatch.delenv('VTK_WASM_DIR_OVERRIDE', raising=False)
    monkeypatch.setattr(wasm, 'has_required_files', lambda *a, **k: False)
    vsurf.prepare_environment()
    override = os.environ['VTK_WASM_DIR_OVERRIDE']
    assert Path(override).is_dir() and not any(Path(override).iterdir())  # nothing to copy, nothing to fetch
    monkeypatch.setenv('VTK_WASM_DIR_OVERRIDE', str(tmp_path))  # the user's own folder is kept
    vsurf.prepare_environment()
    assert os.environ['VTK_WASM_DIR_OVERRIDE'] == str(tmp_path)
    monkeypatch.delenv('VTK_WASM_DIR_OVERRIDE')
    monkeypatch.setattr(wasm, 'has_required_files', lambda *a, **k: True)  # downloaded before: used as it is
    vsurf.prepare_environment()
    assert 'VTK_WASM_DIR_OVERRIDE' not in os.environ
