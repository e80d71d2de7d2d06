"""A cohort: subjects with an image and correspondence particles, in a ShapeWorks-style folder.

Folder layout (``<id>`` is the subject id)::

    images/<id>.nrrd              CT-like image (any 3D scalar format SimpleITK reads)
    particles/<id>.particles      M lines "x y z", physical coordinates of the image, in correspondence
    segmentations/<id>.nrrd       optional label image (0/1) on the image grid
    meshes/<id>.vtk               optional surface, physical coordinates of the image
    manifest.csv                  optional: id,image,segmentation,mesh,particles,split,side (paths relative to the
                                  folder; side L or R, optional)
    mean.vtk, mean.particles      optional mean shape
    cohort.json                   optional: how the cohort was built

Without a manifest, files are paired by subject id (the file name without its extension) and every subject is a
training subject. :func:`load_cohort` also reads a ShapeWorks project file (``.swproj``, ``.xlsx``) and a folder of
ShapeWorks-named files (``<id>_L_femur.nrrd`` with ``<id>_L_femur_world.particles``); see
:mod:`deepssm_nb.data.shapeworks`.
"""

from __future__ import annotations

import csv
import io as _stdio
import os
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import DataError, find_by_id, look_up_option
from ..io import IMAGE_SUFFIXES, MESH_SUFFIXES, atomic_write_text, read_json, read_particles, write_particles
from . import shapeworks
from .layout import MANIFEST_COLUMNS, SPLITS

__all__ = ['Cohort', 'Subject', 'load_cohort', 'write_manifest']

_KINDS = {
    'images': IMAGE_SUFFIXES,
    'particles': ('.particles',),
    'segmentations': IMAGE_SUFFIXES,
    'meshes': MESH_SUFFIXES,
}


@dataclass
class Subject:
    """One subject's files.

    Attributes:
        id: Subject id.
        image: The image file.
        particles: The ``.particles`` file (image physical space).
        mesh: The surface mesh, or None.
        segmentation: The label image, or None.
        split: ``'train'`` or ``'test'``.
        side: ``'L'``, ``'R'`` or None (unknown): grooming reflects the subjects of the minority side.
    """

    id: str
    image: Path
    particles: Path
    mesh: Path | None = None
    segmentation: Path | None = None
    split: str = 'train'
    side: str | None = None


@dataclass
class Cohort:
    """Subjects of one folder, with train/test split and the mean shape.

    Attributes:
        root: The folder.
        subjects: The subjects, in manifest (or id) order.
        mean_mesh: ``mean.vtk`` if present.
        mean_particles: ``mean.particles`` if present.
        info: The content of ``cohort.json`` if present (build parameters, per-subject pose and measurements).

    Example:
        >>> cohort = load_cohort('femur_n26_m512_s1.0_seed0')      # doctest: +SKIP
        >>> cohort.particles('train').shape                        # doctest: +SKIP
        (22, 512, 3)
    """

    root: Path
    subjects: list[Subject]
    mean_mesh: Path | None = None
    mean_particles: Path | None = None
    info: dict[str, Any] = field(default_factory=dict, repr=False)

    def ids(self, split: str | None = None) -> list[str]:
        """Subject ids, optionally of one split (``'train'`` or ``'test'``)."""
        return [s.id for s in self._select(split)]

    def subset(self, split: str) -> Cohort:
        """A Cohort with only the subjects of ``split``."""
        return replace(self, subjects=self._select(split))

    def particles(self, split: str | None = None) -> np.ndarray:
        """Read the particles of every subject (of ``split``): (N, M, 3) in each image's physical space."""
        subjects = self._select(split)
        if not subjects:
            raise DataError(f'the cohort in "{self.root}" has no {split or ""} subjects.'.replace('  ', ' '))
        first = read_particles(subjects[0].particles)
        rest = [read_particles(s.particles, num_particles=len(first)) for s in subjects[1:]]
        return np.stack([first, *rest])

    def _select(self, split: str | None) -> list[Subject]:
        if split is None:
            return list(self.subjects)
        split = look_up_option(split, SPLITS, name='split')
        return [s for s in self.subjects if s.split == split]

    def __len__(self) -> int:
        return len(self.subjects)

    def __iter__(self) -> Iterator[Subject]:
        return iter(self.subjects)

    def __getitem__(self, key: int | str) -> Subject:
        return find_by_id(self.subjects, key, where=f' in "{self.root}"')

    def __repr__(self) -> str:
        counts = Counter(s.split for s in self.subjects)
        return (
            f'Cohort(root="{self.root}", {len(self)} subjects: {counts.get("train", 0)} train, '
            f'{counts.get("test", 0)} test)'
        )


# --------------------------------------------------------------------------- manifest


def write_manifest(path: str | os.PathLike, subjects: list[Subject], root: str | os.PathLike) -> Path:
    """Write ``manifest.csv`` (paths relative to ``root``), atomically."""
    root = Path(root)
    buf = _stdio.StringIO()
    writer = csv.writer(buf, lineterminator='\n')
    writer.writerow(MANIFEST_COLUMNS)
    for s in subjects:
        rel = [_relative(p, root) for p in (s.image, s.segmentation, s.mesh, s.particles)]
        writer.writerow([s.id, *rel, s.split, getattr(s, 'side', None) or ''])
    return atomic_write_text(path, buf.getvalue())


def _relative(path: Path | None, root: Path) -> str:
    if path is None:
        return ''
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _read_manifest(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    with open(path, newline='') as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        missing = [c for c in ('id', 'image', 'particles') if c not in columns]
        if missing:
            problems.append(
                f'"{path}": missing column(s) {missing}; expected the columns {list(MANIFEST_COLUMNS)} '
                f'(segmentation, mesh and split optional); got {columns}.'
            )
            return []
        rows = list(reader)
    entries, seen = [], set()
    for lineno, row in enumerate(rows, start=2):
        sid = (row.get('id') or '').strip()
        if not sid:
            problems.append(f'"{path}", line {lineno}: empty subject id.')
            continue
        if sid in seen:
            problems.append(f'"{path}", line {lineno}: subject id {sid!r} appears more than once.')
            continue
        seen.add(sid)
        split = (row.get('split') or '').strip() or 'train'
        if split not in SPLITS:
            problems.append(f'"{path}", line {lineno}: split must be one of {list(SPLITS)}; got {split!r}.')
        entry = {
            'id': sid,
            'split': split,
            'side': shapeworks.parse_side(row.get('side'), where=f'"{path}", line {lineno}', problems=problems),
        }
        for key in ('image', 'particles', 'segmentation', 'mesh'):
            value = (row.get(key) or '').strip()
            entry[key] = (path.parent / value) if value else None
        for key in ('image', 'particles'):
            if entry[key] is None:
                problems.append(f'"{path}", line {lineno}: subject {sid!r} has no {key} path.')
        entries.append(entry)
    return entries


# --------------------------------------------------------------------------- discovery without a manifest


def _stem(path: Path, suffixes: tuple[str, ...]) -> str | None:
    name = path.name
    for sfx in suffixes:
        if name.lower().endswith(sfx):
            return name[: -len(sfx)]
    return None


def _discover(root: Path, problems: list[str]) -> list[dict[str, Any]]:
    found: dict[str, dict[str, Path]] = {kind: {} for kind in _KINDS}
    for kind, suffixes in _KINDS.items():
        folder = root / kind
        if not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            sid = _stem(p, suffixes)
            if sid is None or p.name.startswith('.'):
                continue
            if sid in found[kind]:
                problems.append(f'"{p}" and "{found[kind][sid]}" both claim subject {sid!r} in {kind}/.')
                continue
            found[kind][sid] = p
    images, particles = found['images'], found['particles']
    for sid in sorted(set(images) - set(particles)):
        problems.append(f'"{images[sid]}" has no partner particle file (expected particles/{sid}.particles).')
    for sid in sorted(set(particles) - set(images)):
        problems.append(
            f'"{particles[sid]}" has no partner image (expected images/{sid}.nrrd or another image format).'
        )
    ids = sorted(set(images) & set(particles))
    for kind in ('segmentations', 'meshes'):
        for sid in sorted(set(found[kind]) - set(ids)):
            problems.append(f'"{found[kind][sid]}" has no partner image and particle file for subject {sid!r}.')
    return [
        {
            'id': sid,
            'image': images[sid],
            'particles': particles[sid],
            'segmentation': found['segmentations'].get(sid),
            'mesh': found['meshes'].get(sid),
            'split': 'train',
            'side': shapeworks.infer_side(sid),
        }
        for sid in ids
    ]


# --------------------------------------------------------------------------- checks


def _image_header(path: Path, what: str, problems: list[str]) -> tuple[int, ...] | None:
    """The image size from its header (voxels are not read); None and a problem if unusable."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
        problems.append(f'"{path}" could not be read as an image ({what}): {lines[-1] if lines else "unknown error"}')
        return None
    if reader.GetDimension() != 3:
        problems.append(
            f'"{path}": {what} must be 3D; got a {reader.GetDimension()}D image of size {reader.GetSize()}.'
        )
        return None
    if reader.GetNumberOfComponents() != 1:
        problems.append(
            f'"{path}": {what} must have scalar voxels; got {reader.GetNumberOfComponents()} components per voxel.'
        )
        return None
    if reader.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):  # only float voxels can be NaN
        arr = sitk.GetArrayFromImage(reader.Execute())  # a copy: a view would outlive its image
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        if bad:
            problems.append(
                f'"{path}": {what} holds {bad} NaN or infinite voxel(s) of {arr.size}; every voxel '
                'must be a finite number.'
            )
            return None
    return tuple(reader.GetSize())


def load_cohort(folder: str | os.PathLike, *, domain: str | None = None, image: str | None = None) -> Cohort:
    """Read a cohort (a folder, a ShapeWorks-named folder or a ShapeWorks project) and check it.

    Three layouts are accepted:

    * a folder with ``manifest.csv``, or with ``images/<id>.nrrd`` and ``particles/<id>.particles`` (see the
      module docstring);
    * a folder of ShapeWorks-named files, ``<id>_L_femur.nrrd`` + ``<id>_L_femur.vtk`` +
      ``<id>_L_femur_world.particles`` (or ``_local``), anywhere in it or one folder down;
    * a ShapeWorks project file, ``.swproj`` (JSON) or ``.xlsx`` (needs openpyxl).

    Every problem is collected and reported at once: a missing file or partner, an unreadable, non-3D or NaN image,
    a segmentation whose size differs from its image, an unreadable particle file or one with NaN coordinates,
    particle counts that differ between subjects, and side values other than L/R. When files cannot be paired, the
    message ends with the first lines of a ``manifest.csv`` filled in from the folder. Nothing is written unless
    the whole cohort is valid.

    Args:
        folder: The cohort folder or project file.
        domain: For a project: the domain (``shape_<domain>`` columns) to read; needed when there are several.
        image: For a project: the image column (``image_<image>``); needed when there are several.

    Returns:
        The cohort. For a project whose subjects have only local particles, their world particles are written to
        ``<project folder>/<project name>_world_particles/`` and listed as the subjects' particles.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        DataError: The folder holds no subjects, or any of the problems above (one line per file).
        ImportError: An ``.xlsx`` project without openpyxl.
    """
    path = Path(folder)
    problems: list[str] = []
    notes: list[str] = []
    if path.is_file() and path.suffix.lower() in shapeworks.PROJECT_SUFFIXES:
        root = path.parent
        entries, notes = shapeworks.read_project(path, domain=domain, image=image, problems=problems)
    elif path.is_file():
        raise DataError(
            f'"{path}" is a file, but not a ShapeWorks project; expected a cohort folder or a file '
            f'ending in {list(shapeworks.PROJECT_SUFFIXES)}.'
        )
    elif not path.is_dir():
        raise FileNotFoundError(f'Cohort folder not found: "{path}"')
    else:
        root = path
        manifest = root / 'manifest.csv'
        if manifest.is_file():
            entries = _read_manifest(manifest, problems)
        else:
            named = shapeworks.has_shapeworks_names(root)
            entries, notes = shapeworks.shapeworks_entries(root, problems) if named else (_discover(root, problems), [])
            if problems:
                problems.append(
                    f'Write a manifest.csv in "{root}" to pair the files yourself; its first lines, '
                    'filled in from the folder:\n' + shapeworks.proposed_manifest(root).rstrip()
                )
        if not entries and not problems:
            raise DataError(
                f'"{root}" holds no subjects: expected images/<id>.nrrd with particles/<id>.particles '
                '(and optionally meshes/, segmentations/ and a manifest.csv), ShapeWorks-named files '
                '(<id>_L_femur.nrrd with <id>_L_femur_world.particles) or a .swproj project.'
            )

    particles = _check_entries(entries, problems)
    if problems:
        raise DataError(problems)
    for note in notes:
        warnings.warn(note, stacklevel=2)

    if any('local_to_world' in e for e in entries):
        out = root / f'{path.stem}_world_particles'
        for e in entries:
            if 'local_to_world' in e:
                T = e['local_to_world']
                local = particles[e['particles']]
                e['particles'] = write_particles(out / f'{e["id"]}.particles', local @ T[:3, :3].T + T[:3, 3])
    subjects = [
        Subject(e['id'], e['image'], e['particles'], e['mesh'], e['segmentation'], e['split'], e.get('side'))
        for e in entries
    ]
    info = read_json(root / 'cohort.json') if (root / 'cohort.json').is_file() else {}
    if path.is_file():
        info = {**info, 'project': str(path), 'domain': domain}
    mean_mesh, mean_particles = root / 'mean.vtk', root / 'mean.particles'
    return Cohort(
        root=root,
        subjects=subjects,
        mean_mesh=mean_mesh if mean_mesh.is_file() else None,
        mean_particles=mean_particles if mean_particles.is_file() else None,
        info=info,
    )


def _check_entries(entries: list[dict[str, Any]], problems: list[str]) -> dict[Path, np.ndarray]:
    """Check every subject's files (appending to ``problems``); return the particles read, by file."""
    particles: dict[Path, np.ndarray] = {}
    for e in entries:
        for key in ('image', 'particles', 'segmentation', 'mesh'):
            if e.get(key) is not None and not e[key].is_file():
                problems.append(f'"{e[key]}" ({key} of subject {e["id"]!r}) does not exist.')
                e[key + '_missing'] = True
        size = None
        if e.get('image') is not None and not e.get('image_missing'):
            size = _image_header(e['image'], 'image', problems)
        if e.get('segmentation') is not None and not e.get('segmentation_missing'):
            seg_size = _image_header(e['segmentation'], 'segmentation', problems)
            if size is not None and seg_size is not None and seg_size != size:
                problems.append(
                    f'"{e["segmentation"]}": segmentation size {seg_size} differs from its image size {size}.'
                )
        if e.get('particles') is not None and not e.get('particles_missing'):
            try:
                particles[e['particles']] = read_particles(e['particles'])
            except (DataError, OSError, UnicodeDecodeError) as err:  # report and keep going
                problems.append(str(err))
    if particles:
        usual, _ = Counter(len(p) for p in particles.values()).most_common(1)[0]
        for path, p in particles.items():
            if len(p) != usual:
                problems.append(f'"{path}" holds {len(p)} particles; the other subjects hold {usual}.')
    return particles
