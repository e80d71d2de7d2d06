"""Tests of the femur cohort builder, the cohort reader and the cohort views."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import pyvista as pv
import SimpleITK as sitk

from deepssm_nb import ConfigError, DataError, get_profile, read_particles, write_image, write_particles
from deepssm_nb.data import build_femur_cohort, femur, load_cohort, load_femur_cohort, meshops, synth_ct


def _array(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _volume_centroid(mesh: pv.PolyData) -> np.ndarray:
    """Centroid of the solid enclosed by a closed triangle mesh (signed tetrahedra)."""
    tri = np.asarray(mesh.points)[mesh.regular_faces]
    vol = np.einsum('ij,ij->i', tri[:, 0], np.cross(tri[:, 1], tri[:, 2]))
    return (vol[:, None] * tri.sum(axis=1)).sum(axis=0) / (4 * vol.sum())


# --------------------------------------------------------------------------- building


def test_smoke_cohort_builds_within_10_s(smoke_cohort, smoke_cohort_seconds):
    assert len(smoke_cohort) == 10
    assert smoke_cohort_seconds <= 10.0, f'the smoke cohort took {smoke_cohort_seconds:.1f} s to build'


def test_same_seed_gives_identical_files_serial_and_parallel(tmp_path, monkeypatch):
    kwargs = {'num_subjects': 3, 'num_particles': 64, 'spacing': 3.0, 'num_test': 1, 'seed': 0, 'progress': False}
    serial = build_femur_cohort(data_dir=tmp_path / 'a', processes=1, **kwargs)
    monkeypatch.setattr(femur, 'POOL_MIN_VOXELS', 0)  # force the worker pool for this small build
    parallel = build_femur_cohort(data_dir=tmp_path / 'b', processes=2, **kwargs)
    files_a = sorted(p.relative_to(serial.root) for p in serial.root.rglob('*') if p.is_file())
    files_b = sorted(p.relative_to(parallel.root) for p in parallel.root.rglob('*') if p.is_file())
    assert files_a == files_b and len(files_a) == 3 * 4 + 4
    for rel in files_a:
        assert (serial.root / rel).read_bytes() == (parallel.root / rel).read_bytes(), rel
    other = build_femur_cohort(data_dir=tmp_path / 'c', processes=1, **{**kwargs, 'seed': 1})
    assert read_particles(other.mean_particles).shape == (64, 3)
    assert not np.array_equal(read_particles(other.mean_particles), read_particles(serial.mean_particles))


def test_cache_is_reused_and_an_interrupted_build_resumes(tmp_path):
    kwargs = {
        'num_subjects': 3,
        'num_particles': 32,
        'spacing': 4.0,
        'num_test': 1,
        'seed': 3,
        'data_dir': tmp_path,
        'processes': 1,
        'progress': False,
    }
    cohort = build_femur_cohort(**kwargs)
    assert cohort.root.name == 'femur_n3_m32_s4.0_seed3'
    files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in cohort.root.rglob('*') if p.is_file()}
    t0 = time.perf_counter()
    again = build_femur_cohort(**kwargs)
    assert time.perf_counter() - t0 < 1.0
    assert {p: p.stat().st_mtime_ns for p in files} == {p: v[0] for p, v in files.items()}
    # Simulate an interrupted build: one image and cohort.json missing.
    lost = again[1].image
    lost.unlink()
    (again.root / 'cohort.json').unlink()
    resumed = build_femur_cohort(**kwargs)
    assert lost.read_bytes() == files[lost][1]
    untouched = resumed[0].image
    assert untouched.stat().st_mtime_ns == files[untouched][0]
    assert (resumed.root / 'cohort.json').read_bytes() == files[resumed.root / 'cohort.json'][1]


def test_load_femur_cohort_from_config(smoke_cohort):
    cfg = get_profile('smoke')
    cfg.data.data_dir = str(smoke_cohort.root.parent)
    cohort = load_femur_cohort(cfg.data)
    assert cohort.root == smoke_cohort.root
    assert cohort.ids() == smoke_cohort.ids()


@pytest.mark.bad_input
@pytest.mark.parametrize(
    'kwargs, name',
    [
        ({'num_subjects': 27}, 'num_subjects'),
        ({'num_subjects': 4, 'num_test': 4}, 'num_test'),
        ({'spacing': 0.0}, 'spacing'),
        ({'seed': -1}, 'seed'),
    ],
)
def test_build_rejects_bad_arguments(kwargs, name, tmp_path):
    with pytest.raises(ConfigError, match=name):
        build_femur_cohort(data_dir=tmp_path, progress=False, **kwargs)


# --------------------------------------------------------------------------- the cohort's content


def test_split_and_accessors(smoke_cohort):
    assert len(smoke_cohort.ids('train')) == 8 and len(smoke_cohort.ids('test')) == 2
    assert smoke_cohort.subset('test').ids() == smoke_cohort.ids('test')
    assert smoke_cohort.particles().shape == (10, 128, 3)
    assert smoke_cohort.particles('train').shape == (8, 128, 3)
    first = smoke_cohort[0]
    assert smoke_cohort[first.id] is first
    with pytest.raises(KeyError, match='Did you mean'):
        smoke_cohort[first.id + 'x']
    manifest = (smoke_cohort.root / 'manifest.csv').read_text().splitlines()
    assert manifest[0] == 'id,image,segmentation,mesh,particles,split,side'
    assert manifest[1].startswith(f'{first.id},images/{first.id}.nrrd,segmentations/{first.id}.nrrd,')
    assert read_particles(smoke_cohort.mean_particles).shape == (128, 3)
    assert pv.read(smoke_cohort.mean_mesh).n_open_edges == 0


def test_particles_lie_on_their_surface_and_above_their_cut(smoke_cohort):
    cuts = {s['id']: s for s in smoke_cohort.info['subjects']}
    for s in smoke_cohort:
        mesh = pv.read(s.mesh)
        assert mesh.n_open_edges == 0 and mesh.is_manifold and mesh.volume > 0
        particles = read_particles(s.particles, num_particles=128)
        _, closest = mesh.find_closest_cell(particles, return_closest_point=True)
        assert np.linalg.norm(closest - particles, axis=1).max() < 0.01, s.id
        height = (particles - cuts[s.id]['cut_point']) @ np.asarray(cuts[s.id]['cut_normal'])
        assert height.min() > 3.0, s.id  # particle faces lie >= 3 mm above


def test_particles_correspond_and_spread_evenly(smoke_cohort):
    from deepssm_nb.viz.cohort import aligned_particles

    aligned = aligned_particles(smoke_cohort)
    mean = aligned.mean(axis=0)
    rms = np.sqrt(((aligned - mean) ** 2).sum(axis=2).mean())
    shuffled = np.sqrt(((aligned - mean[np.random.default_rng(0).permutation(128)]) ** 2).sum(axis=2).mean())
    assert rms < 4.0 and shuffled > 10 * rms
    d = np.linalg.norm(mean[:, None] - mean[None], axis=2) + np.diag(np.full(128, np.inf))
    nearest = d.min(axis=1)
    assert nearest.min() > 0.6 * np.median(nearest)  # farthest-point sampling: no clumps


def test_segmentation_matches_mesh(smoke_cohort):
    for s in smoke_cohort:
        img = sitk.ReadImage(str(s.segmentation))
        seg = sitk.GetArrayFromImage(img)
        assert seg.dtype == np.uint8 and set(np.unique(seg)) == {0, 1}
        mesh = pv.read(s.mesh)
        volume = seg.sum() * np.prod(img.GetSpacing())
        assert abs(volume / mesh.volume - 1) < 0.02, s.id
        # [z, y, x] array order: the voxel centroid maps back onto the solid's centroid.
        centroid = img.TransformContinuousIndexToPhysicalPoint(np.argwhere(seg)[:, ::-1].mean(axis=0).tolist())
        assert np.linalg.norm(np.array(centroid) - _volume_centroid(mesh)) < 0.5, s.id


def test_images_are_ct_like_with_distractors(smoke_cohort):
    for s in smoke_cohort:
        image, seg = sitk.ReadImage(str(s.image)), sitk.ReadImage(str(s.segmentation))
        assert image.GetSize() == seg.GetSize() and image.GetOrigin() == seg.GetOrigin()
        arr, lab = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(seg) > 0
        assert arr.dtype == np.int16
        assert 150 < np.median(arr[lab]) < 700  # trabecular interior, cortex on the rim
        assert -200 < np.median(arr[~lab]) < 100  # mostly soft tissue
        assert np.count_nonzero(arr[~lab] > 800) > 2000  # pelvis and shaft: bone without label


def test_femur_position_varies_across_subjects(smoke_cohort):
    centroids = []
    for s in smoke_cohort:
        seg = _array(s.segmentation)
        centroids.append(np.argwhere(seg).mean(axis=0) * 2.0)  # image (voxel) coordinates in mm
    centroids = np.array(centroids)
    spread = np.sqrt(((centroids - centroids.mean(axis=0)) ** 2).sum(axis=1).mean())
    assert spread > 5.0
    angles = np.array([s['rotation_deg'] for s in smoke_cohort.info['subjects']])
    assert np.abs(angles).max() <= 10.0 and angles.std() > 2.0


def test_voxelizer_matches_analytic_sphere():
    sphere = pv.Sphere(radius=10.0, center=(0.3, -0.2, 0.1), theta_resolution=120, phi_resolution=120)
    grid = synth_ct.Grid(origin=np.array([-12.0, -12.0, -8.0]), spacing=0.5, shape=(33, 49, 49))  # cut at z=8
    mask = synth_ct.voxelize(np.asarray(sphere.points), sphere.regular_faces, grid)
    gx, gy, gz = grid.axis_coords()
    inside = ((gz[:, None, None] - 0.1) ** 2 + (gy[None, :, None] + 0.2) ** 2 + (gx[None, None] - 0.3) ** 2) < 99.6
    assert np.count_nonzero(mask != inside) < 0.01 * inside.sum()


def test_clip_and_cap_gives_closed_surface():
    sphere = pv.Sphere(radius=5.0, theta_resolution=30, phi_resolution=30).triangulate().clean()
    v, f = np.asarray(sphere.points, float), sphere.regular_faces
    nv, nf, kept = meshops.clip_and_cap(v, f, np.array([0.0, 0.0, 1.0]), np.array([0.0, 0.0, 1.0]))
    assert meshops.is_closed(nf) and np.all(nv[:, 2] >= 1.0 - 1e-9)
    assert np.array_equal(nv[nf[: len(kept)]], v[f[kept]])  # kept faces unchanged, listed first
    cap_volume = np.pi * (5.0 - 1.0) ** 2 * (3 * 5.0 - 4.0) / 3  # spherical cap of height 4
    assert abs(meshops.signed_volume(nv, nf) / cap_volume - 1) < 0.02


# --------------------------------------------------------------------------- reading folders


def _user_folder(root, n=3, m=10):
    """A small user cohort without manifest: 8^3 images and m particles per subject."""
    for i in range(n):
        write_image(root / 'images' / f's{i}.nrrd', sitk.Image(8, 8, 8, sitk.sitkInt16))
        write_particles(root / 'particles' / f's{i}.particles', np.random.default_rng(i).normal(size=(m, 3)))
    return root


def test_load_user_folder_without_manifest(tmp_path):
    cohort = load_cohort(_user_folder(tmp_path))
    assert cohort.ids() == ['s0', 's1', 's2'] and cohort.ids('train') == cohort.ids()
    assert cohort[0].mesh is None and cohort[0].segmentation is None and cohort.mean_mesh is None
    assert cohort.particles().shape == (3, 10, 3)


@pytest.mark.bad_input
def test_missing_folder_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere'):
        load_cohort(tmp_path / 'nowhere')
    with pytest.raises(DataError, match='holds no subjects'):
        load_cohort(tmp_path)


@pytest.mark.bad_input
def test_missing_partner(tmp_path):
    _user_folder(tmp_path)
    (tmp_path / 'particles' / 's1.particles').unlink()
    write_particles(tmp_path / 'particles' / 'extra.particles', np.zeros((10, 3)))
    with pytest.raises(DataError) as err:
        load_cohort(tmp_path)
    assert len(err.value.problems) == 3  # two unpaired files, then a manifest to start from
    assert 's1.nrrd' in str(err.value) and 'extra.particles' in str(err.value)
    proposal = err.value.problems[-1].splitlines()
    assert 'manifest.csv' in proposal[0] and proposal[1] == 'id,image,segmentation,mesh,particles,split,side'
    assert proposal[2] == 'extra,,,,particles/extra.particles,train,'


@pytest.mark.bad_input
def test_different_particle_counts(tmp_path):
    _user_folder(tmp_path)
    write_particles(tmp_path / 'particles' / 's2.particles', np.zeros((7, 3)))
    with pytest.raises(DataError, match=r's2\.particles" holds 7 particles; the other subjects hold 10'):
        load_cohort(tmp_path)


@pytest.mark.bad_input
def test_unreadable_and_non_3d_images(tmp_path):
    _user_folder(tmp_path)
    (tmp_path / 'images' / 's0.nrrd').write_bytes(b'this is not an image')
    write_image(tmp_path / 'images' / 's1.nrrd', sitk.Image(8, 8, sitk.sitkInt16))
    with pytest.raises(DataError) as err:
        load_cohort(tmp_path)
    assert len(err.value.problems) == 2
    assert 's0.nrrd" could not be read' in str(err.value)
    assert 's1.nrrd": image must be 3D; got a 2D image' in str(err.value)


@pytest.mark.bad_input
def test_nan_coordinates(tmp_path):
    _user_folder(tmp_path)
    (tmp_path / 'particles' / 's1.particles').write_text('1 2 3\n' * 9 + 'nan 0 0\n')
    with pytest.raises(DataError, match=r's1\.particles": particle 10 has a NaN'):
        load_cohort(tmp_path)


@pytest.mark.bad_input
def test_every_problem_is_reported_at_once(smoke_cohort, tmp_path):
    import shutil

    root = tmp_path / 'copy'
    shutil.copytree(smoke_cohort.root, root)
    ids = smoke_cohort.ids()
    (root / 'images' / f'{ids[0]}.nrrd').unlink()  # missing file
    (root / 'segmentations' / f'{ids[1]}.nrrd').write_bytes(b'garbage')  # unreadable
    (root / 'particles' / f'{ids[2]}.particles').write_text('0 0 0\n')  # wrong count
    lines = (root / 'manifest.csv').read_text().splitlines()
    lines[4] = lines[4].rsplit(',', 1)[0] + ',validation'  # bad split
    (root / 'manifest.csv').write_text('\n'.join(lines) + '\n')
    with pytest.raises(DataError) as err:
        load_cohort(root)
    message = str(err.value)
    assert len(err.value.problems) == 4
    for name in (f'{ids[0]}.nrrd', f'segmentations/{ids[1]}.nrrd', f'{ids[2]}.particles', 'validation'):
        assert name in message


# --------------------------------------------------------------------------- views


def test_slice_viewer_redraws_when_the_slider_moves(smoke_cohort):
    from deepssm_nb.viz.cohort import slice_viewer

    viewer = slice_viewer(smoke_cohort, 1, axis='coronal')
    before = np.array(viewer.artists['image'].get_array())
    viewer.slider.value = max(0, viewer.slider.value - 5)
    after = np.array(viewer.artists['image'].get_array())
    assert before.shape == after.shape and not np.array_equal(before, after)
    viewer.axis.value = 'axial'
    nz = _array(smoke_cohort[1].image).shape[0]
    assert viewer.slider.max == nz - 1
    assert viewer.artists['image'].get_array().shape == _array(smoke_cohort[1].image).shape[1:]


def test_cohort_plots(smoke_cohort):
    from matplotlib.figure import Figure

    from deepssm_nb.viz.cohort import plot_cohort_spread, plot_particle_sd, plot_subject_3d, plot_subject_slices

    assert isinstance(plot_cohort_spread(smoke_cohort), Figure)
    assert isinstance(plot_subject_slices(smoke_cohort, 0), Figure)
    for plotter in (plot_subject_3d(smoke_cohort, 0, off_screen=True), plot_particle_sd(smoke_cohort, off_screen=True)):
        assert isinstance(plotter, pv.Plotter) and len(plotter.renderer.actors) >= 2
        plotter.close()


@pytest.mark.skipif(os.environ.get('DEEPSSM_FULL_DATA_TEST') != '1', reason='set DEEPSSM_FULL_DATA_TEST=1')
def test_full_cohort_builds_within_90_s(tmp_path):
    t0 = time.perf_counter()
    build_femur_cohort(data_dir=tmp_path, progress=False)
    assert time.perf_counter() - t0 <= 90.0
