"""Plots of Uncertain-DeepSSM: the uncertainty a network predicts for each particle, next to its actual error.

Uncertain-DeepSSM predicts, with every shape, one standard deviation per particle, in mm: how far the network
expects that particle to be from the truth (:mod:`deepssm_nb.uncertainty`). On a test femur the actual error is
known, so the two can be put side by side:

* :func:`surface_values` spreads the M per-particle values onto the vertices of a surface, so that they can be
  drawn as a heat map;
* :func:`plot_uncertainty` shows one femur twice, coloured by its actual error and by its predicted uncertainty,
  with one colour range for both: the same colour means the same number of mm on either side;
* :func:`plot_uncertainty_vs_error` puts each femur (or each particle) at its predicted uncertainty (x) and actual
  error (y), with the least-squares line, the diagonal ``y = x`` and the Pearson correlation ``r``;
* :func:`plot_ood` shows the mean uncertainty of images by condition (clean, noisy, blurred, shifted, inverted, no
  femur at all), with the threshold above which a prediction is flagged as not to be trusted;
* :func:`pearson_r` is the correlation used by the scatter plot and by the benchmark.

How to read them: a useful uncertainty is high where the error is high. On the two surfaces the hot regions
coincide; in the scatter plot the points lie along a rising line and ``r`` is near 1. Points on the diagonal mean
the uncertainty also has the right size (1 mm predicted, 1 mm made); points above it mean the network is
over-confident, below it under-confident. A flat cloud (``r`` near 0) means the uncertainty says nothing about
which femur or which region to distrust. Out of distribution, the uncertainty of a good model rises with how far an
image is from the training images, so the columns of :func:`plot_ood` climb above the threshold.

Example:
    >>> import numpy as np, pyvista as pv
    >>> sphere = pv.Sphere()
    >>> idx = np.arange(0, sphere.n_points, 10)
    >>> mesh = surface_values(sphere, sphere.points[idx], np.linspace(0.1, 1.0, idx.size))
    >>> float(mesh['uncertainty_mm'][idx[-1]])
    1.0
    >>> round(pearson_r([1.0, 2.0, 3.0, 4.0], [2.0, 4.5, 5.5, 8.0]), 3)
    0.988
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._validation import ConfigError, DataError, check_array, check_in_range, look_up_option
from .surface import BAR_TITLE, _add_heatmap, _clim, _face_camera, _new_plotter

__all__ = [
    'UncertaintyViewer',
    'pearson_r',
    'plot_ood',
    'plot_uncertainty',
    'plot_uncertainty_vs_error',
    'surface_values',
]

KINDS = ('femur', 'particle')
MAX_PARTICLE_POINTS = 20_000  # points drawn by the particle scatter; r and the line use all of them
SEED = 0  # the particle subsample and the jitter of plot_ood are the same on every call


# --------------------------------------------------------------------------- numbers


def _check_pair(
    x: Any, y: Any, *, names: tuple[str, str], ndim: int | None = 1, min_points: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Two finite arrays of the same shape with at least ``min_points`` values, raveled."""
    a = check_array(x, name=names[0], ndim=ndim)
    b = check_array(y, name=names[1], ndim=ndim)
    if a.shape != b.shape:
        raise DataError(
            f'{names[0]} and {names[1]} must have the same shape (one value each per point); '
            f'got {a.shape} and {b.shape}.'
        )
    if a.size < min_points:
        need = f'{min_points} points for a correlation' if min_points >= 3 else 'one point to draw'
        raise DataError(f'{names[0]} and {names[1]} must hold at least {need}; got {a.size}.')
    return a.ravel(), b.ravel()


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if np.ptp(x) == 0 or np.ptp(y) == 0:  # a constant input has no correlation
        return float('nan')
    from scipy.stats import pearsonr

    return float(np.clip(pearsonr(x, y).statistic, -1.0, 1.0))


def pearson_r(x: Any, y: Any) -> float:
    """The Pearson correlation of two samples.

    Args:
        x: (N,) finite values, N >= 3 (e.g. the predicted uncertainty of N femurs, mm).
        y: (N,) finite values (e.g. their actual errors, mm).

    Returns:
        ``r`` in [-1, 1]; NaN when ``x`` or ``y`` is constant (the correlation is undefined).

    Raises:
        DataError: ``x`` or ``y`` is not 1-D or holds NaN or infinite values, the lengths differ, or N < 3.
    """
    a, b = _check_pair(x, y, names=('x', 'y'))
    return _pearson(a, b)


# --------------------------------------------------------------------------- surfaces


def _check_mesh(mesh: Any, *, name: str) -> np.ndarray:
    points = getattr(mesh, 'points', None)
    if points is None or not hasattr(mesh, 'point_data'):
        raise DataError(f'{name} must be a pyvista.PolyData surface; got {type(mesh).__name__}.')
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or points.shape[0] == 0:
        raise DataError(f'{name} has no vertices; expected a surface with at least one point.')
    return points


def surface_values(
    mesh: Any,
    particles: Any,
    values: Any,
    *,
    name: str = 'uncertainty_mm',
    k: int = 8,
    power: float = 2.0,
):
    """Per-particle values spread onto the vertices of a surface, by inverse-distance weighting.

    Each vertex gets the mean of the values of its ``k`` nearest particles, weighted by ``1 / d**power`` (``d`` the
    distance from the vertex to the particle). A vertex that coincides with a particle takes that particle's value
    exactly (the mean value, where several particles coincide there), so the map passes through the particles.

    Args:
        mesh: ``pv.PolyData`` surface with V vertices (e.g. the predicted femur, :func:`deepssm_nb.surface.warp_mesh`).
        particles: (M, 3) particle positions, mm, in the frame of ``mesh``.
        values: (M,) one finite value per particle (e.g. the predicted standard deviation, mm).
        name: The point array added to the copy.
        k: Nearest particles per vertex (at most M are used); ``k=1`` gives the value of the nearest particle.
        power: Exponent of the distance in the weights, > 0; larger values make the map follow the nearest
            particle more closely.

    Returns:
        A copy of ``mesh`` with the (V,) point array ``name``; ``mesh`` itself is not modified.

    Raises:
        DataError: ``mesh`` has no vertices, ``particles`` is not (M, 3) or ``values`` not (M,) with the same M, or
            either holds NaN or infinite values.
        ConfigError: ``k`` is not an integer >= 1, ``power`` not a number > 0 or ``name`` not a non-empty string.
    """
    vertices = _check_mesh(mesh, name='mesh')
    pts = check_array(particles, name='particles', shape=(None, 3))
    vals = check_array(values, name='values', ndim=1)
    if vals.shape[0] != pts.shape[0]:
        raise DataError(
            f'values must hold one value per particle: particles has {pts.shape[0]} rows, values {vals.shape[0]}.'
        )
    if pts.shape[0] == 0:
        raise DataError('particles is empty; expected at least one particle, shape (M, 3).')
    k = int(check_in_range(k, name='k', low=1, integer=True))
    power = float(check_in_range(power, name='power', low=0, low_inclusive=False))
    if not isinstance(name, str) or not name:
        raise ConfigError(f'name must be a non-empty string; got {name!r}.')

    from scipy.spatial import cKDTree

    kk = min(k, pts.shape[0])
    dist, idx = cKDTree(pts).query(vertices, k=kk)
    dist, idx = dist.reshape(len(vertices), kk), idx.reshape(len(vertices), kk)
    neighbour = vals[idx]
    scale = max(float(np.ptp(np.vstack([vertices, pts]), axis=0).max()), 1.0)
    at_particle = dist <= 1e-9 * scale
    hit = at_particle[:, 0]  # distances are sorted: the first neighbour is the closest
    weights = np.empty_like(dist)
    weights[~hit] = 1.0 / dist[~hit] ** power
    weights[hit] = at_particle[hit]  # only the coinciding particles count
    out = mesh.copy(deep=True)
    out.point_data[name] = (weights * neighbour).sum(axis=1) / weights.sum(axis=1)
    return out


def _point_array(mesh: Any, scalars: str, *, mesh_name: str, hint: str) -> np.ndarray:
    _check_mesh(mesh, name=mesh_name)
    if scalars not in mesh.point_data:
        found = sorted(mesh.point_data.keys())
        raise DataError(f'{mesh_name} has no point array {scalars!r}; its point arrays: {found}. {hint}')
    values = np.asarray(mesh.point_data[scalars], dtype=float)
    if values.ndim != 1:
        raise DataError(f'{mesh_name}[{scalars!r}] must hold one value per vertex; got shape {values.shape}.')
    if not np.all(np.isfinite(values)):
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        raise DataError(f'{mesh_name}[{scalars!r}] contains {bad} NaN or infinite value(s); all must be finite.')
    return values


def _check_clim(clim: Any) -> tuple[float, float]:
    try:
        low, high = (float(c) for c in clim)
    except (TypeError, ValueError):
        raise ConfigError(f'clim must be two numbers (low, high) in mm; got {clim!r}.') from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ConfigError(f'clim must be two finite numbers with low < high; got {clim!r}.')
    return low, high


def plot_uncertainty(
    error_mesh: Any,
    uncertainty_mesh: Any,
    *,
    error_scalars: str = 'distance',
    uncertainty_scalars: str = 'uncertainty_mm',
    clim: tuple[float, float] | None = None,
    titles: tuple[str, str] = ('error (mm)', 'predicted uncertainty (mm)'),
    particles: np.ndarray | None = None,
    window_size: tuple[int, int] = (1000, 450),
    off_screen: bool | None = None,
):
    """One femur twice, side by side: coloured by its actual error, and by its predicted uncertainty.

    The cameras are linked (turning one view turns the other) and both panels share one colour range, so the same
    colour is the same number of mm on both sides: where the uncertainty is useful, the hot regions coincide.

    Args:
        error_mesh: ``pv.PolyData`` with the point array ``error_scalars``: the distance to the true surface, mm
            (e.g. from :func:`deepssm_nb.surface.surface_distance`).
        uncertainty_mesh: ``pv.PolyData`` with the point array ``uncertainty_scalars``, mm (from
            :func:`surface_values`); usually the same surface as ``error_mesh``.
        error_scalars: The point array of ``error_mesh`` drawn on the left.
        uncertainty_scalars: The point array of ``uncertainty_mesh`` drawn on the right.
        clim: Colour range (mm) of both panels; default 0 to the 99th percentile of both arrays together.
        titles: Captions of the two panels.
        particles: (M, 3) particles drawn as small spheres on both panels.
        window_size: Pixels.
        off_screen: Render without a window (default: headless or ``pv.OFF_SCREEN``).

    Returns:
        ``pv.Plotter`` (not shown); end a notebook cell with :func:`deepssm_nb.viz.surface.show`.

    Raises:
        DataError: A mesh lacks its point array (the message lists the arrays it has) or the array holds NaN or
            infinite values; ``particles`` is not (M, 3).
        ConfigError: ``clim`` is not two finite numbers with low < high, or ``titles`` not two strings.
    """
    error = _point_array(
        error_mesh,
        error_scalars,
        mesh_name='error_mesh',
        hint='Compute it with deepssm_nb.surface.surface_distance(predicted, true), or pass error_scalars=.',
    )
    sigma = _point_array(
        uncertainty_mesh,
        uncertainty_scalars,
        mesh_name='uncertainty_mesh',
        hint='Add it with surface_values(mesh, particles, std_mm), or pass uncertainty_scalars=.',
    )
    if isinstance(titles, str) or len(titles) != 2 or not all(isinstance(t, str) for t in titles):
        raise ConfigError(f'titles must be two strings (left, right); got {titles!r}.')
    pts = None if particles is None else check_array(particles, name='particles', shape=(None, 3))
    lim = _clim([{'mm': error}, {'mm': sigma}], 'mm', None if clim is None else _check_clim(clim))

    p = _new_plotter((1, 2), window_size, off_screen)
    # a scalar bar is keyed by its title: two different titles give each panel its own bar
    panels = (
        (error_mesh, error_scalars, titles[0], f'error, {BAR_TITLE}'),
        (uncertainty_mesh, uncertainty_scalars, titles[1], f'std, {BAR_TITLE}'),
    )
    for col, (mesh, scalars, text, bar_title) in enumerate(panels):
        p.subplot(0, col)
        _add_heatmap(p, mesh, scalars, lim, bar=True, title=bar_title, points=pts)
        p.add_text(text, font_size=10)
    p.link_views()
    _face_camera(p, error_mesh)
    return p


# --------------------------------------------------------------------------- figures


def _figure_and_axes(ax: Any, figsize: tuple[float, float]):
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout='constrained')
    return fig, fig.subplots()


def plot_uncertainty_vs_error(
    uncertainty_mm: Any,
    error_mm: Any,
    *,
    labels: Sequence[str] | None = None,
    kind: str = 'femur',
    ax: Any = None,
):
    """Predicted uncertainty (x) against actual error (y): a point per femur or per particle.

    With the least-squares line, the diagonal ``y = x`` (dashed) and the Pearson ``r`` of all the points (title).
    A useful uncertainty gives points along a rising line, ``r`` near 1; points near the diagonal also have the
    right size. Above the diagonal the network is over-confident (it errs more than it says), below it
    under-confident.

    Args:
        uncertainty_mm: Predicted uncertainty, mm: (N,) one per femur (e.g. the mean over its particles); for
            ``kind='particle'`` any shape, e.g. (N, M), one value per particle.
        error_mm: Actual error, mm, the same shape as ``uncertainty_mm`` (e.g. the surface distance of each femur,
            or the distance of each particle from its true position).
        labels: (N,) one text per femur, written next to its point (``kind='femur'`` only).
        kind: ``'femur'``: large points; ``'particle'``: small transparent points, at most
            :data:`MAX_PARTICLE_POINTS` of them drawn (a fixed random subset; ``r`` and the line use all).
        ax: Draw on these matplotlib axes (default: a new figure).

    Returns:
        ``matplotlib.figure.Figure``.

    Raises:
        DataError: The arrays differ in shape, are empty or hold NaN or infinite values; for ``kind='femur'``,
            they are not 1-D. With fewer than 3 points the plot is drawn and ``r`` is reported as undefined.
        ConfigError: ``kind`` is unknown, or ``labels`` is given with ``kind='particle'`` or has the wrong length.
    """
    kind = look_up_option(kind, KINDS, name='kind')
    x, y = _check_pair(
        uncertainty_mm,
        error_mm,
        names=('uncertainty_mm', 'error_mm'),
        ndim=1 if kind == 'femur' else None,
        min_points=1,
    )
    n = x.size
    if labels is not None:
        if kind != 'femur':
            raise ConfigError(f'labels are written next to femur points only; got kind={kind!r} with labels.')
        labels = [str(s) for s in labels]
        if len(labels) != n:
            raise ConfigError(f'labels must hold one text per point ({n}); got {len(labels)}.')
    r = _pearson(x, y) if n >= 3 else float('nan')

    fig, ax = _figure_and_axes(ax, (5.2, 5.0))
    lo = min(0.0, float(min(x.min(), y.min())))
    hi = float(max(x.max(), y.max()))
    lims = (lo, hi + 0.05 * ((hi - lo) or 1.0))
    ax.plot(lims, lims, color='0.5', lw=1, ls='--', label='y = x (uncertainty = error)')
    if kind == 'femur':
        ax.scatter(x, y, s=28, color='C0', zorder=3, label=f'femurs ({n})')
        for text, xi, yi in zip(labels or [], x, y):
            ax.annotate(text, (xi, yi), textcoords='offset points', xytext=(4, 3), fontsize=7)
    else:
        shown = np.arange(n)
        if n > MAX_PARTICLE_POINTS:
            shown = np.sort(np.random.default_rng(SEED).choice(n, MAX_PARTICLE_POINTS, replace=False))
        drawn = f'{shown.size} of {n} drawn' if shown.size < n else f'{n}'
        ax.scatter(
            x[shown], y[shown], s=3, alpha=0.15, color='C0', linewidths=0, rasterized=True, label=f'particles ({drawn})'
        )
    if n >= 3 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        ax.plot(
            lims,
            slope * np.asarray(lims) + intercept,
            color='C3',
            lw=1.5,
            label=f'least squares: y = {slope:.2f} x {intercept:+.2f}',
        )
    ax.set(
        xlim=lims,
        ylim=lims,
        aspect='equal',
        xlabel='predicted uncertainty, mm (std)',
        ylabel='actual error, mm',
    )
    r_text = f'Pearson r = {r:.3f}' if n >= 3 else 'Pearson r undefined (3 points needed)'
    ax.set_title(f'uncertainty against error: {r_text} (n = {n} {kind}s)', fontsize=10)
    legend = ax.legend(loc='upper left', fontsize=8)
    for handle in legend.legend_handles:  # the faint particle dots, drawn plainly in the legend
        if hasattr(handle, 'set_sizes'):
            handle.set_alpha(1.0)
            handle.set_sizes([12.0])
    return fig


def plot_ood(
    scores: Mapping[str, Any],
    *,
    threshold: float | None = None,
    ax: Any = None,
    score: str = 'uncertainty',
):
    """Mean predicted uncertainty (or feature distance) per image, one column of points per condition, with its
    median.

    Out of distribution (a noisy, blurred, shifted or inverted image, or one with no femur at all) a useful
    uncertainty rises: the columns climb above the ``clean`` one, and above ``threshold`` a prediction is flagged.

    Args:
        scores: ``{condition: (N_c,) mean uncertainty of each image, mm}``, e.g. ``{'clean': ..., 'noise': ...,
            'blur': ..., 'shift': ..., 'invert': ..., 'no_femur': ...}``; drawn left to right in this order.
        threshold: Draw a dashed line here (mm), labelled "uncertain above"; each column's tick label then says
            how many of its images lie above it.
        ax: Draw on these matplotlib axes (default: a new figure).
        score: What ``scores`` holds: ``'uncertainty'`` (mm) or ``'feature_distance'`` (the Mahalanobis distance of
            :mod:`deepssm_nb.novelty`, no unit).

    Returns:
        ``matplotlib.figure.Figure``.

    Raises:
        DataError: ``scores`` is empty, or one of its arrays is not 1-D, is empty or holds NaN or infinite values.
        ConfigError: ``scores`` is not a dict, ``threshold`` is not a finite number, or ``score`` is unknown.
    """
    labels = {
        'uncertainty': ('mean predicted uncertainty per image, mm', ' mm', 'uncertainty by image condition'),
        'feature_distance': ('feature distance from the training images', '', 'feature distance by image condition'),
    }
    ylabel, unit, title = labels[look_up_option(score, tuple(labels), name='score')]
    if not isinstance(scores, Mapping):
        raise ConfigError(f'scores must be a dict {{condition: per-image uncertainties}}; got {type(scores).__name__}.')
    if not scores:
        raise DataError('scores is empty; expected at least one condition, e.g. {"clean": [...]}.')
    columns = {}
    for cond, values in scores.items():
        arr = check_array(values, name=f'scores[{cond!r}]', ndim=1)
        if arr.size == 0:
            raise DataError(f'scores[{cond!r}] is empty; expected one mean uncertainty (mm) per image.')
        columns[str(cond)] = arr
    if threshold is not None:
        threshold = float(check_in_range(threshold, name='threshold'))

    fig, ax = _figure_and_axes(ax, (max(4.0, 1.2 + 0.9 * len(columns)), 4.0))
    rng = np.random.default_rng(SEED)
    ticks = []
    for i, (cond, arr) in enumerate(columns.items()):
        ax.scatter(i + rng.uniform(-0.18, 0.18, arr.size), arr, s=18, alpha=0.7, color=f'C{i % 10}', zorder=3)
        ax.plot([i - 0.3, i + 0.3], [np.median(arr)] * 2, color='k', lw=2, zorder=4, label='median' if i == 0 else None)
        ticks.append(cond if threshold is None else f'{cond}\n{int((arr > threshold).sum())}/{arr.size} above')
    if threshold is not None:
        ax.axhline(threshold, color='C3', ls='--', lw=1, label=f'uncertain above {threshold:.2f}{unit}')
    ax.set_xticks(range(len(columns)), ticks, fontsize=8)
    ax.set_xlim(-0.6, len(columns) - 0.4)
    if min(float(a.min()) for a in columns.values()) >= 0:
        ax.set_ylim(bottom=0)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(loc='upper left', fontsize=8)
    return fig


# --------------------------------------------------------------------------- widget

try:  # the widget needs ipywidgets; the plots do not
    import ipywidgets as _widgets

    _VBox = _widgets.VBox
except ImportError:  # pragma: no cover
    _widgets = None
    _VBox = object


class UncertaintyViewer(_VBox):
    """Pick a test femur and an uncertainty kind; see its error and uncertainty heat maps side by side.

    Each change draws :func:`plot_uncertainty` for the chosen femur, with the chosen kind on the right: ``total``,
    ``aleatoric`` (what the network expects to miss on this image) or ``epistemic`` (how much its dropout passes
    disagree).

    Args:
        uncertainty: A :class:`~deepssm_nb.uncertainty_analysis.UncertaintyAnalysis` (its ``ids`` and
            ``meshes(analysis, subject, kind)``).
        analysis: The :class:`~deepssm_nb.analyze.AnalysisResult` of the same predictions.
        subject: The femur shown first (default: the first test femur).
        kind: The kind shown first, one of ``'total_mm'``, ``'aleatoric_mm'``, ``'epistemic_mm'``.

    With an interactive 3D backend (trame, html) the view can be turned; with the ``'static'`` backend (a
    notebook run headless) it is a PNG picture, redrawn on every change.

    Attributes:
        subject: Dropdown of the test femurs.
        kind: Toggle of the three kinds.
        view: Where the view is drawn: an ``ipywidgets.Output`` (interactive backends) or an ``ipywidgets.Image``.
        plotter: The last ``pv.Plotter`` drawn.
    """

    def __init__(self, uncertainty: Any, analysis: Any, subject: str | None = None, *, kind: str = 'total_mm'):
        from ..uncertainty_analysis import UNCERTAINTY_KINDS
        from .surface import select_backend

        ids = list(uncertainty.ids)
        if subject is not None and subject not in ids:
            raise DataError(f'subject {subject!r} is not a test femur of this analysis; expected one of {ids}.')
        kind = look_up_option(kind, UNCERTAINTY_KINDS, name='kind')
        self.uncertainty, self.analysis = uncertainty, analysis
        self.subject = _widgets.Dropdown(options=ids, value=subject or ids[0], description='femur')
        self.kind = _widgets.ToggleButtons(
            options=[(k.removesuffix('_mm'), k) for k in UNCERTAINTY_KINDS], value=kind, description='uncertainty'
        )
        self._static = select_backend() == 'static'
        self.view = _widgets.Image(format='png') if self._static else _widgets.Output()
        self.plotter = None
        self._draw()
        self.subject.observe(lambda change: self._draw(), names='value')
        self.kind.observe(lambda change: self._draw(), names='value')
        super().__init__([_widgets.HBox([self.subject, self.kind]), self.view])

    def _draw(self) -> None:
        from .surface import _in_kernel, show

        error_mesh, unc_mesh = self.uncertainty.meshes(self.analysis, self.subject.value, self.kind.value)
        name = self.kind.value.removesuffix('_mm')
        if self.plotter is not None:
            self.plotter.close()
        self.plotter = plot_uncertainty(
            error_mesh, unc_mesh, titles=(f'{self.subject.value}: error (mm)', f'{name} uncertainty (mm)')
        )
        if self._static:
            import io

            from matplotlib.image import imsave

            buf = io.BytesIO()
            imsave(buf, self.plotter.screenshot(return_img=True), format='png')
            self.view.value = buf.getvalue()
        elif _in_kernel():
            with self.view:
                self.view.clear_output(wait=True)
                show(self.plotter)
