"""Surfaces from images and particles, and distances between surfaces.

The functions follow PyVista's style: they take :class:`pyvista.PolyData`,
return a new mesh and attach named point arrays instead of writing files.

* :func:`image_to_mesh`: the true surface of a segmentation (iso 0.5) or a
  distance transform (iso 0), by flying-edges marching cubes, in physical
  coordinates (origin, spacing and direction of the image), with optional
  light Taubin smoothing whose volume change is checked.
* :func:`warp_mesh`: a shape from its particles. The mean mesh is carried from
  the mean particles to the target particles by a 3D thin-plate spline
  (kernel ``U(r) = r`` plus an affine part, the biharmonic spline of 3D),
  fitted on the particles and evaluated at the mesh vertices. ShapeWorks
  uses biharmonic weights on a tetrahedral mesh instead; the spline needs no
  volume mesh, is smooth everywhere and reproduces the template exactly when
  the target equals the source particles.
* :func:`surface_distance` and :func:`symmetric_surface_distance`: from each
  vertex to the closest point on the other surface's triangles (not the
  closest vertex), with per-direction and symmetric statistics.

Example:
    >>> import pyvista as pv
    >>> a, b = pv.Sphere(radius=10), pv.Sphere(radius=11)
    >>> a_d, b_d, stats = symmetric_surface_distance(a, b)
    >>> round(stats['symmetric']['mean'], 1)
    1.0
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyvista as pv

from ._validation import DataError, check_array
from .io import IMAGE_SUFFIXES, MESH_SUFFIXES, atomic_path, read_image

__all__ = [
    'distance_stats',
    'image_to_mesh',
    'particle_error_map',
    'read_surface',
    'save_mesh',
    'surface_distance',
    'symmetric_surface_distance',
    'warp_mesh',
]

STAT_KEYS = ('mean', 'rms', 'p95', 'hausdorff')


# --------------------------------------------------------------------------- meshes from images


def image_to_mesh(
    image: Any,
    *,
    iso_value: float | None = None,
    smooth_iterations: int = 50,
    pass_band: float = 0.05,
    max_volume_change: float = 0.01,
    largest: bool = True,
) -> pv.PolyData:
    """Extract the surface of a segmentation or distance transform.

    Args:
        image: A ``SimpleITK.Image`` or a path to one. A 0/1 (or any
            two-valued integer) segmentation is meshed half way between its two
            values; any other image is read as a distance transform and meshed
            at 0.
        iso_value: Override the iso value.
        smooth_iterations: Taubin smoothing iterations (0: none). Taubin
            smoothing alternates shrinking and inflating steps, so it keeps
            the volume almost unchanged while removing the voxel staircase.
        pass_band: Taubin pass band (smaller is smoother).
        max_volume_change: If smoothing changes the enclosed volume by more
            than this fraction, the unsmoothed surface is returned with a
            warning.
        largest: Keep only the largest connected piece (drops stray voxels).

    Returns:
        Triangulated ``pv.PolyData`` in the image's physical coordinates (mm),
        with outward normals.

    Raises:
        DataError: The image has no voxel on both sides of the iso value.
    """
    import SimpleITK as sitk

    source = str(image) if isinstance(image, (str, os.PathLike)) else 'image'
    if isinstance(image, (str, os.PathLike)):
        image = read_image(image, name='segmentation or distance transform')
    arr = sitk.GetArrayFromImage(image)  # [z, y, x]
    if iso_value is None:
        iso_value = _default_iso_value(arr, image)
    if not (arr.min() < iso_value < arr.max()):
        raise DataError(
            f'{source}: no surface at iso value {iso_value:g}; the image values span '
            f'[{arr.min():g}, {arr.max():g}]. Is the segmentation empty?'
        )
    # Contour on the voxel index grid, then map indices to physical points
    # exactly as SimpleITK does: p = origin + direction @ (spacing * index).
    grid = pv.ImageData(dimensions=arr.shape[::-1])
    grid.point_data['values'] = np.ascontiguousarray(arr, dtype=np.float32).ravel()  # x varies fastest
    mesh = grid.contour([iso_value], scalars='values', method='flying_edges')
    if mesh.n_points == 0:
        raise DataError(f'{source}: marching cubes found no surface at iso value {iso_value:g}.')
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    index = np.asarray(mesh.points, dtype=float)
    mesh.points = np.asarray(image.GetOrigin()) + (index * np.asarray(image.GetSpacing())) @ direction.T
    mesh = mesh.triangulate().clean()
    mesh.point_data.clear()
    if largest:
        mesh = mesh.connectivity('largest')
        mesh.point_data.clear()
        mesh.cell_data.clear()
    if smooth_iterations > 0:
        smoothed = mesh.smooth_taubin(n_iter=smooth_iterations, pass_band=pass_band)
        change = abs(smoothed.volume - mesh.volume) / max(mesh.volume, 1e-12)
        if change > max_volume_change:
            warnings.warn(
                f'{source}: Taubin smoothing changed the volume by {100 * change:.2f} % '
                f'(> {100 * max_volume_change:g} %); the unsmoothed surface is returned.',
                stacklevel=2,
            )
        else:
            mesh = smoothed
    mesh = mesh.compute_normals(auto_orient_normals=True, split_vertices=False, cell_normals=False)
    return pv.PolyData(mesh.points, mesh.faces)


def _default_iso_value(arr: np.ndarray, image: Any) -> float:
    """Half way between the two labels of a binary image; 0 for a distance transform."""
    if np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_):
        values = np.unique(arr)
        if values.size <= 2:
            return 0.5 * float(values[0] + values[-1]) if values.size == 2 else 0.5
        raise DataError(
            f'an integer image with {values.size} labels ({values[:5].tolist()}...) is neither a binary '
            'segmentation nor a distance transform; pass iso_value= explicitly.'
        )
    return 0.0


def read_surface(path: str | os.PathLike, **kwargs: Any) -> pv.PolyData:
    """Read a surface: a mesh file as is, an image through :func:`image_to_mesh`.

    Args:
        path: A mesh (``.vtk``, ``.vtp``, ``.stl``, ``.ply``, ``.obj``) or an
            image (``.nrrd``, ``.nii(.gz)``, ``.mha``).
        **kwargs: Passed to :func:`image_to_mesh` for images.

    Returns:
        Triangulated ``pv.PolyData``.

    Raises:
        FileNotFoundError: No such file.
        DataError: Unknown extension or no triangles.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'Surface file not found: "{path}"')
    name = path.name.lower()
    if name.endswith(IMAGE_SUFFIXES):
        return image_to_mesh(path, **kwargs)
    if not name.endswith(MESH_SUFFIXES):
        raise DataError(f'"{path}": expected a mesh {MESH_SUFFIXES} or an image {IMAGE_SUFFIXES}.')
    mesh = pv.read(path)
    if not isinstance(mesh, pv.PolyData):
        mesh = mesh.extract_surface()
    mesh = mesh.triangulate()
    if mesh.n_cells == 0:
        raise DataError(f'"{path}" holds no surface triangles.')
    return mesh


def save_mesh(mesh: pv.DataSet, path: str | os.PathLike) -> Path:
    """Write a mesh atomically (format from the extension) and return the path."""
    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        mesh.save(tmp)
    return path


# --------------------------------------------------------------------------- meshes from particles


def warp_mesh(mesh: pv.PolyData, source_points: np.ndarray, target_points: np.ndarray) -> pv.PolyData:
    """Carry a mesh from one particle set to another with a 3D thin-plate spline.

    The displacement ``target - source`` is interpolated by the biharmonic
    spline of 3D (kernel ``U(r) = r``) plus an affine part
    (``scipy.interpolate.RBFInterpolator(kernel='linear', degree=1)``) and
    added to every vertex. The spline passes exactly through the particles,
    so ``source == target`` returns the mesh unchanged.

    Args:
        mesh: The template surface (e.g. the mean mesh), in the frame of
            ``source_points``.
        source_points: (M, 3) particles on the template (e.g. the mean particles).
        target_points: (M, 3) particles of the shape to build, in correspondence.

    Returns:
        A copy of ``mesh`` with moved points and the same connectivity.

    Raises:
        DataError: Shapes differ, values are not finite, or particles repeat.
    """
    from scipy.interpolate import RBFInterpolator

    src = check_array(source_points, name='source_points', shape=(None, 3))
    tgt = check_array(target_points, name='target_points', shape=(src.shape[0], 3))
    if src.shape[0] < 4:
        raise DataError(f'source_points must hold at least 4 particles for an affine fit; got {src.shape[0]}.')
    if np.unique(src.round(9), axis=0).shape[0] != src.shape[0]:
        raise DataError('source_points holds repeated particles; a thin-plate spline needs distinct points.')
    out = mesh.copy()
    disp = tgt - src
    if np.any(disp):
        spline = RBFInterpolator(src, disp, kernel='linear', degree=1)
        out.points = np.asarray(mesh.points, dtype=float) + spline(np.asarray(mesh.points, dtype=float))
    return out


# --------------------------------------------------------------------------- distances


def surface_distance(
    source: pv.PolyData, target: pv.PolyData, *, signed: bool = False, name: str = 'distance'
) -> pv.PolyData:
    """Distance from each vertex of ``source`` to the surface ``target``.

    The distance is to the closest point on ``target``'s triangles (edges and
    interiors included), not to its closest vertex, so a fine surface compared
    with a coarse copy of itself gives small distances.

    Args:
        source: The surface carrying the heat map.
        target: The surface measured against (triangulated if needed).
        signed: Positive outside ``target``, negative inside (needs a closed
            ``target``).
        name: Name of the point array.

    Returns:
        A copy of ``source`` with the point array ``name`` (mm).
    """
    if target.n_cells == 0:
        raise DataError('target has no cells; expected a triangulated surface.')
    target = target if target.is_all_triangles else target.triangulate()
    out = source.copy()
    if signed:
        out.point_data[name] = source.compute_implicit_distance(target)['implicit_distance']
        return out
    _, closest = target.find_closest_cell(np.asarray(source.points), return_closest_point=True)
    out.point_data[name] = np.linalg.norm(np.asarray(source.points) - closest, axis=1)
    return out


def distance_stats(distances: np.ndarray) -> dict[str, float]:
    """Mean, RMS, 95th percentile and maximum (Hausdorff) of unsigned distances.

    Args:
        distances: (V,) distances, mm.

    Returns:
        Dict with keys ``mean``, ``rms``, ``p95``, ``hausdorff``.
    """
    d = np.abs(check_array(distances, name='distances', ndim=1))
    if d.size == 0:
        raise DataError('distances is empty; expected one value per vertex.')
    return {
        'mean': float(d.mean()),
        'rms': float(np.sqrt(np.mean(d**2))),
        'p95': float(np.percentile(d, 95)),
        'hausdorff': float(d.max()),
    }


def symmetric_surface_distance(
    a: pv.PolyData, b: pv.PolyData, *, name: str = 'distance'
) -> tuple[pv.PolyData, pv.PolyData, dict[str, dict[str, float]]]:
    """Distances in both directions between two surfaces.

    Args:
        a: First surface (e.g. the truth).
        b: Second surface (e.g. the prediction).
        name: Name of the point array on both returned meshes.

    Returns:
        ``(a_with_distance, b_with_distance, stats)``. ``stats`` has the keys
        ``'a_to_b'``, ``'b_to_a'`` (each from :func:`distance_stats`) and
        ``'symmetric'``: the average of the two directed means (as ShapeWorks
        reports) and of the two mean squares (RMS), and the larger of the two
        95th percentiles and maxima (the classical Hausdorff distance).
    """
    a_d = surface_distance(a, b, name=name)
    b_d = surface_distance(b, a, name=name)
    ab, ba = distance_stats(a_d[name]), distance_stats(b_d[name])
    sym = {
        'mean': 0.5 * (ab['mean'] + ba['mean']),
        'rms': float(np.sqrt(0.5 * (ab['rms'] ** 2 + ba['rms'] ** 2))),
        'p95': max(ab['p95'], ba['p95']),
        'hausdorff': max(ab['hausdorff'], ba['hausdorff']),
    }
    return a_d, b_d, {'a_to_b': ab, 'b_to_a': ba, 'symmetric': sym}


def particle_error_map(
    mesh: pv.PolyData, particles: np.ndarray, errors: np.ndarray, *, k: int = 8, name: str = 'particle_error'
) -> pv.PolyData:
    """Spread per-particle errors onto a mesh's vertices (inverse-distance weights).

    Args:
        mesh: The surface the particles lie on (e.g. the mean mesh).
        particles: (M, 3) particles on ``mesh``.
        errors: (M,) one value per particle (e.g. the mean Euclidean error, mm).
        k: Nearest particles averaged per vertex.
        name: Name of the point array.

    Returns:
        A copy of ``mesh`` with the point array ``name``.
    """
    from scipy.spatial import cKDTree

    pts = check_array(particles, name='particles', shape=(None, 3))
    err = check_array(errors, name='errors', shape=(pts.shape[0],))
    k = int(min(k, pts.shape[0]))
    dist, idx = cKDTree(pts).query(np.asarray(mesh.points), k=k)
    dist, idx = dist.reshape(len(dist), k), idx.reshape(len(idx), k)
    w = 1.0 / np.maximum(dist, 1e-9) ** 2
    out = mesh.copy()
    out.point_data[name] = (w * err[idx]).sum(axis=1) / w.sum(axis=1)
    return out
