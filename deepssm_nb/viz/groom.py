"""Views of the grooming: images before and after alignment, and the registration error.

Figures are ``matplotlib.figure.Figure`` objects (no pyplot state). Slices are drawn in millimetres from the image
origin, with superior up for coronal and sagittal slices; particles within one voxel of the slice are overlaid.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._validation import look_up_option
from ..io import read_particles
from ..registration import apply_transform
from .cohort import _enable_figure_display

__all__ = ['plot_grooming', 'plot_registration_errors']

_AXES = ('axial', 'coronal', 'sagittal')
_NUMPY_AXIS = {'axial': 0, 'coronal': 1, 'sagittal': 2}  # slice axis of a [z, y, x] array
_PLOT_XYZ = {'axial': (0, 1), 'coronal': (0, 2), 'sagittal': (1, 2)}  # (horizontal, vertical) among (x, y, z)


def _slice(image_path: str | os.PathLike, points: np.ndarray, axis: str):
    """The slice of an image through the centroid of ``points``, its extent (mm) and the nearby points."""
    import SimpleITK as sitk

    img = sitk.ReadImage(str(image_path))
    arr = sitk.GetArrayViewFromImage(img)
    spacing = np.asarray(img.GetSpacing())
    idx = np.array([img.TransformPhysicalPointToContinuousIndex(tuple(map(float, p))) for p in points])
    xyz = 2 - _NUMPY_AXIS[axis]
    k = int(np.clip(np.round(idx[:, xyz].mean()), 0, img.GetSize()[xyz] - 1))
    plane = np.take(arr, k, axis=_NUMPY_AXIS[axis])
    h, v = _PLOT_XYZ[axis]
    near = np.abs(idx[:, xyz] - k) <= 1.0
    extent = (
        -0.5 * spacing[h],
        (plane.shape[1] - 0.5) * spacing[h],
        -0.5 * spacing[v],
        (plane.shape[0] - 0.5) * spacing[v],
    )
    return plane, extent, idx[near][:, [h, v]] * spacing[[h, v]]


def plot_grooming(
    groomed,
    ids: list[str] | None = None,
    *,
    axis: str = 'coronal',
    num_subjects: int = 4,
    window: tuple[float, float] = (-250.0, 1250.0),
):
    """Each subject's original image next to its groomed image, with its particles.

    Top row: the original images (each with its own field of view and pose);
    bottom row: the same images on the reference grid. Every bottom panel has
    the same size and the femur sits at the same place: that is what
    grooming is for. Titles give the split and, for registered subjects, the
    mean registration error.

    Args:
        groomed: A :class:`~deepssm_nb.groom.GroomResult`.
        ids: Subjects to show; default: the reference, then training and test
            subjects up to ``num_subjects``.
        axis: ``'axial'``, ``'coronal'`` or ``'sagittal'``.
        num_subjects: Number of rows when ``ids`` is None.
        window: Display window (min, max) in image units (HU).

    Returns:
        ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure

    axis = look_up_option(axis, _AXES, name='axis')
    if ids is None:
        train = [i for i in groomed.ids('train') if i != groomed.reference_id]
        others = [s.id for s in groomed.subjects if s.split != 'train']
        ids = [groomed.reference_id] + others[: max(1, (num_subjects - 1) // 2)]
        ids += train[: max(0, num_subjects - len(ids))]
    sources = {d['id']: d.get('source_image') for d in groomed.info.get('subjects', [])}
    fig = Figure(figsize=(2.6 * len(ids) + 0.6, 6.4), layout='constrained')
    axes = fig.subplots(2, len(ids), squeeze=False)
    for col, sid in enumerate(ids):
        s = groomed[sid]
        world = read_particles(s.particles)
        orig = apply_transform(np.linalg.inv(s.transform), world)
        label = 'reference' if sid == groomed.reference_id else s.split
        if s.registration_error_mm is not None:
            label += f', error {s.registration_error_mm:.1f} mm'
        for row, (path, pts) in enumerate(((sources.get(sid), orig), (s.image, world))):
            ax = axes[row, col]
            if path is None or not Path(path).is_file():
                ax.text(0.5, 0.5, 'image not found', ha='center', va='center', transform=ax.transAxes)
                ax.set_axis_off()
                continue
            plane, extent, xy = _slice(path, pts, axis)
            ax.imshow(
                plane,
                cmap='gray',
                vmin=window[0],
                vmax=window[1],
                origin='lower',
                extent=extent,
                interpolation='nearest',
            )
            ax.scatter(xy[:, 0], xy[:, 1], s=6, c='red', edgecolors='none')
            ax.set_title(f'{sid}\n({label})' if row == 0 else f'{plane.shape[1]} x {plane.shape[0]} voxels', fontsize=9)
            ax.tick_params(labelsize=7)
        axes[0, 0].set_ylabel('original image (mm)', fontsize=9)
        axes[1, 0].set_ylabel('groomed (reference grid, mm)', fontsize=9)
    fig.suptitle(f'{axis.capitalize()} slices before (top) and after (bottom) grooming; red: particles', fontsize=10)
    _enable_figure_display()
    return fig


def plot_registration_errors(groomed):
    """Bar chart of the per-subject registration error (mean over particles, with the maximum marked).

    Args:
        groomed: A :class:`~deepssm_nb.groom.GroomResult` with registered subjects (test images, and training
            images when they were registered too); test images are drawn in orange.

    Returns:
        ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure

    rows = groomed.registration_table()
    fig = Figure(figsize=(max(4.0, 0.9 * len(rows) + 2), 3.2), layout='constrained')
    ax = fig.add_subplot(1, 1, 1)
    if not rows:
        ax.text(0.5, 0.5, 'no registered subjects', ha='center', va='center', transform=ax.transAxes)
        ax.set_axis_off()
        return fig
    x = np.arange(len(rows))
    test = np.array([r['split'] != 'train' for r in rows])
    means = np.array([r['mean_mm'] for r in rows])
    if (~test).any():
        ax.bar(x[~test], means[~test], color='tab:blue', label='training image: mean over particles')
    if test.any():
        ax.bar(x[test], means[test], color='tab:orange', label='test image: mean over particles')
    ax.scatter(x, [r['max_mm'] for r in rows], marker='_', s=400, color='tab:red', label='largest particle')
    ax.axhline(groomed.spacing, color='gray', ls='--', lw=1, label=f'voxel size ({groomed.spacing:g} mm)')
    ax.set_xticks(x, [r['id'] for r in rows], rotation=30, ha='right', fontsize=8)
    ax.set_ylabel('registration error (mm)')
    ax.set_title('Registration versus the best shape alignment', fontsize=10)
    ax.legend(fontsize=8)
    _enable_figure_display()
    return fig
