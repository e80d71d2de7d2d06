"""The shape source of the femur cohort: per-subject femur and pelvis meshes sharing one triangulation each."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._validation import DataError

__all__ = ['DEFAULT_SOURCE', 'ShapeSource', 'load_shape_source']

DEFAULT_SOURCE = Path(__file__).with_name('llp26_meshes.npz')
_KEYS = ('femur_vertices', 'femur_faces', 'pelvis_vertices', 'pelvis_faces', 'subject_ids')


@dataclass(frozen=True)
class ShapeSource:
    """Meshes in correspondence (vertex ``i`` is the same point on every subject).

    Attributes:
        femur_vertices: (N, Vf, 3) mm.
        femur_faces: (Ff, 3) shared, closed, wound outwards.
        pelvis_vertices: (N, Vp, 3) mm, in the femur's frame (hip joint assembled).
        pelvis_faces: (Fp, 3) shared.
        subject_ids: N names.
        path: The file they came from.
        digest: First 16 hex digits of the file's SHA-256 (recorded with each cohort built from it).
    """

    femur_vertices: np.ndarray
    femur_faces: np.ndarray
    pelvis_vertices: np.ndarray
    pelvis_faces: np.ndarray
    subject_ids: list[str]
    path: Path
    digest: str

    def __len__(self) -> int:
        return len(self.subject_ids)


def load_shape_source(path: str | os.PathLike | None = None) -> ShapeSource:
    """Read and check an npz of femur and pelvis meshes (default: the embedded LLP26 meshes).

    Raises:
        FileNotFoundError: No such file.
        DataError: Missing keys, inconsistent shapes, faces out of range or non-finite coordinates (all listed).
    """
    path = DEFAULT_SOURCE if path is None else Path(path)
    if not path.is_file():
        hint = ' It is derived from the LLP26 model by tools/derive_llp26.py.' if path == DEFAULT_SOURCE else ''
        raise FileNotFoundError(f'Shape file not found: "{path}".{hint}')
    raw = path.read_bytes()
    with np.load(path, allow_pickle=False) as npz:
        missing = [k for k in _KEYS if k not in npz.files]
        if missing:
            raise DataError(f'"{path}" lacks the key(s) {missing}; expected {list(_KEYS)}.')
        arrays = {k: npz[k] for k in _KEYS}
    problems = []
    n = len(arrays['subject_ids'])
    for bone in ('femur', 'pelvis'):
        v, f = arrays[f'{bone}_vertices'], arrays[f'{bone}_faces']
        if v.ndim != 3 or v.shape[0] != n or v.shape[2] != 3:
            problems.append(f'"{path}": {bone}_vertices must have shape ({n}, V, 3); got {v.shape}.')
        elif not np.all(np.isfinite(v)):
            problems.append(f'"{path}": {bone}_vertices contain NaN or infinite values.')
        if f.ndim != 2 or f.shape[1] != 3:
            problems.append(f'"{path}": {bone}_faces must have shape (F, 3); got {f.shape}.')
        elif v.ndim == 3 and (f.min() < 0 or f.max() >= v.shape[1]):
            problems.append(f'"{path}": {bone}_faces index vertices outside [0, {v.shape[1]}).')
    if problems:
        raise DataError(problems)
    return ShapeSource(
        femur_vertices=arrays['femur_vertices'].astype(np.float64),
        femur_faces=arrays['femur_faces'].astype(np.int64),
        pelvis_vertices=arrays['pelvis_vertices'].astype(np.float64),
        pelvis_faces=arrays['pelvis_faces'].astype(np.int64),
        subject_ids=[str(s) for s in arrays['subject_ids']],
        path=path,
        digest=hashlib.sha256(raw).hexdigest()[:16],
    )
