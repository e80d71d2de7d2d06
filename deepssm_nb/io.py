"""File input and output: ``.particles`` files, images, atomic writes.

Every writer here writes to a temporary file in the destination folder and
renames it into place, so an interrupted run never leaves a half-written file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ._validation import DataError

__all__ = [
    'IMAGE_SUFFIXES',
    'MESH_SUFFIXES',
    'atomic_path',
    'atomic_write_text',
    'plain',
    'read_image',
    'read_json',
    'read_particles',
    'write_image',
    'write_json',
    'write_particles',
]

IMAGE_SUFFIXES = ('.nrrd', '.nhdr', '.nii.gz', '.nii', '.mha', '.mhd')  # the image files the package reads
MESH_SUFFIXES = ('.vtk', '.vtp', '.ply', '.stl', '.obj')  # the surface mesh files it reads


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.

    Args:
        path: The final destination.
        suffix: Suffix of the temporary name (default: that of ``path``, so
            writers that choose a format by extension still work).

    Example:
        >>> with atomic_path('out.nrrd') as tmp:   # doctest: +SKIP
        ...     sitk.WriteImage(img, str(tmp))
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sfx = ''.join(path.suffixes) if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix=f'.tmp{sfx}', dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(plain(obj), indent=2) + '\n')


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, with an error that names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'File not found: "{path}"')
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f'"{path}" is not valid JSON: {e.msg} at line {e.lineno}.') from None


def plain(obj: Any) -> Any:
    """numpy scalars/arrays, tuples and paths -> plain Python (JSON, and ``torch.load(weights_only=True)``)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


# --------------------------------------------------------------------------- particles


def read_particles(path: str | os.PathLike, *, num_particles: int | None = None) -> np.ndarray:
    """Read a ``.particles`` file (one ``x y z`` line per particle).

    Args:
        path: The file.
        num_particles: If given, the expected number of particles M.

    Returns:
        (M, 3) float64 array.

    Raises:
        FileNotFoundError: No such file.
        DataError: Not three numeric columns, NaN/inf values, empty file, or a
            particle count different from ``num_particles``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'Particle file not found: "{path}"')
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise DataError(f'"{path}", line {lineno}: expected 3 columns (x y z); got {len(parts)}: {line.strip()!r}.')
        try:
            rows.append([float(p) for p in parts])
        except ValueError:
            raise DataError(f'"{path}", line {lineno}: expected numbers; got {line.strip()!r}.') from None
    if not rows:
        raise DataError(f'"{path}" holds no particles; expected one "x y z" line per particle.')
    arr = np.asarray(rows, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0]) + 1
        raise DataError(f'"{path}": particle {bad} has a NaN or infinite coordinate; all must be finite.')
    if num_particles is not None and arr.shape[0] != num_particles:
        raise DataError(f'"{path}" holds {arr.shape[0]} particles; expected {num_particles}.')
    return arr


def write_particles(path: str | os.PathLike, particles: np.ndarray) -> Path:
    """Write an (M, 3) array as a ``.particles`` file, atomically.

    Values are written with 9 significant decimals (``%.9g``), enough for
    sub-nanometre precision at the size of a femur.

    Raises:
        DataError: Not an (M, 3) finite array.
    """
    arr = np.asarray(particles, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise DataError(f'particles for "{path}" must have shape (M, 3); got {arr.shape}.')
    if not np.all(np.isfinite(arr)):
        raise DataError(f'particles for "{path}" contain NaN or infinite values.')
    text = '\n'.join(f'{x:.9g} {y:.9g} {z:.9g}' for x, y, z in arr) + '\n'
    return atomic_write_text(path, text)


# --------------------------------------------------------------------------- images


def read_image(path: str | os.PathLike, *, name: str = 'image'):
    """Read a 3D scalar image with SimpleITK and check it.

    Args:
        path: An ``.nrrd``, ``.nii(.gz)`` or ``.mha`` file.
        name: What the image is, for messages.

    Returns:
        ``SimpleITK.Image`` (3D, scalar).

    Raises:
        FileNotFoundError: No such file.
        DataError: Unreadable, not 3D, not scalar, or holding NaN/inf voxels.
    """
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{name.capitalize()} file not found: "{path}"')
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else 'unknown reader error'
        raise DataError(f'"{path}" could not be read as an image: {first}') from None
    if img.GetDimension() != 3:
        raise DataError(f'"{path}": {name} must be 3D; got a {img.GetDimension()}D image of size {img.GetSize()}.')
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f'"{path}": {name} must have scalar voxels; got {img.GetNumberOfComponentsPerPixel()} components per voxel.'
        )
    if img.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        arr = sitk.GetArrayViewFromImage(img)
        if not np.all(np.isfinite(arr)):
            raise DataError(f'"{path}": {name} contains NaN or infinite voxels.')
    return img


def write_image(path: str | os.PathLike, image, *, compress: bool = True) -> Path:
    """Write a SimpleITK image atomically (format from the extension)."""
    import SimpleITK as sitk

    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), compress)
    return Path(path)
