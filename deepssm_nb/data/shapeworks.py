"""ShapeWorks inputs: project files (``.swproj``, ``.xlsx``) and folders of ShapeWorks-named files.

A **project** holds one row per subject. The columns read are, for a domain ``<d>``:

* ``name``: the subject id (the row number if absent);
* ``shape_<d>``: the surface (a mesh; a segmentation image when it is one);
* ``groomed_<d>``: the groomed surface (used as the mesh when ``shape_<d>`` is absent);
* ``world_particles_<d>``, ``local_particles_<d>``: ``.particles`` files;
* ``alignment_<d>``, ``procrustes_<d>``: 4x4 matrices as 16 numbers, row by row;
* ``image_<name>``: the image (one such column, or the one named by ``image=``);
* ``side`` (``L``/``R``) and ``split`` (``train``/``test``), optional.

Paths are relative to the project file's folder. The cohort's particles are the world particles; a subject with
only local particles gets ``procrustes @ alignment @ [local, 1]`` (a missing one of the two is the identity), which
is how ShapeWorks maps local to world. The images are taken to be in the frame of these particles, as they are in
the cohort folders this package writes.

A **ShapeWorks-named folder** holds, anywhere in the folder or one level down, files such as
``<id>_L_femur.nrrd`` (or ``.nii.gz``, ``.mha``), ``<id>_L_femur.vtk`` and ``<id>_L_femur_world.particles`` /
``<id>_L_femur_local.particles``. A particle file pairs with the image and mesh whose name (without extension) it
starts with, up to an ``_``; the subject id is that common prefix, cut before its side token (``m07`` for
``m07_L_femur``; the whole prefix when two subjects would share the id). World particles win over local ones when both
exist. Subjects whose files are in a folder named ``test`` are test subjects; the others are training subjects.

The side of a subject is the ``side`` column, else the ``_L`` / ``_R`` (or ``left`` / ``right``) part of its
file names.
"""

from __future__ import annotations

import csv
import io as _stdio
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..io import IMAGE_SUFFIXES, MESH_SUFFIXES
from .layout import MANIFEST_COLUMNS, SPLITS

__all__ = [
    'PROJECT_SUFFIXES',
    'SIDES',
    'has_shapeworks_names',
    'infer_side',
    'parse_side',
    'proposed_manifest',
    'read_project',
    'shapeworks_entries',
]

PROJECT_SUFFIXES = ('.swproj', '.xlsx')
SIDES = ('L', 'R')
_SIDE_WORDS = {'l': 'L', 'left': 'L', 'r': 'R', 'right': 'R'}
_PARTICLE_KINDS = ('world', 'local')
_SKIP_DIRS = {'segmentations', 'distance_transforms', 'groomed'}


# --------------------------------------------------------------------------- sides


def parse_side(value: Any, *, where: str, problems: list[str]) -> str | None:
    """``'L'``, ``'R'`` or None (empty) from a side cell; anything else is a problem naming ``where``."""
    text = '' if value is None else str(value).strip()
    if not text:
        return None
    side = _SIDE_WORDS.get(text.lower())
    if side is None:
        problems.append(f'{where}: side must be one of {list(SIDES)} (or left/right, any case) or empty; got {text!r}.')
    return side


def infer_side(*names: str) -> str | None:
    """The side named by ``_L`` / ``_R`` (or ``left`` / ``right``) tokens of file names; None if none or both."""
    found = set()
    for name in names:
        for token in re.split(r'[_\-.\s]+', name):
            side = _SIDE_WORDS.get(token.lower()) if len(token) > 1 else {'L': 'L', 'R': 'R'}.get(token)
            if side:
                found.add(side)
    return found.pop() if len(found) == 1 else None


# --------------------------------------------------------------------------- project files


def _read_table(path: Path, problems: list[str]) -> list[dict[str, str]]:
    """The rows of a project's data table, every cell as a string ('' when empty)."""
    if path.suffix.lower() == '.xlsx':
        return _read_xlsx(path, problems)
    try:
        doc = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as e:
        problems.append(f'"{path}" is not a JSON ShapeWorks project ({type(e).__name__}: {e}).')
        return []
    data = doc.get('data') if isinstance(doc, dict) else None
    if isinstance(data, dict):  # column-oriented: {column: [values]}
        lengths = {str(k): len(v) if isinstance(v, list) else -1 for k, v in data.items()}
        n = max(lengths.values(), default=0)
        bad = {k: m for k, m in lengths.items() if m != n}
        for k, m in bad.items():
            what = 'is not a list' if m < 0 else f'has {m} values'
            problems.append(
                f'"{path}": column {k!r} {what}; expected {n} values, one per subject, like the other columns.'
            )
        if bad:
            return []
        data = [{k: v[i] for k, v in data.items()} for i in range(n)]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        problems.append(
            f'"{path}": expected a "data" key holding one object per subject (ShapeWorks project); '
            f'got {type(data).__name__}.'
        )
        return []
    return [{str(k): '' if v is None else str(v) for k, v in row.items()} for row in data]


def _read_xlsx(path: Path, problems: list[str]) -> list[dict[str, str]]:
    try:
        import openpyxl
    except ImportError:
        raise ImportError(
            f'Reading "{path}" needs openpyxl: pip install "deepssm-nb[xlsx]" (or pip install '
            'openpyxl), or save the project as .swproj.'
        ) from None
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # noqa: BLE001 - openpyxl raises several unrelated types for a damaged file
        problems.append(f'"{path}" could not be read as a spreadsheet ({type(e).__name__}: {e}).')
        return []
    try:
        sheet = book['data'] if 'data' in book.sheetnames else book.worksheets[0]
        rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    finally:
        book.close()
    if not rows:
        return []
    header = ['' if h is None else str(h).strip() for h in rows[0]]
    table = []
    for lineno, row in enumerate(rows[1:], start=2):
        if all(v is None or str(v).strip() == '' for v in row):
            continue
        extra = [v for v in row[len(header) :] if v is not None and str(v).strip()]
        if extra:
            problems.append(
                f'"{path}", sheet "{sheet.title}", row {lineno}: {len(header) + len(extra)} values '
                f'for {len(header)} columns {header}.'
            )
        table.append({h: '' if v is None else str(v) for h, v in zip(header, row) if h})
    return table


def _domains(columns: set[str]) -> list[str]:
    prefixes = ('shape_', 'groomed_', 'world_particles_', 'local_particles_')
    return sorted({c[len(p) :] for c in columns for p in prefixes if c.startswith(p) and len(c) > len(p)})


def _matrix(text: str, where: str, problems: list[str]) -> np.ndarray | None:
    """A 4x4 matrix from 16 numbers (row by row); None when empty."""
    if not text.strip():
        return None
    try:
        values = [float(v) for v in text.replace(',', ' ').split()]
    except ValueError:
        problems.append(f'{where}: expected 16 numbers (a 4x4 matrix, row by row); got {text!r}.')
        return None
    if len(values) != 16:
        problems.append(f'{where}: expected 16 numbers (a 4x4 matrix, row by row); got {len(values)}.')
        return None
    T = np.asarray(values).reshape(4, 4)
    if not np.all(np.isfinite(T)) or not np.allclose(T[3], [0, 0, 0, 1]):
        problems.append(f'{where}: the last row of the matrix must be 0 0 0 1 and every value finite; got {T[3]}.')
        return None
    return T


def read_project(
    path: str | Path, *, domain: str | None = None, image: str | None = None, problems: list[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """The subjects of a ShapeWorks project, as cohort entries.

    Args:
        path: The ``.swproj`` (JSON) or ``.xlsx`` file.
        domain: The domain to read; needed when the project has several.
        image: The image column's name after ``image_``; needed when there are several.
        problems: Problems found are appended here (one line each, naming the row and column).

    Returns:
        ``(entries, notes)``: one dict per subject (``id``, ``image``, ``particles``, ``mesh``, ``segmentation``,
        ``split``, ``side`` and, for local particles, ``local_to_world`` (4, 4)); ``notes`` says which particles
        were used.

    Raises:
        ImportError: An ``.xlsx`` project without openpyxl installed.
    """

    path = Path(path)
    rows = _read_table(path, problems)
    if problems:
        return [], []
    if not rows:
        problems.append(f'"{path}" lists no subjects.')
        return [], []
    columns = set().union(*rows)
    domains = _domains(columns)
    if domain is None:
        if len(domains) != 1:
            problems.append(
                f'"{path}" has {"no" if not domains else len(domains)} domains {domains}; '
                + (
                    'name one with domain=... .'
                    if domains
                    else 'expected columns such as shape_<domain> and world_particles_<domain>.'
                )
            )
            return [], []
        domain = domains[0]
    elif domain not in domains:
        problems.append(f'"{path}": no domain {domain!r}; the project has {domains}.')
        return [], []
    images = sorted(c[len('image_') :] for c in columns if c.startswith('image_'))
    if image is None and len(images) == 1:
        image = images[0]
    if image not in images:
        problems.append(
            f'"{path}": '
            + (f'no image column image_{image!r}; ' if image else '')
            + f'the project has image columns {["image_" + i for i in images]}'
            + ('; name one with image=... .' if len(images) > 1 else '; DeepSSM needs one.')
        )
        return [], []

    root, d = path.parent, domain
    entries, used, seen = [], {'world': 0, 'local': 0}, set()
    for n, row in enumerate(rows, start=1):
        sid = row.get('name', '').strip() or f'{n:03d}'
        where = f'"{path}", subject {sid!r} (row {n})'
        if sid in seen:
            problems.append(f'{where}: the name appears more than once.')
            continue
        seen.add(sid)
        cell = {
            k: row.get(k, '').strip()
            for k in (f'image_{image}', f'shape_{d}', f'groomed_{d}', f'world_particles_{d}', f'local_particles_{d}')
        }
        files = {k: (root / v if v else None) for k, v in cell.items()}
        shape = files[f'shape_{d}'] or files[f'groomed_{d}']
        is_seg = shape is not None and shape.name.lower().endswith(IMAGE_SUFFIXES)
        entry: dict[str, Any] = {
            'id': sid,
            'image': files[f'image_{image}'],
            'mesh': None if is_seg else shape,
            'segmentation': shape if is_seg else None,
        }
        if entry['image'] is None:
            problems.append(f'{where}: column image_{image} is empty.')
        split = row.get('split', '').strip() or 'train'
        if split not in SPLITS:
            problems.append(f'{where}: split must be one of {list(SPLITS)} or empty; got {split!r}.')
        entry['split'] = split
        entry['side'] = parse_side(row.get('side'), where=where, problems=problems)
        if entry['side'] is None:
            entry['side'] = infer_side(*(p.name for p in files.values() if p is not None))
        if files[f'world_particles_{d}'] is not None:
            entry['particles'] = files[f'world_particles_{d}']
            used['world'] += 1
        elif files[f'local_particles_{d}'] is not None:
            entry['particles'] = files[f'local_particles_{d}']
            A = _matrix(row.get(f'alignment_{d}', ''), f'{where}, column alignment_{d}', problems)
            P = _matrix(row.get(f'procrustes_{d}', ''), f'{where}, column procrustes_{d}', problems)
            if A is None and P is None and not any(f'{where}, column' in p for p in problems):
                problems.append(
                    f'{where}: only local particles ("{entry["particles"]}") and neither '
                    f'alignment_{d} nor procrustes_{d}, so their world frame is unknown; add the '
                    'transforms or the world_particles column.'
                )
            entry['local_to_world'] = (np.eye(4) if P is None else P) @ (np.eye(4) if A is None else A)
            used['local'] += 1
        else:
            problems.append(f'{where}: neither world_particles_{d} nor local_particles_{d} is filled in.')
            entry['particles'] = None
        entries.append(entry)
    notes = []
    if used['local']:
        notes.append(
            f'"{path.name}", domain {d!r}: {used["local"]} of {len(entries)} subjects have only local '
            f'particles; they were mapped to world by procrustes_{d} @ alignment_{d}; the others use '
            f'world_particles_{d}.'
        )
    return entries, notes


# --------------------------------------------------------------------------- ShapeWorks-named folders


def _stem(name: str, suffixes: tuple[str, ...]) -> str | None:
    low = name.lower()
    for sfx in suffixes:
        if low.endswith(sfx):
            return name[: -len(sfx)]
    return None


def _files(root: Path) -> list[Path]:
    """Files in ``root`` and its direct subfolders (hidden names and skipped folders left out)."""
    out = []
    for p in sorted(root.iterdir()):
        if p.name.startswith('.'):
            continue
        if p.is_file():
            out.append(p)
        elif p.is_dir() and p.name.lower() not in _SKIP_DIRS:
            out += [q for q in sorted(p.iterdir()) if q.is_file() and not q.name.startswith('.')]
    return out


def _particle_kind(path: Path) -> tuple[str, str] | None:
    """``(base, 'world' | 'local')`` for ``<base>_world.particles`` / ``<base>_local.particles``."""
    stem = _stem(path.name, ('.particles',))
    if stem is None:
        return None
    for kind in _PARTICLE_KINDS:
        if stem.lower().endswith('_' + kind):
            return stem[: -len(kind) - 1], kind
    return None


def has_shapeworks_names(root: Path) -> bool:
    """Whether ``root`` holds ``*_world.particles`` or ``*_local.particles`` files."""
    return any(_particle_kind(p) for p in _files(root))


def _matches(base: str, stem: str) -> bool:
    return base == stem or base.startswith(stem + '_') or stem.startswith(base + '_')


def shapeworks_entries(root: Path, problems: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Pair ShapeWorks-named particle files with images and meshes (see the module docstring).

    Returns:
        ``(entries, notes)`` as :func:`read_project`; problems (ambiguous or missing partners) are appended to
        ``problems``, each naming the files.
    """

    files = _files(root)
    images = {p: s for p in files if (s := _stem(p.name, IMAGE_SUFFIXES)) is not None}
    meshes = {p: s for p in files if (s := _stem(p.name, MESH_SUFFIXES)) is not None}
    particles: dict[str, dict[str, Path]] = {}
    for p in files:
        if (k := _particle_kind(p)) is not None:
            particles.setdefault(k[0], {})[k[1]] = p
    entries, both, claimed = [], 0, {}
    for base, kinds in sorted(particles.items()):
        part = kinds.get('world') or kinds['local']
        both += len(kinds) == 2
        img = [p for p, s in images.items() if _matches(base, s)]
        msh = [p for p, s in meshes.items() if _matches(base, s)]
        if len(img) != 1:
            what = 'no image' if not img else 'several images: ' + ', '.join(f'"{p.name}"' for p in img)
            problems.append(
                f'"{part}" pairs with {what}; expected one image named like the particle file up to '
                '"_world" / "_local" (e.g. <id>_L_femur.nrrd for <id>_L_femur_world.particles).'
            )
            continue
        if len(msh) > 1:
            problems.append(
                f'"{part}" pairs with several meshes: '
                + ', '.join(f'"{p.name}"' for p in msh)
                + '; expected at most one.'
            )
            continue
        if img[0] in claimed:
            problems.append(
                f'"{img[0]}" pairs with both "{claimed[img[0]]}" and "{part}"; expected one particle file per image.'
            )
            continue
        claimed[img[0]] = part
        names = [base, images[img[0]]] + ([meshes[msh[0]]] if msh else [])
        sid = min(names, key=len)
        split = 'test' if any(p.parent.name.lower() == 'test' for p in [part, img[0], *msh]) else 'train'
        entries.append(
            {
                'id': sid,
                'image': img[0],
                'particles': part,
                'mesh': msh[0] if msh else None,
                'segmentation': None,
                'split': split,
                'side': infer_side(*names),
            }
        )
    stems = [e['id'] for e in entries]
    short = {stem: _id_before_side(stem) for stem in stems}
    for e in entries:
        if list(short.values()).count(short[e['id']]) == 1:
            e['id'] = short[e['id']]
    notes = []
    if both:
        notes.append(f'"{root}": {both} subjects have both _world and _local particles; the world particles were used.')
    return entries, notes


def _id_before_side(stem: str) -> str:
    """``stem`` up to its first side token (``m07_L_femur`` -> ``m07``); ``stem`` itself if there is none."""
    tokens = stem.split('_')
    for i, token in enumerate(tokens[1:], start=1):
        if token in SIDES or token.lower() in ('left', 'right'):
            return '_'.join(tokens[:i])
    return stem


def proposed_manifest(root: Path, *, max_rows: int = 5) -> str:
    """The first lines of a ``manifest.csv`` filled in from the files in ``root`` (a start for the user)."""

    files = _files(root)
    images = {p: s for p in files if (s := _stem(p.name, IMAGE_SUFFIXES)) is not None}
    meshes = {p: s for p in files if (s := _stem(p.name, MESH_SUFFIXES)) is not None}
    parts = [
        (p, (_particle_kind(p) or (_stem(p.name, ('.particles',)), ''))[0])
        for p in files
        if p.name.lower().endswith('.particles') and p.name.lower() != 'mean.particles'
    ]
    buf = _stdio.StringIO()
    writer = csv.writer(buf, lineterminator='\n')
    writer.writerow(MANIFEST_COLUMNS)
    for p, base in parts[:max_rows]:
        img = next((q for q, s in images.items() if _matches(base, s)), None)
        msh = next((q for q, s in meshes.items() if _matches(base, s)), None)
        names = [base] + [s for s in (images.get(img), meshes.get(msh)) if s]
        rel = [q.relative_to(root).as_posix() if q else '' for q in (img, None, msh, p)]
        writer.writerow([_id_before_side(min(names, key=len)), *rel, 'train', infer_side(*names) or ''])
    more = len(parts) - max_rows
    return buf.getvalue() + (f'... ({more} more particle files)\n' if more > 0 else '')
