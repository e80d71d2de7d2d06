"""Plots of the data augmentation stage (matplotlib Figures).

* :func:`plot_cumulative_variance`: the PCA spectrum and the number of modes kept.
* :func:`plot_score_scatter_matrix`: real vs generated scores, mode against mode.
* :func:`plot_score_violins`: the distribution of each mode's scores, real vs generated.
* :func:`plot_generated_gallery`: generated image slices with their particles.

Example:
    >>> fig = plot_score_scatter_matrix('aug/TotalData.csv', max_modes=4)   # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ['plot_cumulative_variance', 'plot_generated_gallery', 'plot_score_scatter_matrix', 'plot_score_violins']

REAL, GENERATED = 'tab:blue', 'tab:orange'


def _figure(nrows: int = 1, ncols: int = 1, **kwargs):
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _table(data):
    if isinstance(data, (str, os.PathLike)):
        from ..augment import read_total_data

        return read_total_data(data)
    return data


def plot_cumulative_variance(pca, *, percent_variability: float | None = None):
    """Variance explained per mode (bars) and cumulated (line).

    Args:
        pca: A fitted :class:`~deepssm_nb.pca.ShapePCA`.
        percent_variability: Threshold to draw (default: the model's own).

    Returns:
        ``matplotlib.figure.Figure``.
    """
    ratio = pca.eigenvalues_ / pca.eigenvalues_.sum()
    modes = np.arange(1, len(ratio) + 1)
    fig, axes = _figure(figsize=(6.5, 3.8), layout='constrained')
    ax = axes[0, 0]
    ax.bar(modes, 100 * ratio, color='lightgray', label='per mode')
    ax.plot(modes, 100 * np.cumsum(ratio), 'o-', color=REAL, ms=4, label='cumulative')
    p = pca.percent_variability if percent_variability is None else percent_variability
    ax.axhline(100 * p, ls='--', color='gray', lw=1, label=f'{100 * p:g} % threshold')
    ax.axvline(pca.n_components_ + 0.5, color=GENERATED, lw=1.5, label=f'{pca.n_components_} modes kept')
    ax.set(
        xlabel='PCA mode',
        ylabel='variance explained (%)',
        ylim=(0, 102),
        xticks=modes,
        title='Shape PCA of the training particles',
    )
    ax.legend(loc='center right', fontsize=8)
    return fig


def plot_score_scatter_matrix(data, *, max_modes: int = 4, max_points: int = 2000, random_state=0):
    """Scatter matrix of PCA scores, real (blue) over generated (orange).

    Args:
        data: ``TotalData.csv`` path or its :class:`~deepssm_nb.augment.TotalData`.
        max_modes: Modes shown (the first ones).
        max_points: At most this many generated points (a random subset).
        random_state: Seed of that subset.

    Returns:
        ``matplotlib.figure.Figure``; histograms on the diagonal.
    """
    t = _table(data)
    scores, gen = t.scores, t.generated
    k = min(max_modes, scores.shape[1])
    g = scores[gen]
    if len(g) > max_points:
        g = g[np.random.default_rng(random_state).choice(len(g), max_points, replace=False)]
    r = scores[~gen]
    fig, axes = _figure(k, k, figsize=(2.2 * k + 0.6, 2.2 * k), layout='constrained')
    for i in range(k):
        for j in range(k):
            ax = axes[i, j]
            if i == j:
                bins = np.histogram_bin_edges(np.concatenate([r[:, i], g[:, i]]), bins=20)
                ax.hist(g[:, i], bins=bins, color=GENERATED, alpha=0.6, density=True)
                ax.hist(r[:, i], bins=bins, color=REAL, alpha=0.6, density=True)
            else:
                ax.scatter(g[:, j], g[:, i], s=10 if len(g) < 300 else 4, color=GENERATED, alpha=0.5, lw=0)
                ax.scatter(r[:, j], r[:, i], s=14, color=REAL, edgecolor='k', lw=0.3)
            if i == k - 1:
                ax.set_xlabel(f'mode {j + 1}')
            if j == 0:
                ax.set_ylabel(f'mode {i + 1}')
            ax.tick_params(labelsize=7)
    fig.suptitle(f'PCA scores: {len(r)} real (blue), {int(gen.sum())} generated (orange)')
    return fig


def plot_score_violins(data, *, max_modes: int | None = None):
    """Per-mode violins of the scores, real (left, blue) vs generated (right, orange).

    Args:
        data: ``TotalData.csv`` path or its :class:`~deepssm_nb.augment.TotalData`.
        max_modes: Modes shown (default: all).

    Returns:
        ``matplotlib.figure.Figure``.
    """
    t = _table(data)
    scores, gen = t.scores, t.generated
    k = scores.shape[1] if max_modes is None else min(max_modes, scores.shape[1])
    pos = np.arange(1, k + 1)
    fig, axes = _figure(figsize=(max(5.0, 0.9 * k + 2), 3.6), layout='constrained')
    ax = axes[0, 0]
    for mask, color, shift, label in ((~gen, REAL, -0.2, 'real'), (gen, GENERATED, 0.2, 'generated')):
        if mask.sum() < 2:
            continue
        parts = ax.violinplot([scores[mask, m] for m in range(k)], positions=pos + shift, widths=0.38, showmedians=True)
        for body in parts['bodies']:
            body.set_facecolor(color)
            body.set_alpha(0.6)
        for key in ('cbars', 'cmins', 'cmaxes', 'cmedians'):
            parts[key].set_color(color)
        ax.plot([], [], color=color, lw=6, alpha=0.6, label=label)
    ax.axhline(0, color='gray', lw=0.5)
    ax.set(xticks=pos, xlabel='PCA mode', ylabel='score (mm)', title='Score distribution per mode')
    ax.legend(fontsize=8)
    return fig


def plot_generated_gallery(aug_dir, *, num: int = 6, axis: str = 'y', ncols: int = 3, slab_mm: float | None = None):
    """Slices of generated images with their particles overlaid.

    Each panel shows the slice through the centroid of the sample's particles
    (``axis`` = the axis held fixed: ``'x'``, ``'y'`` or ``'z'``) and the
    particles within ``slab_mm`` of that plane (default: 1.5 voxels).

    Args:
        aug_dir: The augmentation folder (holds ``TotalData.csv``).
        num: Generated samples shown (the first ones).
        axis: Axis normal to the slice.
        ncols: Panels per row.
        slab_mm: Half-thickness of the slab of particles drawn, mm.

    Returns:
        ``matplotlib.figure.Figure``.
    """
    import SimpleITK as sitk

    from .._validation import look_up_option
    from ..imageops import ImageGrid
    from ..io import read_json, read_particles

    axis = look_up_option(axis, ('x', 'y', 'z'), name='axis')
    t = _table(Path(aug_dir) / 'TotalData.csv')
    rows = np.flatnonzero(t.generated)[:num]
    if not len(rows):
        raise ValueError(f'"{aug_dir}" holds no generated samples to show; run the augmentation first.')
    bases = {}
    info_path = Path(aug_dir) / 'augmentation.json'
    if info_path.is_file():
        bases = {r['name']: r['base'] for r in read_json(info_path).get('rows', [])}
    ncols = min(ncols, len(rows))
    nrows = int(np.ceil(len(rows) / ncols))
    fig, axes = _figure(nrows, ncols, figsize=(3.2 * ncols, 3.4 * nrows), layout='constrained')
    a = 'xyz'.index(axis)  # physical axis held fixed; numpy axis 2 - a
    shown = [c for c in range(3) if c != a]  # (column, row) axes of the panel, x/y/z order
    for ax, row in zip(axes.ravel(), rows):
        img = sitk.ReadImage(t.images[row])
        arr, grid = sitk.GetArrayFromImage(img), ImageGrid.from_image(img)
        idx = grid.physical_to_index(read_particles(t.particles[row]))[:, ::-1]  # (M, 3) x, y, z voxels
        plane = int(np.clip(np.round(idx[:, a].mean()), 0, arr.shape[2 - a] - 1))
        sl = np.take(arr, plane, axis=2 - a)  # 2D array indexed [shown[1], shown[0]]
        sp = grid.spacing
        ax.imshow(
            sl,
            cmap='gray',
            origin='lower',
            interpolation='nearest',
            extent=(
                -0.5 * sp[shown[0]],
                (sl.shape[1] - 0.5) * sp[shown[0]],
                -0.5 * sp[shown[1]],
                (sl.shape[0] - 0.5) * sp[shown[1]],
            ),
        )
        slab = 1.5 * sp[a] if slab_mm is None else slab_mm
        near = np.abs(idx[:, a] - plane) * sp[a] <= slab
        ax.scatter(idx[near, shown[0]] * sp[shown[0]], idx[near, shown[1]] * sp[shown[1]], s=6, color='tab:red')
        name = Path(t.images[row]).name.split('.')[0]
        base = f'\nfrom {bases[name]}' if name in bases else ''
        ax.set_title(f'{name}{base}', fontsize=8)
        ax.set_xlabel(f'{"xyz"[shown[0]]} (mm)', fontsize=7)
        ax.set_ylabel(f'{"xyz"[shown[1]]} (mm)', fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[len(rows) :]:
        ax.set_axis_off()
    fig.suptitle(f'Generated images, {axis}-slice through the particle centroid, particles within the slab in red')
    return fig
