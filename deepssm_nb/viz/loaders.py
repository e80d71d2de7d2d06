"""Plots of the loaders and of predicted particles on image slices (matplotlib Figures).

Images follow the SimpleITK convention: a numpy volume is indexed [z, y, x];
particles are physical points (x, y, z) in mm, mapped to voxel indices with
the image grid (origin, spacing, direction).

Example:
    >>> fig = plot_slices(image, [pred, true], labels=['predicted', 'true'])   # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    'plot_batch',
    'plot_intensity_histogram',
    'plot_prediction_errors',
    'plot_slices',
    'plot_split',
    'points_to_index',
]

_COLORS = ('tab:red', 'tab:green', 'tab:blue', 'tab:orange')


def points_to_index(points: np.ndarray, grid: Mapping[str, Sequence[float]]) -> np.ndarray:
    """Physical points (M, 3) (x, y, z mm) -> continuous voxel indices (M, 3) (x, y, z)."""
    direction = np.asarray(grid['direction'], dtype=float).reshape(3, 3)
    rel = np.asarray(points, dtype=float) - np.asarray(grid['origin'], dtype=float)
    return (rel @ direction) / np.asarray(grid['spacing'], dtype=float)


def _volume(image, grid):
    import SimpleITK as sitk

    if isinstance(image, (str, os.PathLike)):
        image = sitk.ReadImage(str(image))
    if isinstance(image, sitk.Image):
        return sitk.GetArrayFromImage(image), {
            'origin': image.GetOrigin(),
            'spacing': image.GetSpacing(),
            'direction': image.GetDirection(),
        }
    arr = np.asarray(image, dtype=float)
    if arr.ndim != 3:
        raise ValueError(f'image must be a 3D volume (D, H, W); got shape {arr.shape}.')
    return arr, grid or {'origin': (0, 0, 0), 'spacing': (1, 1, 1), 'direction': (1, 0, 0, 0, 1, 0, 0, 0, 1)}


def _draw_slices(axes, vol: np.ndarray, grid, point_sets, labels, colors, slab: float = 1.5) -> None:
    """Mid axial (z), coronal (y) and sagittal (x) slices with the point sets drawn on them.

    Points within ``slab`` voxels of a slice are drawn solid, the others faint (projected).
    """
    sp = np.asarray(grid['spacing'], dtype=float)
    d, h, w = vol.shape
    # (slice, row axis, column axis, normal axis, slice index) with 0 = x, 1 = y, 2 = z
    views = (
        (vol[d // 2], 1, 0, 2, d // 2, 'axial (z mid)'),
        (vol[:, h // 2, :], 2, 0, 1, h // 2, 'coronal (y mid)'),
        (vol[:, :, w // 2], 2, 1, 0, w // 2, 'sagittal (x mid)'),
    )
    idx = [points_to_index(p, grid) for p in point_sets]
    for ax, (img, r, c, n, k, title) in zip(axes, views):
        ax.imshow(img, cmap='gray', origin='lower', aspect=sp[r] / sp[c], interpolation='nearest')
        for i, (pts, label) in enumerate(zip(idx, labels)):
            near = np.abs(pts[:, n] - k) <= slab
            color = colors[i % len(colors)]
            ax.scatter(pts[~near, c], pts[~near, r], s=2, color=color, alpha=0.15)
            ax.scatter(pts[near, c], pts[near, r], s=9, color=color, label=label)
        ax.set_xlim(-0.5, img.shape[1] - 0.5)
        ax.set_ylim(-0.5, img.shape[0] - 0.5)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])


def plot_slices(
    image,
    particles: np.ndarray | Sequence[np.ndarray] | None = None,
    *,
    labels: Sequence[str] | None = None,
    grid: Mapping[str, Any] | None = None,
    title: str | None = None,
    colors: Sequence[str] = _COLORS,
):
    """Three orthogonal mid-slices of an image with particles on them.

    Particles within 1.5 voxels of a slice are drawn solid; the others are
    projected onto it, faint, for context.

    Args:
        image: ``SimpleITK.Image``, an image file, or a (D, H, W) array with ``grid``.
        particles: One (M, 3) array or a list of them, physical mm in the image's frame.
        labels: Legend entry per particle set.
        grid: ``origin``, ``spacing``, ``direction`` of an array image
            (as in ``normalization.json['grid']``).
        title: Figure title.
        colors: Colour per particle set.

    Returns:
        matplotlib Figure.
    """
    from matplotlib.figure import Figure

    vol, grid = _volume(image, grid)
    sets = [] if particles is None else ([particles] if np.ndim(particles) == 2 else list(particles))
    labels = list(labels) if labels is not None else [f'set {i + 1}' for i in range(len(sets))]
    fig = Figure(figsize=(10, 3.6), layout='constrained')
    axes = fig.subplots(1, 3)
    _draw_slices(axes, vol, grid, sets, labels, colors)
    if sets:
        axes[0].legend(loc='upper right', fontsize=8, markerscale=3)
    if title:
        fig.suptitle(title)
    return fig


def plot_batch(batch: Mapping[str, Any], normalization: Mapping[str, Any], *, max_samples: int = 4):
    """A training batch: mid-slices of each whitened image with its particles.

    Args:
        batch: ``{'image': (B, 1, D, H, W), 'particles': (B, M, 3), 'name': [str]}``.
        normalization: The dict of ``normalization.json`` (its ``grid`` places the particles).
        max_samples: At most this many rows.

    Returns:
        matplotlib Figure with one row per sample.
    """
    from matplotlib.figure import Figure

    n = min(max_samples, len(batch['name']))
    fig = Figure(figsize=(9, 3 * n), layout='constrained')
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        vol = np.asarray(batch['image'][i, 0], dtype=float)
        pts = [np.asarray(batch['particles'][i], dtype=float)] if 'particles' in batch else []
        _draw_slices(axes[i], vol, normalization['grid'], pts, ['particles'], _COLORS)
        axes[i, 0].set_ylabel(batch['name'][i], fontsize=9)
    fig.suptitle('Whitened images and their particles (world frame)')
    return fig


def plot_intensity_histogram(loader, normalization: Mapping[str, Any], *, max_batches: int = 4, bins: int = 60):
    """Voxel intensities before and after whitening, over the first batches of a loader.

    Returns:
        matplotlib Figure with two panels (raw, whitened).
    """
    from matplotlib.figure import Figure

    values = []
    for i, batch in enumerate(loader):
        if i >= max_batches:
            break
        values.append(np.asarray(batch['image'], dtype=np.float32).ravel())
    white = np.concatenate(values)
    raw = white * float(normalization['image_std']) + float(normalization['image_mean'])
    fig = Figure(figsize=(9, 3.2), layout='constrained')
    (a, b) = fig.subplots(1, 2)
    a.hist(raw, bins=bins, color='tab:gray')
    a.set_title(f'raw (mean {normalization["image_mean"]:.1f}, std {normalization["image_std"]:.1f})', fontsize=10)
    b.hist(white, bins=bins, color='tab:blue')
    b.set_title(f'whitened (mean {white.mean():.2f}, std {white.std():.2f})', fontsize=10)
    for ax in (a, b):
        ax.set_xlabel('intensity')
        ax.set_yscale('log')
    a.set_ylabel('voxels')
    return fig


def plot_split(loader_dir: str | os.PathLike):
    """Rows (real + augmented) per subject, coloured by the side of the split they went to.

    Args:
        loader_dir: Folder of the training loaders (reads ``loaders.json``).

    Returns:
        matplotlib Figure.
    """
    from matplotlib.figure import Figure

    from ..io import read_json

    info = read_json(Path(loader_dir) / 'loaders.json')
    counts = info['rows_per_subject']
    val = set(info['val_subjects'])
    subjects = sorted(counts, key=lambda s: (s in val, s))
    fig = Figure(figsize=(max(5.0, 0.35 * len(subjects)), 3.2), layout='constrained')
    ax = fig.subplots()
    ax.bar(
        range(len(subjects)),
        [counts[s] for s in subjects],
        color=['tab:orange' if s in val else 'tab:blue' for s in subjects],
    )
    ax.set_xticks(range(len(subjects)), subjects, rotation=90, fontsize=8)
    ax.set_ylabel('rows (real + augmented)')
    ax.set_title(
        f'Split by subject\n{info["num_train"]} training rows (blue), {info["num_val"]} validation rows (orange)',
        fontsize=10,
    )
    return fig


def plot_prediction_errors(rows: Sequence[Mapping[str, Any]], *, key: str = 'rmse_mm'):
    """Bar chart of a per-subject error (e.g. from :func:`deepssm_nb.predict.prediction_errors`).

    Returns:
        matplotlib Figure.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(4.0, 0.6 * len(rows)), 3.0), layout='constrained')
    ax = fig.subplots()
    ax.bar([str(r['id']) for r in rows], [float(r[key]) for r in rows], color='tab:red')
    ax.set_ylabel(key.replace('_mm', ' (mm)').replace('_', ' '))
    ax.set_title('Particle error per test subject', fontsize=10)
    return fig
