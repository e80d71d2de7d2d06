"""3D views of surfaces and surface-distance heat maps, for notebooks and scripts.

Every plotting function returns a :class:`pyvista.Plotter` without showing it,
so a test can call ``p.render()`` and ``p.screenshot()``. In a notebook, end
the cell with :func:`show`, which picks the display backend
(:func:`select_backend`):

* ``'trame'``: interactive, in a live JupyterLab / Jupyter Notebook / VS Code
  front-end (on JupyterHub and Binder through jupyter-server-proxy);
* ``'html'``: interactive and self-contained, where trame's local server is
  out of reach (Google Colab);
* ``'static'``: a PNG, when the notebook runs headless (CI, ``nbclient``,
  ``make tutorial``) so the saved notebook still shows the picture.

``PYVISTA_JUPYTER_BACKEND`` in the environment always wins.

Example:
    >>> import pyvista as pv
    >>> from deepssm_nb.surface import surface_distance
    >>> a = surface_distance(pv.Sphere(radius=1.0), pv.Sphere(radius=1.1))
    >>> p = plot_distance(a, off_screen=True)
    >>> p.render(); img = p.screenshot()      # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    'BACKENDS',
    'plot_comparison',
    'plot_distance',
    'plot_particle_error',
    'plot_subjects',
    'prepare_environment',
    'select_backend',
    'setup_pyvista',
    'show',
]

BACKENDS = ('static', 'html', 'trame', 'client', 'server', 'none')
CMAP = 'YlOrRd'
BAR_TITLE = 'mm'
LABELS = {'deepssm': 'DeepSSM', 'mean_shape': 'mean shape', 'pca_floor': 'PCA floor'}


# --------------------------------------------------------------------------- environment and backends


def _headless() -> bool:
    return sys.platform.startswith('linux') and not (os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY'))


def _in_kernel() -> bool:
    """True inside a Jupyter (ipykernel) kernel, live or driven headless."""
    shell = sys.modules.get('IPython') and sys.modules['IPython'].get_ipython()
    return bool(shell) and type(shell).__name__ == 'ZMQInteractiveShell'


def _live_frontend() -> bool:
    """True when a browser or editor front-end started this kernel.

    Jupyter Server sets ``JPY_SESSION_NAME`` for kernels opened from a
    notebook; VS Code sets ``VSCODE_*`` variables. ``nbclient`` (tests,
    ``make tutorial``) sets neither.
    """
    env = os.environ
    return _in_kernel() and ('JPY_SESSION_NAME' in env or any(k.startswith('VSCODE_') for k in env))


def _trame_available() -> bool:
    try:
        import trame  # noqa: F401 - only checks that it is installed
        import trame_vtk  # noqa: F401 - only checks that it is installed
    except ImportError:
        return False
    return True


def select_backend(backend: str | None = None) -> str:
    """The PyVista Jupyter backend for this environment.

    Order: the ``backend`` argument; ``$PYVISTA_JUPYTER_BACKEND``; ``'static'``
    when ``$CI`` is set; ``'html'`` on Google Colab; ``'trame'`` (``'html'``
    without trame) in a live front-end; ``'static'`` on a machine without a
    display; ``'trame'`` otherwise.

    Args:
        backend: Force a backend (one of :data:`BACKENDS`).

    Returns:
        The backend name.
    """
    from .._validation import look_up_option

    if backend is not None:
        return look_up_option(backend, BACKENDS, name='backend')
    env = os.environ.get('PYVISTA_JUPYTER_BACKEND')
    if env:
        return env
    if os.environ.get('CI'):
        return 'static'
    if 'google.colab' in sys.modules:
        return 'html'
    if _live_frontend():
        return 'trame' if _trame_available() else 'html'
    if _headless():
        return 'static'
    return 'trame' if _trame_available() else 'static'


def prepare_environment() -> None:
    """Before the first 3D view: EGL on a Linux machine without a display (no X warning), and no VTK.wasm download."""
    if _headless():
        os.environ.setdefault('VTK_DEFAULT_OPENGL_WINDOW', 'vtkEGLRenderWindow')
    _skip_wasm_download()


def _skip_wasm_download() -> None:
    """Keep pyvista's trame views from downloading VTK's WebAssembly build, which this package does not use.

    pyvista's Jupyter views register trame-vtklocal, which fetches VTK.wasm (tens of MB, from gitlab.kitware.com)
    on first use, for a browser-side renderer. The ``'trame'`` views here render on the kernel's side, so the
    download only costs time, and offline (a workshop room, a CI machine) it fails with a traceback in the cell.
    Unless the files are already there or ``VTK_WASM_DIR_OVERRIDE`` is set, trame-vtklocal is pointed at an empty
    local folder instead.
    """
    if 'VTK_WASM_DIR_OVERRIDE' in os.environ:
        return
    try:
        from trame_vtklocal.module import wasm, wasm_serve_path
    except ImportError:  # without trame-vtklocal nothing is downloaded
        return
    version = wasm.get_wasm_info()[0]
    if all(wasm.has_required_files(Path(wasm_serve_path) / bits / version, version) for bits in ('wasm32', 'wasm64')):
        return
    empty = Path(tempfile.gettempdir()) / 'deepssm_nb-no-vtk-wasm'
    empty.mkdir(parents=True, exist_ok=True)
    os.environ['VTK_WASM_DIR_OVERRIDE'] = str(empty)


def setup_pyvista(backend: str | None = None) -> str:
    """Prepare PyVista for this environment and return the chosen backend.

    Sets ``VTK_DEFAULT_OPENGL_WINDOW`` on a headless Linux machine, the trame
    proxy prefix on JupyterHub/Binder, and, inside a kernel, the global
    Jupyter backend. Call it once, before the first plot.
    """
    prepare_environment()
    import pyvista as pv

    chosen = select_backend(backend)
    prefix = os.environ.get('JUPYTERHUB_SERVICE_PREFIX')
    if prefix and chosen in ('trame', 'client', 'server') and 'PYVISTA_TRAME_JUPYTER_MODE' not in os.environ:
        pv.global_theme.trame.server_proxy_enabled = True
        pv.global_theme.trame.server_proxy_prefix = prefix.rstrip('/') + '/proxy/'
    if _in_kernel():
        pv.set_jupyter_backend(chosen)
    return chosen


def show(plotter: Any, *, backend: str | None = None, screenshot: str | os.PathLike | None = None) -> Any:
    """Display a plotter: inline in a notebook, in a window or as a file elsewhere.

    Args:
        plotter: A ``pv.Plotter`` from this module.
        backend: Force a Jupyter backend (default: :func:`select_backend`).
        screenshot: Also save a PNG here.

    Returns:
        Whatever ``Plotter.show`` returns (None in a notebook, where the
        view is displayed).
    """
    if screenshot is not None:
        plotter.render()
        plotter.screenshot(str(screenshot))
    if _in_kernel():
        return plotter.show(jupyter_backend=select_backend(backend))
    if plotter.off_screen:
        plotter.render()
        return None
    return plotter.show()


# --------------------------------------------------------------------------- plots


def _new_plotter(shape: tuple[int, int], window_size: tuple[int, int], off_screen: bool | None):
    prepare_environment()
    import pyvista as pv

    if off_screen is None:
        off_screen = bool(pv.OFF_SCREEN) or (_headless() and not _in_kernel())
    return pv.Plotter(shape=shape, window_size=window_size, off_screen=off_screen, border=False)


def _clim(meshes: Sequence[Any], scalars: str, clim: tuple[float, float] | None) -> tuple[float, float]:
    if clim is not None:
        return float(clim[0]), float(clim[1])
    values = np.concatenate([np.abs(np.asarray(m[scalars], dtype=float)) for m in meshes])
    high = float(np.percentile(values, 99)) if values.size else 1.0
    return 0.0, high if high > 0 else 1.0


def _add_heatmap(
    p: Any,
    mesh: Any,
    scalars: str,
    clim: tuple[float, float],
    *,
    bar: bool,
    title: str,
    points: np.ndarray | None = None,
    cmap: str = CMAP,
) -> None:
    p.add_mesh(
        mesh,
        scalars=scalars,
        clim=clim,
        cmap=cmap,
        smooth_shading=True,
        show_scalar_bar=bar,
        scalar_bar_args={
            'title': title,
            'vertical': True,
            'fmt': '%.2f',
            'position_x': 0.86,
            'position_y': 0.12,
            'height': 0.7,
            'width': 0.05,
            'title_font_size': 14,
            'label_font_size': 12,
            'n_labels': 5,
        },
    )
    if points is not None:
        p.add_points(np.asarray(points, dtype=float), color='black', point_size=6, render_points_as_spheres=True)


def _face_camera(p: Any, mesh: Any) -> None:
    """Look at the broad side of a shape: along its thinnest axis, with its longest axis up."""
    pts = np.asarray(mesh.points, dtype=float)
    center = pts.mean(axis=0)
    _, _, axes = np.linalg.svd(pts - center, full_matrices=False)
    axes = axes * np.sign(axes[np.arange(3), np.argmax(np.abs(axes), axis=1)])[:, None]  # deterministic signs
    p.camera_position = [tuple(center + axes[2] * 10 * np.ptp(pts, axis=0).max()), tuple(center), tuple(axes[0])]
    p.reset_camera()


def plot_distance(
    mesh: Any,
    *,
    scalars: str = 'distance',
    clim: tuple[float, float] | None = None,
    particles: np.ndarray | None = None,
    title: str | None = None,
    window_size: tuple[int, int] = (700, 500),
    off_screen: bool | None = None,
):
    """One surface coloured by a distance array (mm), with optional particles.

    Args:
        mesh: ``pv.PolyData`` with the point array ``scalars``.
        scalars: The point array to colour by.
        clim: Colour range; default 0 to the 99th percentile.
        particles: (M, 3) points drawn as small spheres.
        title: Text in the top-left corner.
        window_size: Pixels.
        off_screen: Render without a window (default: headless or ``pv.OFF_SCREEN``).

    Returns:
        ``pv.Plotter`` (not shown).
    """
    p = _new_plotter((1, 1), window_size, off_screen)
    _add_heatmap(p, mesh, scalars, _clim([mesh], scalars, clim), bar=True, title=BAR_TITLE, points=particles)
    if title:
        p.add_text(title, font_size=10)
    _face_camera(p, mesh)
    return p


def plot_comparison(
    true_mesh: Any,
    pred_mesh: Any,
    *,
    scalars: str = 'distance',
    clim: tuple[float, float] | None = None,
    true_particles: np.ndarray | None = None,
    pred_particles: np.ndarray | None = None,
    titles: tuple[str, str] = ('truth', 'prediction'),
    window_size: tuple[int, int] = (1000, 450),
    off_screen: bool | None = None,
):
    """True and predicted surfaces side by side, linked cameras, one colour bar.

    Args:
        true_mesh: Truth with the distance to the prediction (point array ``scalars``).
        pred_mesh: Prediction with the distance to the truth.
        scalars: Point array on both meshes.
        clim: Shared colour range (mm); default 0 to the 99th percentile of both.
        true_particles: (M, 3) true particles drawn on the left.
        pred_particles: (M, 3) predicted particles drawn on the right.
        titles: Captions of the two panels.
        window_size: Pixels.
        off_screen: Render without a window.

    Returns:
        ``pv.Plotter`` (not shown).
    """
    p = _new_plotter((1, 2), window_size, off_screen)
    lim = _clim([true_mesh, pred_mesh], scalars, clim)
    for col, (mesh, pts, text) in enumerate(
        ((true_mesh, true_particles, titles[0]), (pred_mesh, pred_particles, titles[1]))
    ):
        p.subplot(0, col)
        _add_heatmap(p, mesh, scalars, lim, bar=col == 1, title=BAR_TITLE, points=pts)
        p.add_text(text, font_size=10)
    p.link_views()
    _face_camera(p, true_mesh)
    return p


def plot_subjects(
    result: Any,
    *,
    method: str = 'deepssm',
    which: Sequence[str] = ('best', 'median', 'worst'),
    clim: tuple[float, float] | None = None,
    window_size: tuple[int, int] | None = None,
    off_screen: bool | None = None,
):
    """Best / median / worst subjects: truth and prediction heat maps, one row each.

    Each row's two views share a camera; every row uses one colour range.

    Args:
        result: An :class:`~deepssm_nb.analyze.AnalysisResult`.
        method: ``'deepssm'``, ``'mean_shape'`` or ``'pca_floor'``.
        which: Rows, among ``'best'``, ``'median'``, ``'worst'`` or subject ids.
        clim: Colour range (mm); default shared over all rows.
        window_size: Pixels (default 900 wide, 300 per row).
        off_screen: Render without a window.

    Returns:
        ``pv.Plotter`` (not shown).
    """
    ranking = result.ranking(method)
    ids = [ranking.get(w, w) for w in which]
    pairs = [result.meshes(i, method) for i in ids]
    lim = _clim([m for pair in pairs for m in pair], 'distance', clim)
    p = _new_plotter((len(ids), 2), window_size or (900, 300 * len(ids)), off_screen)
    for row, (label, sid, (true_mesh, pred_mesh)) in enumerate(zip(which, ids, pairs)):
        mean = result.value(sid, method, 'mean')
        for col, (mesh, text) in enumerate(
            ((true_mesh, f'{label}: {sid}, truth'), (pred_mesh, f'{LABELS.get(method, method)}, {mean:.2f} mm'))
        ):
            p.subplot(row, col)
            _add_heatmap(p, mesh, 'distance', lim, bar=(row, col) == (len(ids) - 1, 1), title=BAR_TITLE)
            p.add_text(text, font_size=8)
        first = p.renderers.loc_to_index((row, 0))
        p.link_views([first, first + 1])
        _face_camera(p, true_mesh)
    return p


def plot_particle_error(
    result: Any,
    *,
    methods: Sequence[str] | None = None,
    clim: tuple[float, float] | None = None,
    window_size: tuple[int, int] | None = None,
    off_screen: bool | None = None,
):
    """Per-particle error averaged over the test subjects, on the mean mesh.

    One panel per method (linked cameras, one colour range); the particles are
    drawn as spheres coloured by their own error.

    Args:
        result: An :class:`~deepssm_nb.analyze.AnalysisResult` computed with
            true particles.
        methods: Panels (default: every method of the result).
        clim: Colour range (mm); default shared.
        window_size: Pixels (default 400 wide per panel, 450 high).
        off_screen: Render without a window.

    Returns:
        ``pv.Plotter`` (not shown).
    """
    import pyvista as pv

    mesh, points = result.particle_error()
    methods = list(methods or [m for m in result.methods if m in mesh.point_data])
    lim = clim if clim is not None else (0.0, max(_clim([points], m, None)[1] for m in methods))
    p = _new_plotter((1, len(methods)), window_size or (400 * len(methods), 450), off_screen)
    for col, name in enumerate(methods):
        p.subplot(0, col)
        _add_heatmap(p, mesh, name, lim, bar=col == len(methods) - 1, title=BAR_TITLE)
        cloud = pv.PolyData(np.asarray(points.points))
        cloud['error'] = np.asarray(points[name])
        p.add_mesh(
            cloud,
            scalars='error',
            clim=lim,
            cmap=CMAP,
            point_size=7,
            render_points_as_spheres=True,
            show_scalar_bar=False,
        )
        p.add_text(LABELS.get(name, name), font_size=10)
    p.link_views()
    _face_camera(p, mesh)
    return p
