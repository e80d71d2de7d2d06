"""Views of a cohort: a slice viewer widget, orthogonal slices, a 3D view and plots of the cohort's spread.

Images are shown as clinical viewers do for an LPS image with identity direction: axial slices with anterior up and
the patient's left on the right, coronal and sagittal slices with superior up. Figures are
``matplotlib.figure.Figure`` objects (no pyplot state), 3D views ``pyvista.Plotter`` objects; call ``.show()``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import look_up_option
from ..data.cohort import Cohort, Subject
from ..io import read_particles
from . import enable_figure_display as _enable_figure_display

__all__ = [
    'SliceViewer',
    'aligned_particles',
    'plot_cohort_spread',
    'plot_particle_sd',
    'plot_subject_3d',
    'plot_subject_slices',
    'slice_viewer',
]

AXES = ('axial', 'coronal', 'sagittal')
_ARRAY_AXIS = {'axial': 0, 'coronal': 1, 'sagittal': 2}  # numpy axis of the slice index ([z, y, x] arrays)
_PLOT_AXES = {'axial': (0, 1), 'coronal': (0, 2), 'sagittal': (1, 2)}  # (horizontal, vertical) of (x, y, z)


class _Volume:
    """A subject's image, segmentation and particles in voxel-index coordinates."""

    def __init__(self, subject: Subject):
        import SimpleITK as sitk

        img = sitk.ReadImage(str(subject.image))
        self.image = sitk.GetArrayFromImage(img)
        self.seg = sitk.GetArrayFromImage(sitk.ReadImage(str(subject.segmentation))) if subject.segmentation else None
        points = read_particles(subject.particles)
        self.particles = np.array([img.TransformPhysicalPointToContinuousIndex(tuple(map(float, p))) for p in points])
        self.spacing = np.array(img.GetSpacing())

    def slice(self, axis: str, k: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Image slice, segmentation slice and the particles within 2 mm of the slice, (K, 2) plot coordinates."""
        a = _ARRAY_AXIS[axis]

        def take(arr):
            return None if arr is None else np.take(arr, k, axis=a)

        xyz_axis = 2 - a
        band = max(1.0, 2.0 / self.spacing[xyz_axis])
        near = np.abs(self.particles[:, xyz_axis] - k) <= band
        h, v = _PLOT_AXES[axis]
        return take(self.image), take(self.seg), self.particles[near][:, [h, v]]

    def aspect(self, axis: str) -> float:
        h, v = _PLOT_AXES[axis]
        return float(self.spacing[v] / self.spacing[h])


def _draw_slice(ax, vol: _Volume, axis: str, k: int, window: tuple[float, float]) -> dict[str, Any]:
    img, seg, pts = vol.slice(axis, k)
    origin = 'upper' if axis == 'axial' else 'lower'
    artist = ax.imshow(
        img,
        cmap='gray',
        vmin=window[0],
        vmax=window[1],
        origin=origin,
        aspect=vol.aspect(axis),
        interpolation='nearest',
    )
    contour = ax.contour(seg, levels=[0.5], colors='lime', linewidths=1.0) if seg is not None and seg.any() else None
    scatter = ax.scatter(pts[:, 0], pts[:, 1], s=12, c='red', edgecolors='none')
    ax.set_xlim(-0.5, img.shape[1] - 0.5)
    ax.set_ylim(*((img.shape[0] - 0.5, -0.5) if origin == 'upper' else (-0.5, img.shape[0] - 0.5)))
    ax.set_title(f'{axis} slice {k}', fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    return {'image': artist, 'contour': contour, 'scatter': scatter}


def plot_subject_slices(cohort: Cohort, subject: int | str = 0, *, window: tuple[float, float] = (-250, 1250)):
    """Axial, coronal and sagittal slices through the segmentation's centre, with contour and particles.

    Returns:
        ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure

    s = cohort[subject]
    vol = _Volume(s)
    centre = (
        np.argwhere(vol.seg > 0).mean(axis=0).round().astype(int)
        if vol.seg is not None
        else np.array(vol.image.shape) // 2
    )
    fig = Figure(figsize=(12, 4.4), layout='constrained')
    for i, axis in enumerate(AXES):
        _draw_slice(fig.add_subplot(1, 3, i + 1), vol, axis, int(centre[_ARRAY_AXIS[axis]]), window)
    fig.suptitle(
        f'{s.id} ({s.split}): image {vol.image.shape[::-1]} voxels (x, y, z); green: segmentation; '
        'red: particles within 2 mm'
    )
    _enable_figure_display()
    return fig


try:  # the widget needs ipywidgets; the static plots do not
    import ipywidgets as _widgets

    _VBox = _widgets.VBox
except ImportError:  # pragma: no cover
    _widgets = None
    _VBox = object


class SliceViewer(_VBox):
    """A slice viewer: subject picker, axis picker and slice slider over one matplotlib figure.

    Attributes:
        subject: Dropdown of subject ids.
        axis: Toggle of ``'axial'``, ``'coronal'``, ``'sagittal'``.
        slider: Slice index.
        figure: The ``matplotlib.figure.Figure``.
        artists: The current image (``artists['image']``), contour and particle scatter.
    """

    def __init__(
        self, cohort: Cohort, subject: int | str = 0, *, axis: str = 'axial', window: tuple[float, float] = (-250, 1250)
    ):
        from matplotlib.figure import Figure

        axis = look_up_option(axis, AXES, name='axis')
        self.cohort, self.window = cohort, window
        self._cache: dict[str, _Volume] = {}
        self.subject = _widgets.Dropdown(options=cohort.ids(), value=cohort[subject].id, description='subject')
        self.axis = _widgets.ToggleButtons(options=AXES, value=axis, description='view')
        self.slider = _widgets.IntSlider(min=0, max=1, value=0, description='slice', continuous_update=False)
        self.output = _widgets.Output()
        self.figure = Figure(figsize=(6, 6), layout='constrained')
        self.ax = self.figure.add_subplot()
        self.artists: dict[str, Any] = {}
        self._reset_slider()
        self._draw()
        self.subject.observe(self._on_volume_change, names='value')
        self.axis.observe(self._on_volume_change, names='value')
        self.slider.observe(lambda change: self._draw(), names='value')
        super().__init__([_widgets.HBox([self.subject, self.axis]), self.slider, self.output])

    @property
    def volume(self) -> _Volume:
        sid = self.subject.value
        if sid not in self._cache:
            self._cache = {sid: _Volume(self.cohort[sid])}  # keep one subject in memory
        return self._cache[sid]

    def _reset_slider(self) -> None:
        vol = self.volume
        n = vol.image.shape[_ARRAY_AXIS[self.axis.value]]
        if vol.seg is not None and vol.seg.any():
            centre = np.argwhere(vol.seg > 0)[:, _ARRAY_AXIS[self.axis.value]].mean()
            middle = int(round(centre))  # noqa: RUF046 - numpy < 2 rounds to a float
        else:
            middle = n // 2
        self._quiet = True
        self.slider.max = n - 1
        self.slider.value = middle
        self._quiet = False

    def _on_volume_change(self, change: dict) -> None:
        self._reset_slider()
        self._draw()

    def _draw(self) -> None:
        if getattr(self, '_quiet', False):
            return
        self.ax.clear()
        self.artists = _draw_slice(self.ax, self.volume, self.axis.value, int(self.slider.value), self.window)
        self._show()

    def _show(self) -> None:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is None:  # plain Python (tests): nothing to display
            return
        _enable_figure_display()
        with self.output:
            self.output.clear_output(wait=True)
            display(self.figure)


def slice_viewer(
    cohort: Cohort, subject: int | str = 0, *, axis: str = 'axial', window: tuple[float, float] = (-250, 1250)
) -> SliceViewer:
    """An ipywidgets slice viewer of a cohort's images with segmentation contour and nearby particles.

    Args:
        cohort: The cohort.
        subject: Index or id of the subject shown first.
        axis: ``'axial'``, ``'coronal'`` or ``'sagittal'``.
        window: Display range of the intensities (HU).

    Returns:
        The widget (display it as the last line of a cell). Setting ``viewer.slider.value`` redraws the figure.
    """
    if _widgets is None:  # pragma: no cover
        raise ImportError('slice_viewer needs ipywidgets: pip install ipywidgets')
    return SliceViewer(cohort, subject, axis=axis, window=window)


# --------------------------------------------------------------------------- 3D views


def plot_subject_3d(cohort: Cohort, subject: int | str = 0, *, off_screen: bool | None = None):
    """The subject's proximal femur surface with its particles and the outline of its image.

    Returns:
        ``pyvista.Plotter``; call ``.show()``.
    """
    import pyvista as pv
    import SimpleITK as sitk

    from .surface import prepare_environment

    prepare_environment()
    s = cohort[subject]
    plotter = pv.Plotter(off_screen=off_screen)
    if s.mesh is not None:
        plotter.add_mesh(pv.read(s.mesh), color='ivory', smooth_shading=True)
    plotter.add_points(read_particles(s.particles), color='crimson', point_size=9, render_points_as_spheres=True)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(s.image))
    reader.ReadImageInformation()
    corners = np.array(
        [
            reader.GetOrigin(),
            np.add(reader.GetOrigin(), np.multiply(reader.GetSpacing(), np.subtract(reader.GetSize(), 1))),
        ]
    )
    plotter.add_mesh(pv.Box(bounds=corners.T.ravel()).outline(), color='steelblue')
    plotter.add_axes()
    plotter.add_text(f'{s.id} ({s.split}): red = particles, blue box = image field of view', font_size=9)
    return plotter


def _align_rigid(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``source`` (M, 3) rigidly aligned to ``target`` (M, 3) (least squares, no scaling)."""
    from ..registration import apply_transform, rigid_transform

    return apply_transform(rigid_transform(source, target), source)


def aligned_particles(cohort: Cohort) -> np.ndarray:
    """Every subject's particles rigidly aligned to the mean particles (or to the first subject): (N, M, 3)."""
    particles = cohort.particles()
    target = read_particles(cohort.mean_particles) if cohort.mean_particles else particles[0]
    return np.stack([_align_rigid(p, target) for p in particles])


def plot_particle_sd(cohort: Cohort, *, off_screen: bool | None = None):
    """Per-particle standard deviation (after rigid alignment) shown on the mean shape.

    Returns:
        ``pyvista.Plotter``; call ``.show()``.
    """
    import pyvista as pv

    from .surface import prepare_environment

    prepare_environment()
    aligned = aligned_particles(cohort)
    mean = aligned.mean(axis=0)
    sd = np.sqrt(((aligned - mean) ** 2).sum(axis=2).mean(axis=0))
    plotter = pv.Plotter(off_screen=off_screen)
    if cohort.mean_mesh is not None:
        plotter.add_mesh(pv.read(cohort.mean_mesh), color='lightgrey', opacity=0.6, smooth_shading=True)
    cloud = pv.PolyData(mean)
    cloud['SD (mm)'] = sd
    plotter.add_mesh(cloud, scalars='SD (mm)', cmap='viridis', point_size=11, render_points_as_spheres=True)
    plotter.add_text(f'{len(aligned)} subjects, {len(sd)} particles: SD {sd.min():.1f}-{sd.max():.1f} mm', font_size=10)
    return plotter


# --------------------------------------------------------------------------- spread


def plot_cohort_spread(cohort: Cohort):
    """Where the femur sits in each image, and the spread of head diameter and femoral offset.

    The femur position is the particles' centroid relative to the image centre (mm). Head diameter and femoral
    offset (head centre to shaft axis) come from ``cohort.json`` and are shown when present.

    Returns:
        ``matplotlib.figure.Figure``.
    """
    import SimpleITK as sitk
    from matplotlib.figure import Figure

    offsets, splits = [], []
    for s in cohort:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(s.image))
        reader.ReadImageInformation()
        centre = np.array(reader.GetOrigin()) + np.array(reader.GetSpacing()) * (np.array(reader.GetSize()) - 1) / 2
        offsets.append(read_particles(s.particles).mean(axis=0) - centre)
        splits.append(s.split)
    offsets, splits = np.array(offsets), np.array(splits)
    measured = {m['id']: m for m in cohort.info.get('subjects', [])}
    fig = Figure(figsize=(13, 3.8), layout='constrained')
    axes = fig.subplots(1, 4)
    for ax, (h, v) in zip(axes[:2], [(0, 1), (0, 2)]):
        for split, marker in (('train', 'o'), ('test', 's')):
            sel = splits == split
            ax.scatter(offsets[sel, h], offsets[sel, v], marker=marker, label=split)
        ax.axhline(0, color='grey', lw=0.5)
        ax.axvline(0, color='grey', lw=0.5)
        ax.set_xlabel(f'{"xyz"[h]} (mm)')
        ax.set_ylabel(f'{"xyz"[v]} (mm)')
        ax.set_aspect('equal', adjustable='datalim')
        ax.set_title('femur centroid - image centre')
    axes[0].legend(fontsize=8)
    for ax, key, label in (
        (axes[2], 'head_diameter_mm', 'head diameter (mm)'),
        (axes[3], 'femoral_offset_mm', 'femoral offset (mm)'),
    ):
        values = [measured[i][key] for i in cohort.ids() if i in measured and key in measured[i]]
        if values:
            ax.hist(values, bins=min(10, max(3, len(values) // 2)), color='tab:blue', edgecolor='white')
            ax.set_title(f'{label}: {np.mean(values):.1f} ± {np.std(values):.1f}', fontsize=10)
        else:
            ax.text(0.5, 0.5, 'not recorded', ha='center', va='center', transform=ax.transAxes)
        ax.set_xlabel(label)
        ax.set_ylabel('subjects')
    _enable_figure_display()
    return fig
