"""Triangle meshes as legacy ``.vtk`` POLYDATA files, without VTK.

The data path (cohort, grooming, augmentation, training, prediction) only
needs to write and read triangle meshes, so it does not depend on VTK; the
files open in ParaView, ShapeWorks Studio and PyVista. Other mesh formats
(``.ply``, ``.stl``, ``.vtp``) are read through PyVista when it is installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._validation import DataError
from .io import atomic_path

__all__ = ['read_mesh', 'write_mesh']


def write_mesh(
    path: str | os.PathLike,
    vertices: np.ndarray,
    faces: np.ndarray,
    point_data: dict[str, np.ndarray] | None = None,
    *,
    title: str = 'deepssm_nb mesh',
) -> Path:
    """Write a triangle mesh as a binary legacy VTK POLYDATA file, atomically.

    Args:
        path: Destination (``.vtk``).
        vertices: (V, 3) coordinates in mm.
        faces: (F, 3) vertex indices.
        point_data: Optional named scalar arrays, each (V,).
        title: The file's title line.

    Raises:
        DataError: Wrong shapes, indices out of range, or non-finite values.
    """
    v = np.asarray(vertices, dtype='>f4')
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise DataError(f'vertices for "{path}" must have shape (V, 3); got {v.shape}.')
    if f.ndim != 2 or f.shape[1] != 3 or (f.size and (f.min() < 0 or f.max() >= len(v))):
        raise DataError(f'faces for "{path}" must be (F, 3) indices into {len(v)} vertices; got shape {f.shape}.')
    if not np.all(np.isfinite(v)):
        raise DataError(f'vertices for "{path}" contain NaN or infinite values.')
    cells = np.hstack([np.full((len(f), 1), 3), f]).astype('>i4')
    parts = [
        f'# vtk DataFile Version 3.0\n{title}\nBINARY\nDATASET POLYDATA\nPOINTS {len(v)} float\n'.encode(),
        v.tobytes(),
        f'\nPOLYGONS {len(f)} {cells.size}\n'.encode(),
        cells.tobytes(),
        b'\n',
    ]
    if point_data:
        parts.append(f'POINT_DATA {len(v)}\n'.encode())
        for name, values in point_data.items():
            a = np.asarray(values, dtype='>f4').reshape(-1)
            if a.shape != (len(v),):
                raise DataError(f'point array {name!r} for "{path}" must have {len(v)} values; got {a.size}.')
            parts += [f'SCALARS {name} float 1\nLOOKUP_TABLE default\n'.encode(), a.tobytes(), b'\n']
    with atomic_path(path) as tmp:
        tmp.write_bytes(b''.join(parts))
    return Path(path)


def read_mesh(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Read a triangle mesh.

    Legacy ``.vtk`` files written by :func:`write_mesh` are parsed directly;
    anything else goes through PyVista (triangulated).

    Returns:
        ``(vertices (V, 3) float64, faces (F, 3) int64, point_data)``.

    Raises:
        FileNotFoundError: No such file.
        DataError: The file is not a readable triangle mesh.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'Mesh file not found: "{path}"')
    raw = path.read_bytes()
    if (
        path.suffix.lower() == '.vtk'
        and raw.startswith(b'# vtk DataFile')
        and b'\nBINARY\n' in raw[:200]
        and b'DATASET POLYDATA' in raw[:200]
    ):
        try:
            return _parse_binary_polydata(raw)
        except (ValueError, IndexError):
            pass
    try:
        import pyvista as pv
    except ImportError:  # pragma: no cover - pyvista is a dependency
        raise DataError(f'"{path}": only binary legacy .vtk meshes can be read without PyVista.') from None
    try:
        mesh = pv.read(str(path))
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file
        raise DataError(f'"{path}" could not be read as a mesh: {str(e).splitlines()[0] if str(e) else e}') from None
    mesh = mesh.extract_surface().triangulate() if not isinstance(mesh, pv.PolyData) else mesh.triangulate()
    if mesh.n_cells == 0:
        raise DataError(f'"{path}" holds no triangles.')
    faces = np.asarray(mesh.faces).reshape(-1, 4)[:, 1:].astype(np.int64)
    data = {k: np.asarray(mesh.point_data[k]) for k in mesh.point_data}
    return np.asarray(mesh.points, dtype=float), faces, data


def _parse_binary_polydata(raw: bytes) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    pos = raw.index(b'POINTS ')
    end = raw.index(b'\n', pos)
    n = int(raw[pos:end].split()[1])
    start = end + 1
    v = np.frombuffer(raw, dtype='>f4', count=3 * n, offset=start).reshape(n, 3).astype(float)
    pos = raw.index(b'POLYGONS ', start + 12 * n)
    end = raw.index(b'\n', pos)
    nf, size = (int(x) for x in raw[pos:end].split()[1:3])
    cells = np.frombuffer(raw, dtype='>i4', count=size, offset=end + 1).reshape(nf, 4)
    if not np.all(cells[:, 0] == 3):
        raise ValueError('not a triangle mesh')
    data: dict[str, np.ndarray] = {}
    cursor = end + 1 + 4 * size
    while True:
        pos = raw.find(b'SCALARS ', cursor)
        if pos < 0:
            break
        name = raw[pos : raw.index(b'\n', pos)].split()[1].decode()
        lut = raw.index(b'LOOKUP_TABLE', pos)
        start = raw.index(b'\n', lut) + 1
        data[name] = np.frombuffer(raw, dtype='>f4', count=n, offset=start).astype(float)
        cursor = start + 4 * n
    return v, cells[:, 1:].astype(np.int64), data
