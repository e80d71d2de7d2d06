"""analyze_results on a synthetic ellipsoid cohort, the report and the 3D views of the result."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest

os.environ.setdefault('VTK_DEFAULT_OPENGL_WINDOW', 'vtkEGLRenderWindow')

import pyvista as pv
import SimpleITK as sitk

from deepssm_nb import DataError
from deepssm_nb.analyze import analyze_results, load_analysis
from deepssm_nb.io import write_particles
from deepssm_nb.viz import surface as vs

R = 10.0
AXES = {'b_subject': (1.3, 1.0, 0.8), 'a_subject': (0.9, 1.2, 1.1)}  # sorted order differs from creation order
CENTERS = {'b_subject': (40.0, -12.0, 7.0), 'a_subject': (-25.0, 30.0, 60.0)}


def _fibonacci(n):
    i = np.arange(n) + 0.5
    phi, theta = np.arccos(1 - 2 * i / n), np.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)


def _segmentation(axes, center, spacing=1.0):
    half = R * max(axes) + 4
    origin = np.asarray(center) - half
    n = int(np.ceil(2 * half / spacing)) + 1
    z, y, x = np.meshgrid(*[np.arange(n)] * 3, indexing='ij')
    phys = origin + spacing * np.stack([x, y, z], axis=-1)
    inside = np.linalg.norm((phys - center) / (R * np.asarray(axes)), axis=-1) <= 1
    img = sitk.GetImageFromArray(inside.astype(np.uint8))
    img.SetOrigin(origin.tolist())
    img.SetSpacing((spacing,) * 3)
    return img


@pytest.fixture(scope='module')
def cohort(tmp_path_factory):
    """Truth segmentations, true particles, a perfect and a too-small prediction, and two baselines."""
    root = tmp_path_factory.mktemp('cohort')
    unit = _fibonacci(96)
    for folder in ('seg', 'true', 'pred', 'mean_shape', 'pca_floor'):
        (root / folder).mkdir()
    for sid, axes in AXES.items():
        c = np.asarray(CENTERS[sid])
        sitk.WriteImage(_segmentation(axes, c), str(root / 'seg' / f'{sid}.nrrd'))
        truth = c + R * unit * axes
        write_particles(root / 'true' / f'{sid}.particles', truth)
        write_particles(root / 'pca_floor' / f'{sid}.particles', truth)
        scale = 1.0 if sid == 'a_subject' else 0.85  # b's prediction is 15 % too small
        write_particles(root / 'pred' / f'{sid}.particles', c + scale * R * unit * axes)
        write_particles(root / 'mean_shape' / f'{sid}.particles', c + R * unit)
    mean = pv.Sphere(radius=R, theta_resolution=60, phi_resolution=60)
    mean.save(root / 'mean.vtk')
    write_particles(root / 'mean.particles', R * unit)
    return root


@pytest.fixture(scope='module')
def result(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp('analysis')
    return analyze_results(
        out,
        cohort / 'seg',
        cohort / 'pred',
        cohort / 'mean',
        baselines={'mean_shape': cohort / 'mean_shape', 'pca_floor': cohort / 'pca_floor'},
        particles_dir=cohort / 'true',
        progress=False,
    )


def test_subjects_are_paired_by_id_and_errors_make_sense(result):
    assert result.ids == ['a_subject', 'b_subject']
    assert result.methods == ['deepssm', 'mean_shape', 'pca_floor']
    # a's prediction is the true ellipsoid: only meshing and warp error remain
    assert result.value('a_subject', 'deepssm') < 0.25
    assert result.value('a_subject', 'deepssm', 'particle_rmse') < 1e-6
    # b's is 15 % too small: about 0.15 * R * axes away
    assert 0.8 < result.value('b_subject', 'deepssm') < 1.6
    assert result.value('b_subject', 'deepssm', 'hausdorff') == pytest.approx(0.15 * R * 1.3, rel=0.15)
    assert result.value('b_subject', 'pca_floor') < 0.25
    assert result.value('b_subject', 'mean_shape') > 1.0


def test_summary_and_ratios(result):
    s = json.loads((result.root / 'summary.json').read_text())
    dm, ms, pf = (s['methods'][m]['mean'] for m in ('deepssm', 'mean_shape', 'pca_floor'))
    assert s['ratio_to_mean_shape'] == pytest.approx(dm / ms)
    assert s['ratio_to_pca_floor'] == pytest.approx(dm / pf)
    assert s['mean_surface_distance_mm'] == pytest.approx(dm) and s['pca_floor_mm'] == pytest.approx(pf)
    assert s['ranking'] == {'best': 'a_subject', 'median': 'a_subject', 'worst': 'b_subject'}
    report = result.report()
    assert 'DeepSSM / mean shape' in report and f'{s["ratio_to_pca_floor"]:.2f}' in report
    assert 'a_subject' in repr(result.table()) and '<table>' in result.table()._repr_html_()


def test_output_files(result):
    with (result.root / 'distances.csv').open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and {'mean', 'pred_to_true_p95', 'true_to_pred_hausdorff', 'particle_rmse'} <= set(rows[0])
    true_mesh, pred_mesh = result.meshes('b_subject')
    assert 'distance' in true_mesh.point_data and 'distance' in pred_mesh.point_data
    assert float(np.max(pred_mesh['distance'])) == pytest.approx(
        result.value('b_subject', 'deepssm', 'pred_to_true_hausdorff'), rel=1e-5
    )
    _, points = result.particle_error()
    assert points.n_points == 96 and set(result.methods) <= set(points.point_data.keys())
    assert np.allclose(points['pca_floor'], 0, atol=1e-6)
    again = load_analysis(result.root)
    assert again.summary == json.loads(json.dumps(result.summary)) and len(again.rows) == 6
    assert again.value('b_subject', 'mean_shape', 'p95') == pytest.approx(
        result.value('b_subject', 'mean_shape', 'p95'), rel=1e-5
    )


def test_mean_prefix_dense_sparse_and_subject_subset(cohort, tmp_path):
    pv.read(cohort / 'mean.vtk').save(tmp_path / 'm_dense.vtk')
    (tmp_path / 'm_sparse.particles').write_text((cohort / 'mean.particles').read_text())
    res = analyze_results(
        tmp_path / 'out', cohort / 'seg', cohort / 'pred', tmp_path / 'm', subject_ids=['b_subject'], progress=False
    )
    assert res.ids == ['b_subject'] and res.methods == ['deepssm'] and res.summary['particle_rmse_mm'] is None


@pytest.mark.bad_input
def test_unpaired_files_are_reported_together(cohort, tmp_path):
    pred = tmp_path / 'pred'
    pred.mkdir()
    (pred / 'a_subject.particles').write_text((cohort / 'pred' / 'a_subject.particles').read_text())
    (pred / 'ghost.particles').write_text((cohort / 'pred' / 'a_subject.particles').read_text())
    with pytest.raises(DataError) as err:
        analyze_results(tmp_path / 'out', cohort / 'seg', pred, cohort / 'mean', progress=False)
    msg = str(err.value)
    assert 'b_subject' in msg and 'ghost' in msg and '2 problems' in msg


@pytest.mark.bad_input
def test_missing_mean_and_wrong_particle_count(cohort, tmp_path):
    with pytest.raises(FileNotFoundError, match='mean_prefix'):
        analyze_results(tmp_path / 'o', cohort / 'seg', cohort / 'pred', tmp_path / 'nomean', progress=False)
    pred = tmp_path / 'pred'
    pred.mkdir()
    for sid in AXES:
        write_particles(pred / f'{sid}.particles', np.random.default_rng(0).normal(size=(50, 3)))
    with pytest.raises(DataError, match='expected 96'):
        analyze_results(tmp_path / 'o', cohort / 'seg', pred, cohort / 'mean', progress=False)


def test_subject_and_particle_error_views_render_headless(result):
    p = vs.plot_subjects(result, off_screen=True, window_size=(300, 450))
    p.render()
    img = p.screenshot(return_img=True)
    p.close()
    assert img.shape[:2] == (450, 300)
    for row in range(3):  # every row (best, median, worst) shows a surface
        assert np.asarray(img[row * 150 : (row + 1) * 150], dtype=float).var() > 50
    p = vs.plot_particle_error(result, off_screen=True, window_size=(450, 200))
    p.render()
    img = p.screenshot(return_img=True)
    p.close()
    assert all(np.asarray(img[:, k * 150 : (k + 1) * 150], dtype=float).var() > 50 for k in range(3))


def test_on_the_smoke_femur_cohort(smoke_cohort, tmp_path):
    """True particles as 'predictions': what is left is meshing and warping error, well under a voxel (2 mm)."""
    ids = smoke_cohort.ids('test')
    seg_dir = smoke_cohort[ids[0]].segmentation.parent
    part_dir = smoke_cohort[ids[0]].particles.parent
    res = analyze_results(
        tmp_path, seg_dir, part_dir, smoke_cohort.root / 'mean', particles_dir=part_dir, subject_ids=ids, progress=False
    )
    assert res.ids == ids
    for sid in ids:
        assert res.value(sid, 'deepssm', 'mean') < 0.5
        assert res.value(sid, 'deepssm', 'particle_rmse') < 1e-6
    truth, pred = res.meshes(ids[0])
    mesh = pv.read(smoke_cohort[ids[0]].mesh)
    assert np.allclose(truth.center, mesh.center, atol=1.0)  # segmentation meshed in the image's frame
    assert pred.n_points == pv.read(smoke_cohort.mean_mesh).n_points


def test_per_femur_scatter_counts_the_wins(result):
    from deepssm_nb.viz.accuracy import per_femur_errors, plot_against_mean_shape

    labels, base, deep = per_femur_errors(result)
    assert labels == result.ids
    np.testing.assert_allclose(deep, [result.value(i, 'deepssm') for i in labels])
    np.testing.assert_allclose(base, [result.value(i, 'mean_shape') for i in labels])
    fig = plot_against_mean_shape(result)
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    n_wins = int(np.sum(deep < base))
    assert legend[1] == f'deepssm better: {n_wins} of {len(labels)}'
    assert legend[2] == f'mean_shape better: {len(labels) - n_wins} of {len(labels)}'
    assert len(ax.texts) == len(labels)  # few femurs: each one is named
    # benchmark rows: one point per femur and seed
    rows = [
        {'id': 'a', 'seed': s, 'method': m, 'mean': v}
        for s in (0, 1)
        for m, v in (('deepssm', 0.5 + s), ('mean_shape', 1.0))
    ]
    labels, base, deep = per_femur_errors(rows)
    assert labels == ['a (seed 0)', 'a (seed 1)'] and list(deep) == [0.5, 1.5]
    with pytest.raises(
        ValueError,
        match=r"no femur has both 'deepssm' and 'pca_floor_all'.*\['deepssm', "
        r"'mean_shape'\]",
    ):
        per_femur_errors(rows, baseline='pca_floor_all')
