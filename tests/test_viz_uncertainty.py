"""The plots of Uncertain-DeepSSM: uncertainty on a surface, against the error, and by image condition."""

from __future__ import annotations

import os
import re
from typing import ClassVar

import numpy as np
import pytest

os.environ.setdefault('VTK_DEFAULT_OPENGL_WINDOW', 'vtkEGLRenderWindow')

import matplotlib.pyplot as plt
import pyvista as pv
from matplotlib.collections import PathCollection

from deepssm_nb import ConfigError, DataError
from deepssm_nb.viz.uncertainty import (
    MAX_PARTICLE_POINTS,
    pearson_r,
    plot_ood,
    plot_uncertainty,
    plot_uncertainty_vs_error,
    surface_values,
)


@pytest.fixture
def close_figures():
    yield
    plt.close('all')


def _r_in_title(fig) -> float:
    match = re.search(r'r = (-?\d+\.\d+|nan)', fig.axes[0].get_title())
    assert match, fig.axes[0].get_title()
    return float(match.group(1))


# --------------------------------------------------------------------------- pearson_r


def test_pearson_r_is_one_minus_one_and_nan_for_a_constant():
    x = np.arange(10.0)
    assert pearson_r(x, 3 * x + 1) == pytest.approx(1.0)
    assert pearson_r(x, -0.5 * x + 2) == pytest.approx(-1.0)
    assert np.isnan(pearson_r(x, np.full(10, 2.5)))
    assert np.isnan(pearson_r(np.ones(5), np.arange(5.0)))
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert pearson_r(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-12)


@pytest.mark.bad_input
def test_pearson_r_names_what_is_wrong():
    with pytest.raises(DataError, match=r'same shape.*\(4,\) and \(5,\)'):
        pearson_r(np.arange(4.0), np.arange(5.0))
    with pytest.raises(DataError, match='at least 3 points.*got 2'):
        pearson_r([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(DataError, match='y contains 1 NaN'):
        pearson_r([1.0, 2.0, 3.0], [1.0, np.nan, 3.0])
    with pytest.raises(DataError, match='x must be 1D'):
        pearson_r(np.ones((3, 2)), np.ones(3))


# --------------------------------------------------------------------------- surface_values


def test_surface_values_pass_through_the_particles_and_keep_constants():
    sphere = pv.Sphere()
    before = sphere.copy()
    idx = np.arange(0, sphere.n_points, 7)
    values = np.linspace(0.2, 3.0, idx.size)
    out = surface_values(sphere, sphere.points[idx], values)
    assert out is not sphere and out.n_points == sphere.n_points
    np.testing.assert_array_equal(out['uncertainty_mm'][idx], values)
    others = np.setdiff1d(np.arange(sphere.n_points), idx)
    assert values.min() <= out['uncertainty_mm'][others].min() <= out['uncertainty_mm'][others].max() <= values.max()
    # the input is not modified
    assert 'uncertainty_mm' not in sphere.point_data and sphere.array_names == before.array_names
    np.testing.assert_array_equal(sphere.points, before.points)

    flat = surface_values(sphere, sphere.points[idx], np.full(idx.size, 1.25), name='sd', k=3, power=1.0)
    np.testing.assert_allclose(flat['sd'], 1.25, rtol=0, atol=1e-12)


def test_surface_values_weights_by_inverse_distance():
    mesh = pv.PolyData(np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    particles = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
    out = surface_values(mesh, particles, [1.0, 5.0], k=2, power=2.0)
    # distances 1 and 2: weights 1 and 1/4
    assert out['uncertainty_mm'][0] == pytest.approx((1.0 + 5.0 / 4) / 1.25)
    assert out['uncertainty_mm'][1] == 1.0  # on a particle
    nearest = surface_values(mesh, particles, [1.0, 5.0], k=1)
    np.testing.assert_array_equal(nearest['uncertainty_mm'], [1.0, 1.0])
    # k above M uses all particles
    np.testing.assert_allclose(
        surface_values(mesh, particles, [1.0, 5.0], k=50)['uncertainty_mm'], out['uncertainty_mm']
    )


@pytest.mark.bad_input
def test_surface_values_names_what_is_wrong():
    sphere = pv.Sphere()
    pts = sphere.points[:10]
    with pytest.raises(DataError, match=r'particles must have shape \(any, 3\); got \(10, 2\)'):
        surface_values(sphere, pts[:, :2], np.ones(10))
    with pytest.raises(DataError, match='particles has 10 rows, values 9'):
        surface_values(sphere, pts, np.ones(9))
    with pytest.raises(DataError, match='values must be 1D'):
        surface_values(sphere, pts, np.ones((10, 1)))
    with pytest.raises(DataError, match='values contains 1 NaN'):
        surface_values(sphere, pts, np.r_[np.ones(9), np.inf])
    with pytest.raises(ConfigError, match=r'k must be in \[1'):
        surface_values(sphere, pts, np.ones(10), k=0)
    with pytest.raises(ConfigError, match='power must be in'):
        surface_values(sphere, pts, np.ones(10), power=0)
    with pytest.raises(DataError, match='mesh must be a pyvista.PolyData'):
        surface_values(np.zeros((4, 3)), pts, np.ones(10))


# --------------------------------------------------------------------------- plot_uncertainty


def _subject():
    """A sphere with a hot spot at the north pole, both as its error and as its predicted uncertainty."""
    error = pv.Sphere(radius=10.0, theta_resolution=40, phi_resolution=40)
    z = np.asarray(error.points)[:, 2] / 10.0
    error['distance'] = 2.0 * np.clip(z, 0, None) ** 2
    idx = np.arange(0, error.n_points, 5)
    unc = surface_values(error, error.points[idx], 3.0 * np.clip(z[idx], 0, None) ** 2 + 0.1)
    return error, unc, error.points[idx]


def _scalar_ranges(p):
    ranges = []
    for renderer in p.renderers:
        ranges += [
            tuple(a.mapper.scalar_range)
            for a in renderer.actors.values()
            if getattr(a, 'mapper', None) is not None and getattr(a.mapper, 'scalar_visibility', False)
        ]
    return ranges


def test_plot_uncertainty_shares_one_colour_range_and_renders(tmp_path):
    error, unc, pts = _subject()
    p = plot_uncertainty(error, unc, particles=pts, off_screen=True, window_size=(400, 200))
    try:
        assert len(p.renderers) == 2
        both = np.concatenate([error['distance'], unc['uncertainty_mm']])
        high = float(np.percentile(both, 99))
        assert high > float(np.percentile(error['distance'], 99))  # the uncertainty sets the top here
        ranges = _scalar_ranges(p)
        assert len(ranges) == 2
        for lo, hi in ranges:
            assert lo == 0.0 and hi == pytest.approx(high)
        assert len(p.scalar_bars) == 2  # each panel its own bar
        p.render()
        img = p.screenshot(str(tmp_path / 'unc.png'), return_img=True)
    finally:
        p.close()
    assert (tmp_path / 'unc.png').stat().st_size > 1000
    assert img.shape[:2] == (200, 400)
    assert img[:, :200].astype(float).var() > 50 and img[:, 200:].astype(float).var() > 50


def test_plot_uncertainty_takes_a_given_colour_range():
    error, unc, _ = _subject()
    p = plot_uncertainty(error, unc, clim=(0.5, 4.0), off_screen=True, window_size=(200, 100))
    try:
        assert _scalar_ranges(p) == [(0.5, 4.0), (0.5, 4.0)]
    finally:
        p.close()


@pytest.mark.bad_input
def test_plot_uncertainty_names_the_missing_array():
    error, unc, _ = _subject()
    with pytest.raises(
        DataError, match=r"uncertainty_mesh has no point array 'sigma'.*\['Normals', 'distance', 'uncertainty_mm'\]"
    ):
        plot_uncertainty(error, unc, uncertainty_scalars='sigma', off_screen=True)
    with pytest.raises(DataError, match=r"error_mesh has no point array 'distance'.*\['Normals'"):
        plot_uncertainty(pv.Sphere(), unc, off_screen=True)
    with pytest.raises(ConfigError, match='clim must be two finite numbers with low < high'):
        plot_uncertainty(error, unc, clim=(2.0, 1.0), off_screen=True)


# --------------------------------------------------------------------------- plot_uncertainty_vs_error


def test_scatter_reports_the_pearson_r_and_draws_line_and_diagonal(close_figures):
    rng = np.random.default_rng(0)
    x = rng.uniform(0.2, 2.0, 40)
    y = 2 * x + rng.normal(0, 0.2, 40)
    fig = plot_uncertainty_vs_error(x, y, labels=[f'f{i}' for i in range(40)])
    ax = fig.axes[0]
    assert _r_in_title(fig) == pytest.approx(pearson_r(x, y), abs=0.005)
    assert 'n = 40' in ax.get_title()
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(points) == 1 and len(points[0].get_offsets()) == 40
    assert len(ax.texts) == 40 and ax.texts[0].get_text() == 'f0'
    lines = {line.get_label(): line for line in ax.get_lines()}
    diagonal = next(v for k, v in lines.items() if k.startswith('y = x'))
    assert diagonal.get_linestyle() == '--'
    np.testing.assert_allclose(diagonal.get_xdata(), diagonal.get_ydata())
    fit = next(v for k, v in lines.items() if k.startswith('least squares'))
    slope = np.diff(fit.get_ydata()) / np.diff(fit.get_xdata())
    assert slope[0] == pytest.approx(np.polyfit(x, y, 1)[0])
    assert slope[0] == pytest.approx(2.0, abs=0.2)


def test_particle_scatter_draws_at_most_20000_points(close_figures):
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 1, (100, 500))
    y = x + rng.normal(0, 0.3, x.shape)
    fig = plot_uncertainty_vs_error(x, y, kind='particle')
    points = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    assert MAX_PARTICLE_POINTS == 20_000
    assert len(points) == 1 and len(points[0].get_offsets()) == 20_000
    assert points[0].get_alpha() < 1
    assert _r_in_title(fig) == pytest.approx(pearson_r(x.ravel(), y.ravel()), abs=0.005)  # from all 50,000
    # the same subset on every call
    again = plot_uncertainty_vs_error(x, y, kind='particle')
    offsets = next(c for c in again.axes[0].collections if isinstance(c, PathCollection)).get_offsets()
    np.testing.assert_array_equal(offsets, points[0].get_offsets())


def test_scatter_draws_on_given_axes(close_figures):
    fig, ax = plt.subplots()
    assert plot_uncertainty_vs_error([1.0, 2.0, 3.0], [1.0, 2.5, 2.9], ax=ax) is fig
    assert 'r = ' in ax.get_title()


def test_scatter_of_two_femurs_is_drawn_without_a_correlation(close_figures):
    fig = plot_uncertainty_vs_error([1.0, 2.0], [1.5, 1.0], labels=['a', 'b'])
    ax = fig.axes[0]
    assert 'Pearson r undefined (3 points needed) (n = 2 femurs)' in ax.get_title()
    assert not any(line.get_label().startswith('least squares') for line in ax.get_lines())
    assert sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection)) == 2


@pytest.mark.bad_input
def test_scatter_names_what_is_wrong(close_figures):
    with pytest.raises(DataError, match=r'uncertainty_mm and error_mm must have the same shape.*\(5,\) and \(4,\)'):
        plot_uncertainty_vs_error(np.ones(5), np.ones(4))
    with pytest.raises(DataError, match='at least one point to draw; got 0'):
        plot_uncertainty_vs_error([], [])
    with pytest.raises(DataError, match='error_mm contains 1 NaN'):
        plot_uncertainty_vs_error([1.0, 2.0, 3.0], [1.0, np.nan, 2.0])
    with pytest.raises(ConfigError, match="kind must be one of.*Did you mean 'particle'"):
        plot_uncertainty_vs_error([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], kind='particles')
    with pytest.raises(ConfigError, match='labels must hold one text per point'):
        plot_uncertainty_vs_error([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], labels=['a', 'b'])
    with pytest.raises(ConfigError, match='femur points only'):
        plot_uncertainty_vs_error([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], labels=['a', 'b', 'c'], kind='particle')


# --------------------------------------------------------------------------- plot_ood


def test_plot_ood_draws_one_column_per_condition_and_the_threshold(close_figures):
    rng = np.random.default_rng(3)
    scores = {
        'clean': rng.uniform(0.3, 0.5, 12),
        'noise': rng.uniform(0.5, 0.9, 12),
        'blur': rng.uniform(0.4, 0.7, 12),
        'shift': rng.uniform(0.6, 1.2, 12),
        'invert': rng.uniform(1.0, 2.0, 12),
        'no_femur': rng.uniform(1.5, 3.0, 12),
    }
    fig = plot_ood(scores, threshold=0.8)
    ax = fig.axes[0]
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(points) == 6
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert [t.split('\n')[0] for t in ticks] == list(scores)
    assert ticks[0] == 'clean\n0/12 above' and ticks[-1] == 'no_femur\n12/12 above'
    for i, (col, values) in enumerate(zip(points, scores.values())):
        offsets = col.get_offsets()
        np.testing.assert_array_equal(offsets[:, 1], values)
        assert np.all(np.abs(offsets[:, 0] - i) < 0.3)
    threshold = [line for line in ax.get_lines() if line.get_label().startswith('uncertain above')]
    assert len(threshold) == 1 and threshold[0].get_linestyle() == '--'
    np.testing.assert_allclose(threshold[0].get_ydata(), 0.8)
    medians = [line for line in ax.get_lines() if line not in threshold]
    np.testing.assert_allclose([m.get_ydata()[0] for m in medians], [np.median(v) for v in scores.values()])
    # the jitter is the same on every call
    again = [c for c in plot_ood(scores, threshold=0.8).axes[0].collections if isinstance(c, PathCollection)]
    np.testing.assert_array_equal(again[2].get_offsets(), points[2].get_offsets())


def test_plot_ood_of_feature_distances_is_labelled_without_a_unit(close_figures):
    fig = plot_ood({'clean': [3.0, 4.0], 'invert': [40.0]}, threshold=5.5, score='feature_distance')
    ax = fig.axes[0]
    assert ax.get_ylabel() == 'feature distance from the training images'
    assert [line.get_label() for line in ax.get_lines()][-1] == 'uncertain above 5.50'
    assert ax.get_xticklabels()[1].get_text() == 'invert\n1/1 above'
    with pytest.raises(ConfigError, match='score'):
        plot_ood({'clean': [1.0]}, score='distance')


def test_plot_ood_without_threshold_has_plain_labels(close_figures):
    fig = plot_ood({'clean': [0.1, 0.2], 'blur': [0.4]})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ['clean', 'blur']
    assert not [line for line in ax.get_lines() if line.get_label().startswith('uncertain')]


@pytest.mark.bad_input
def test_plot_ood_names_what_is_wrong(close_figures):
    with pytest.raises(DataError, match='scores is empty'):
        plot_ood({})
    with pytest.raises(DataError, match=r"scores\['blur'\] is empty"):
        plot_ood({'clean': [0.1], 'blur': []})
    with pytest.raises(DataError, match=r"scores\['noise'\] contains 1 NaN"):
        plot_ood({'noise': [0.1, np.nan]})
    with pytest.raises(ConfigError, match='scores must be a dict'):
        plot_ood([0.1, 0.2])
    with pytest.raises(ConfigError, match='threshold must be a number'):
        plot_ood({'clean': [0.1]}, threshold=float('nan'))


# --------------------------------------------------------------------------- the viewer widget


class _FakeAnalysis:
    """Two femurs; the uncertainty of each kind is the sphere's hot spot times a kind factor."""

    FACTORS: ClassVar[dict[str, float]] = {'total_mm': 1.0, 'aleatoric_mm': 0.5, 'epistemic_mm': 0.25}

    def __init__(self):
        self.ids = ['a', 'b']
        self.calls = []

    def meshes(self, analysis, subject_id, kind='total_mm'):
        self.calls.append((subject_id, kind))
        error, unc, _ = _subject()
        unc['uncertainty_mm'] = unc['uncertainty_mm'] * self.FACTORS[kind] * (2.0 if subject_id == 'b' else 1.0)
        return error, unc


def test_viewer_redraws_on_every_change_with_the_chosen_kind(monkeypatch):
    from deepssm_nb.viz.uncertainty import UncertaintyViewer

    monkeypatch.setenv('PYVISTA_JUPYTER_BACKEND', 'static')
    ua = _FakeAnalysis()
    viewer = UncertaintyViewer(ua, analysis=None, subject='b', kind='aleatoric_mm')
    assert ua.calls == [('b', 'aleatoric_mm')]
    assert viewer.view.value[:8] == b'\x89PNG\r\n\x1a\n'  # the static view is a picture
    first = viewer.view.value
    viewer.kind.value = 'epistemic_mm'
    viewer.subject.value = 'a'
    assert ua.calls[1:] == [('b', 'epistemic_mm'), ('a', 'epistemic_mm')]
    assert viewer.view.value != first
    assert [r for r in _scalar_ranges(viewer.plotter)][1][1] == pytest.approx(
        float(np.percentile(np.concatenate([_subject()[0]['distance'], _subject()[1]['uncertainty_mm'] * 0.25]), 99))
    )
    viewer.plotter.close()


@pytest.mark.bad_input
def test_viewer_names_a_bad_subject_and_kind():
    from deepssm_nb.viz.uncertainty import UncertaintyViewer

    with pytest.raises(
        DataError, match=r"subject 'c' is not a test femur of this analysis; expected one of \['a', 'b'\]"
    ):
        UncertaintyViewer(_FakeAnalysis(), None, subject='c')
    with pytest.raises(ConfigError, match="kind must be one of.*got 'total'"):
        UncertaintyViewer(_FakeAnalysis(), None, kind='total')
