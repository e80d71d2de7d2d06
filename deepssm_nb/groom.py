"""Grooming: put every image of the cohort on one reference grid (the use case's steps 3, 5 and 7).

Longer than most modules: the stage runs resumable per-image jobs (in worker processes) and its result,
:class:`GroomResult`, reads itself back; the point and image registration it uses live in
:mod:`~deepssm_nb.registration` and :mod:`~deepssm_nb.imageops`.

1. **Align the training shapes**: a generalised Procrustes fit (rotation, translation and, by default, an isotropic
   scale) of each training subject's particles onto the mean shape, in the reference subject's own physical frame.
   By default the reference is the *medoid*, the training subject closest to the mean. This fixes the reference
   image (the medoid's image resampled through its transform) and one grid: isotropic ``spacing``, identity
   direction, the union bounding box of the aligned training meshes (or particles) plus ``padding``.
2. **Align the training images**. With ``train_alignment='registration'`` (the default) every training image but
   the reference is registered to the reference image exactly as a new image will be, and its particles follow the
   same transform. The network then learns in the frame it will meet at test time, and the pose that image
   registration leaves (about 1.4 mm on the femurs, not a shape difference) is part of what it learns to predict.
   With ``'procrustes'`` the training images are resampled through their particle-based Procrustes transforms: a
   cleaner frame, but one that new images never reach, since they have no particles.
3. **Register the test images** to the reference image (translation, rigid, similarity; see
   :func:`~deepssm_nb.registration.register_image`) and keep each 4x4 transform ``T`` (``p_world = T @ p_orig``),
   so predictions in the world frame map back to the original image with ``inv(T)``. As the cohort's true
   particles are known, the registration error of every registered image is measured
   (:func:`~deepssm_nb.registration.registration_error`); ``groom.json`` summarises it over the test images.

Output folder (``groom_dir``): ``reference_image.nrrd``, ``reference_mask.nrrd`` (where the registration metric
looks), ``images/<id>.nrrd``, ``particles/<id>.particles`` (world frame), ``mean.particles``, ``records/`` (what
lets a rerun skip finished subjects) and ``groom.json`` (everything; see :func:`load_groomed`).

Example:
    >>> groomed = run_grooming(get_profile('smoke'), cohort)        # doctest: +SKIP
    >>> groomed.images('train')[0]                                  # doctest: +SKIP
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._validation import (
    ConfigError,
    DataError,
    check_in_range,
    check_random_state,
    find_by_id,
    look_up_option,
    nearest_spelling,
)
from .freshness import StageRecord
from .imageops import downsample_image, reference_grid, resample_to_reference
from .io import read_image, read_json, read_particles, write_image, write_json, write_particles
from .registration import (
    REGISTRATION_STAGES,
    apply_transform,
    generalized_procrustes,
    register_image,
    registration_error,
    rigid_transform,
    surface_band,
)

__all__ = [
    'GroomResult',
    'GroomedSubject',
    'groom_cohort',
    'image_x_reflection',
    'load_groomed',
    'reflect_image',
    'register_to_reference',
    'run_grooming',
]

_FORMAT = 1
TRAIN_ALIGNMENTS = ('registration', 'procrustes')


@dataclass
class GroomedSubject:
    """One subject on the reference grid.

    Attributes:
        id: Subject id.
        split: ``'train'`` or ``'test'`` (any non-train split is registered).
        image: The groomed image file.
        particles: World-frame particles: the subject's particles mapped by
            ``transform`` (for test subjects, for evaluation only).
        transform: (4, 4) matrix, ``p_world = transform @ [p_orig, 1]``.
        registration_error_mm: Mean registration error of a registered image
            (None for an image resampled through its Procrustes transform), mm.
        registration_error_max_mm: Largest particle error of a registered image, mm.
        source: The subject's original image file (what ``transform`` maps from), or None if unknown.
    """

    id: str
    split: str
    image: Path
    particles: Path
    transform: np.ndarray
    registration_error_mm: float | None = None
    registration_error_max_mm: float | None = None
    source: Path | None = None


@dataclass
class GroomResult:
    """The groomed cohort (see :func:`groom_cohort`).

    Attributes:
        root: The groom folder.
        reference_image: The reference image file (defines the grid).
        spacing: Voxel size of the grid, mm.
        subjects: One :class:`GroomedSubject` per subject, cohort order.
        reference_id: Id of the reference subject.
        bbox: (2, 3) world bounding box ``[min, max]`` of the aligned
            training shapes, without padding.
        mean_particles: World-frame mean training shape file.
        reference_mask: Where the registration metric is evaluated (a band
            around the reference femur), or None for the whole box.
        info: The parsed ``groom.json``.
    """

    root: Path
    reference_image: Path
    spacing: float
    subjects: list[GroomedSubject]
    reference_id: str = ''
    bbox: np.ndarray | None = None
    mean_particles: Path | None = None
    reference_mask: Path | None = None
    info: dict[str, Any] = field(default_factory=dict, repr=False)
    _images: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def reference_images(self):
        """``(reference, mask or None)`` as SimpleITK images, read once per result (registration reuses them)."""
        if 'reference' not in self._images:
            self._images['reference'] = read_image(self.reference_image, name='reference image')
            mask = self.reference_mask
            self._images['mask'] = read_image(mask, name='reference mask') if mask else None
        return self._images['reference'], self._images['mask']

    def _select(self, split: str | None) -> list[GroomedSubject]:
        if split is None:
            return list(self.subjects)
        return [s for s in self.subjects if s.split == split]

    def ids(self, split: str | None = None) -> list[str]:
        """Subject ids, optionally of one split."""
        return [s.id for s in self._select(split)]

    def images(self, split: str | None = None) -> list[Path]:
        """Groomed image files, optionally of one split."""
        return [s.image for s in self._select(split)]

    def particle_files(self, split: str | None = None) -> list[Path]:
        """World-frame particle files, optionally of one split."""
        return [s.particles for s in self._select(split)]

    def particles(self, split: str | None = None) -> np.ndarray:
        """World-frame particles, (N, M, 3)."""
        return np.stack([read_particles(p) for p in self.particle_files(split)])

    def transforms(self, split: str | None = None) -> np.ndarray:
        """Transforms original -> world, (N, 4, 4)."""
        return np.stack([s.transform for s in self._select(split)])

    def registration_table(self) -> list[dict[str, Any]]:
        """Per registered subject: ``id``, ``split``, ``mean_mm``, ``max_mm``."""
        return [
            {'id': s.id, 'split': s.split, 'mean_mm': s.registration_error_mm, 'max_mm': s.registration_error_max_mm}
            for s in self.subjects
            if s.registration_error_mm is not None
        ]

    def __len__(self) -> int:
        return len(self.subjects)

    def __getitem__(self, key: int | str) -> GroomedSubject:
        return find_by_id(self.subjects, key, what='groomed subject')


# --------------------------------------------------------------------------- the grooming


def groom_cohort(
    cohort,
    *,
    spacing: float = 2.0,
    padding: float = 10.0,
    reference: str = 'medoid',
    registration_iterations: int = 200,
    mask_margin: float = 8.0,
    processes: int = 1,
    out_dir: str | os.PathLike,
    random_state: int | np.random.Generator = 0,
    stages: tuple[str, ...] = REGISTRATION_STAGES,
    scaling: bool = True,
    train_alignment: str = 'registration',
    progress: bool = True,
) -> GroomResult:
    """Groom a cohort: align the training shapes, put every image on the reference grid.

    Args:
        cohort: A :class:`~deepssm_nb.data.Cohort` (``.subjects`` with ``id``,
            ``image``, ``particles``, ``split`` and optionally ``mesh``).
        spacing: Voxel size of the reference grid, mm.
        padding: Margin around the union bounding box, mm.
        reference: ``'medoid'`` or the id of a training subject.
        registration_iterations: Optimizer iterations per registration stage.
        mask_margin: The registration metric uses only voxels within this
            distance (mm) of the reference femur surface (its mesh, else its
            particles), so the femur, not the soft tissue or the pelvis,
            drives it; 0 uses the whole box. Below about 6 mm it gets fragile.
        processes: Worker processes for resampling and registration.
        out_dir: The groom folder.
        random_state: Seed of the registrations' voxel sampling.
        stages: Registration stages (see :func:`register_image`).
        scaling: Procrustes with an isotropic scale per training shape (as the use case's optimisation), so
            the training frame matches the similarity registration of new images; False: rigid only.
        train_alignment: ``'registration'``: register the training images like new ones (their particles
            follow); ``'procrustes'``: resample them through their Procrustes transforms (see the module notes).
        progress: Show a progress bar.

    Returns:
        :class:`GroomResult`. A rerun with the same parameters skips subjects
        whose outputs exist; ``groom.json`` is removed while anything is redone.

    Raises:
        DataError: Empty cohort, no training subject, particle counts that
            differ, an unreadable image, or a failed registration (each names
            the file).
        ConfigError: Unknown ``reference`` id or parameters out of range.
    """
    check_in_range(spacing, name='spacing', low=0.0, low_inclusive=False)
    check_in_range(padding, name='padding', low=0.0)
    check_in_range(registration_iterations, name='registration_iterations', low=1, integer=True)
    check_in_range(mask_margin, name='mask_margin', low=0.0)
    check_in_range(processes, name='processes', low=1, integer=True)
    look_up_option(train_alignment, TRAIN_ALIGNMENTS, name='train_alignment')
    subjects, parts = _check_cohort(cohort)
    train = [s for s in subjects if s.split == 'train']
    out = Path(out_dir)
    seed_base = check_random_state(random_state)

    # 1. Procrustes of the training shapes (the other side reflected first: the reflection is part of each
    #    transform), in the reference subject's frame; the grid around them
    ref_side, flips = _reflections(subjects, train, reference)
    shapes = np.stack([parts[s.id] for s in train])
    mirrored = np.stack([apply_transform(flips[s.id], parts[s.id]) for s in train])
    tr, mean, ref_idx = _align_training(mirrored, [s.id for s in train], reference, scaling=scaling)
    tr = np.stack([T @ flips[s.id] for s, T in zip(train, tr)])
    ref = train[ref_idx]
    ref_world = apply_transform(tr[ref_idx], parts[ref.id])
    meshes = _aligned_meshes(train, tr)
    extent = np.concatenate(meshes or [apply_transform(T, x) for T, x in zip(tr, shapes)])
    grid = reference_grid(extent, spacing=spacing, padding=padding)
    grid_info = {'origin': list(grid.GetOrigin()), 'size': list(grid.GetSize()), 'spacing': float(spacing)}

    # 2. Jobs: resample the reference (and, by Procrustes, the training images), register the others;
    #    the finished ones are skipped
    train_T = {s.id: T for s, T in zip(train, tr) if train_alignment == 'procrustes' or s.id == ref.id}
    ref_key = StageRecord.of(
        {
            'id': ref.id,
            'transform': np.round(tr[ref_idx], 9).tolist(),
            'grid': grid_info,
            'mask_margin': float(mask_margin),
        },
        {'source': ref.image},
    )
    jobs = []
    for s in subjects:
        if s.id in train_T:
            jobs.append(_job('resample', s, out, {'transform': np.round(train_T[s.id], 9).tolist(), 'grid': grid_info}))
        else:
            seed = int(np.random.SeedSequence([seed_base, zlib.crc32(s.id.encode())]).generate_state(1)[0])
            reflect = {} if np.array_equal(flips[s.id], np.eye(4)) else {'reflect': flips[s.id].tolist()}
            jobs.append(
                _job(
                    'register',
                    s,
                    out,
                    {
                        'reference': ref_key.to_dict(),
                        'iterations': int(registration_iterations),
                        'stages': list(stages),
                        'seed': seed,
                        **reflect,
                    },
                )
            )
    done = {j['id']: r for j in jobs if (r := _job_record(j)) is not None}
    ref_ok = (out / 'reference_image.nrrd').is_file() and ref_key.matches(
        StageRecord.read(out / 'records' / '_reference.json')
    )
    if len(done) < len(jobs) or not ref_ok:
        (out / 'groom.json').unlink(missing_ok=True)
    if not ref_ok:
        image = read_image(ref.image, name=f'image of subject {ref.id}')
        write_image(out / 'reference_image.nrrd', resample_to_reference(image, grid, tr[ref_idx]))
        (out / 'reference_mask.nrrd').unlink(missing_ok=True)
        if mask_margin > 0:
            band = surface_band(grid, meshes[ref_idx] if meshes else ref_world, mask_margin, dense=bool(meshes))
            write_image(out / 'reference_mask.nrrd', band)
        write_json(out / 'records' / '_reference.json', {'record': ref_key.to_dict()})
    records = _run_jobs(
        [j for j in jobs if j['id'] not in done], done, total=len(jobs), processes=processes, progress=progress
    )

    # 3. World particles, registration errors, groom.json
    transforms = {s.id: np.asarray(records[s.id]['transform'], dtype=float) for s in subjects}
    world = {s.id: apply_transform(transforms[s.id], parts[s.id]) for s in subjects}
    if train_alignment == 'registration':
        mean = np.mean([world[s.id] for s in train], axis=0)
    write_particles(out / 'mean.particles', mean)
    rows = []
    for s in subjects:
        T = transforms[s.id]
        write_particles(out / 'particles' / f'{s.id}.particles', world[s.id])
        row = {
            'id': s.id,
            'split': s.split,
            'image': f'images/{s.id}.nrrd',
            'particles': f'particles/{s.id}.particles',
            'source_image': str(s.image),
            'transform': T.tolist(),
            'registration_error_mm': None,
            'registration_error_max_mm': None,
            'side': getattr(s, 'side', None),
            'reflected': bool(np.linalg.det(T[:3, :3]) < 0),
        }
        if s.id not in train_T:
            F = flips[s.id]  # its own inverse; the error is measured on the reflected shape
            err = registration_error(
                T @ F, apply_transform(F, parts[s.id]), ref_world, scaling=stages[-1] == 'similarity'
            )
            row.update(registration_error_mm=float(err.mean()), registration_error_max_mm=float(err.max()))
        rows.append(row)
    info = {
        'format': _FORMAT,
        'reference': ref.id,
        'spacing': float(spacing),
        'padding': float(padding),
        'registration_iterations': int(registration_iterations),
        'mask_margin': float(mask_margin),
        'stages': list(stages),
        'train_alignment': train_alignment,
        'random_state': seed_base,
        'grid': grid_info,
        'reference_side': ref_side,
        'bbox': [extent.min(0).tolist(), extent.max(0).tolist()],
        'reference_image': 'reference_image.nrrd',
        'reference_mask': 'reference_mask.nrrd' if mask_margin else None,
        'mean_particles': 'mean.particles',
        'subjects': rows,
    }
    errs = [r for r in rows if r['registration_error_mm'] is not None and r['split'] != 'train']
    if errs:
        info['registration_error'] = {
            'mean_mm': float(np.mean([r['registration_error_mm'] for r in errs])),
            'max_mm': float(max(r['registration_error_max_mm'] for r in errs)),
        }
    write_json(out / 'groom.json', info)
    return load_groomed(out)


def _check_cohort(cohort) -> tuple[list, dict[str, np.ndarray]]:
    """The cohort's subjects and their particles; raise on an empty cohort or unequal particle counts."""
    subjects = list(getattr(cohort, 'subjects', None) or [])
    if not subjects:
        raise DataError('The cohort holds no subjects; nothing to groom. Build or load a cohort first.')
    if not any(s.split == 'train' for s in subjects):
        raise DataError(
            f'The cohort has no training subject (splits: {sorted({s.split for s in subjects})}); '
            'grooming needs at least one to define the reference.'
        )
    parts = {s.id: read_particles(s.particles) for s in subjects}
    counts = [len(parts[s.id]) for s in subjects]
    common = max(set(counts), key=counts.count)
    bad = [
        f'"{s.particles}" holds {n} particles; expected {common} like the others.'
        for s, n in zip(subjects, counts)
        if n != common
    ]
    if bad:
        raise DataError(bad)
    return subjects, parts


def _reflections(subjects, train, reference: str) -> tuple[str | None, dict[str, np.ndarray]]:
    """The reference side and, per subject, the (4, 4) reflection applied before grooming (identity if none).

    The reference side is the side of ``reference`` when it names a training subject with a side, else the side
    of most training subjects (a tie goes to the first training subject's side). Subjects of the other side are
    reflected across the x axis of physical space (left-right in the LPS and RAS conventions, whatever the voxel
    directions) through their image's centre, so images, particles and meshes are reflected alike; subjects
    without a side are left as they are.
    """
    sides = [s.side for s in train if getattr(s, 'side', None)]
    named = [s.side for s in train if s.id == reference and getattr(s, 'side', None)]
    flips = {s.id: np.eye(4) for s in subjects}
    if not sides:
        return None, flips
    counts = {side: sides.count(side) for side in sides}
    ref_side = named[0] if named else max(counts, key=lambda side: (counts[side], -sides.index(side)))
    for s in subjects:
        if getattr(s, 'side', None) and s.side != ref_side:
            flips[s.id] = image_x_reflection(s.image)
    return ref_side, flips


def image_x_reflection(path) -> np.ndarray:
    """The (4, 4) reflection ``x -> 2 c_x - x`` of physical space, ``c`` the centre of the image in ``path``, mm.

    Raises:
        DataError: The image header cannot be read.
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise DataError(f'"{path}" could not be read as an image (to reflect it).') from None
    D = np.asarray(reader.GetDirection(), dtype=float).reshape(3, 3)
    spacing, size = np.asarray(reader.GetSpacing()), np.asarray(reader.GetSize())
    centre = np.asarray(reader.GetOrigin()) + D @ (spacing * (size - 1) / 2)
    F = np.diag([-1.0, 1.0, 1.0, 1.0])
    F[0, 3] = 2 * centre[0]
    return F


def reflect_image(image, F: np.ndarray):
    """``image`` reflected by ``F``: the same voxels, with the origin and direction cosines mapped by ``F``."""
    out = image.__class__(image)
    origin = np.asarray(image.GetOrigin())
    out.SetOrigin((F[:3, :3] @ origin + F[:3, 3]).tolist())
    out.SetDirection((F[:3, :3] @ np.asarray(image.GetDirection()).reshape(3, 3)).ravel().tolist())
    return out


def _align_training(
    shapes: np.ndarray, ids: list[str], reference: str, scaling: bool = True
) -> tuple[np.ndarray, np.ndarray, int]:
    """Procrustes transforms (N, 4, 4), mean (M, 3) and reference index; the frame is the reference's own."""
    tr, mean = generalized_procrustes(shapes, reference=0, scaling=scaling)
    if reference == 'medoid':
        aligned = np.stack([apply_transform(T, x) for T, x in zip(tr, shapes)])
        ref_idx = int(np.argmin(((aligned - mean) ** 2).sum(axis=2).mean(axis=1)))
    elif reference in ids:
        ref_idx = ids.index(reference)
    else:
        near = nearest_spelling(str(reference), ids + ['medoid'])
        hint = f" Did you mean '{near}'?" if near else ''
        raise ConfigError(f"reference must be 'medoid' or the id of a training subject; got {reference!r}.{hint}")
    anchor = rigid_transform(mean, shapes[ref_idx])
    return np.stack([anchor @ T for T in tr]), apply_transform(anchor, mean), ref_idx


def _job(kind: str, subject, out: Path, params: dict[str, Any]) -> dict[str, Any]:
    params = {'kind': kind, **params}
    return {
        'id': subject.id,
        'kind': kind,
        'source': str(subject.image),
        'out': str(out),
        'params': params,
        'record': StageRecord.of(params, {'source': subject.image}).to_dict(),  # a changed input regrooms it
    }


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        return read_json(path)
    except (FileNotFoundError, DataError):
        return None


def _job_record(job: dict[str, Any]) -> dict[str, Any] | None:
    """The saved record of a finished job whose parameters match, else None."""
    out = Path(job['out'])
    if not (out / 'images' / f'{job["id"]}.nrrd').is_file():
        return None
    rec = _read_record(out / 'records' / f'{job["id"]}.json')
    if rec is None or not StageRecord.from_dict(job['record']).matches(StageRecord.from_dict(rec.get('record'))):
        return None
    return rec


def _execute(job: dict[str, Any]) -> dict[str, Any]:
    """Resample (through a known transform) or register one image; write it and its record atomically."""
    import SimpleITK as sitk

    out, sid, p = Path(job['out']), job['id'], job['params']
    image = read_image(job['source'], name=f'image of subject {sid}')
    if job['kind'] == 'resample':
        g = p['grid']
        grid = sitk.Image([int(n) for n in g['size']], sitk.sitkUInt8)
        grid.SetSpacing([g['spacing']] * 3)
        grid.SetOrigin(g['origin'])
        T = np.asarray(p['transform'], dtype=float)
        groomed = resample_to_reference(image, grid, T)
    else:
        reference = read_image(out / 'reference_image.nrrd', name='reference image')
        mask = (
            read_image(out / 'reference_mask.nrrd', name='reference mask')
            if p['reference']['parameters']['mask_margin']
            else None
        )
        flip = np.asarray(p['reflect'], dtype=float) if p.get('reflect') else np.eye(4)
        groomed, T = register_image(
            reflect_image(image, flip),
            reference,
            iterations=p['iterations'],
            mask=mask,
            stages=tuple(p['stages']),
            random_state=p['seed'],
            name=f'"{job["source"]}" (subject {sid})',
        )
        T = T @ flip
    write_image(out / 'images' / f'{sid}.nrrd', groomed)
    record = {'id': sid, 'record': job['record'], 'params': p, 'transform': T.tolist()}
    write_json(out / 'records' / f'{sid}.json', record)
    return record


def _init_worker(threads: int) -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _run_jobs(
    todo: list[dict[str, Any]], records: dict[str, dict[str, Any]], *, total: int, processes: int, progress: bool
) -> dict[str, dict[str, Any]]:
    """Run the jobs (in a process pool if ``processes`` > 1); return every record by id."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    records = dict(records)
    with tqdm(total=total, initial=len(records), desc='Grooming', unit='image', disable=not progress) as bar:
        if processes > 1 and len(todo) > 1:
            n = min(processes, len(todo))
            with ProcessPoolExecutor(
                n,
                mp_context=multiprocessing.get_context('spawn'),
                initializer=_init_worker,
                initargs=(max(1, (os.cpu_count() or 1) // n),),
            ) as pool:
                futures = [pool.submit(_execute, job) for job in todo]
                try:
                    for fut in as_completed(futures):
                        rec = fut.result()
                        records[rec['id']] = rec
                        bar.update()
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
        else:
            for job in todo:
                records[job['id']] = _execute(job)
                bar.update()
    return records


def _aligned_meshes(subjects, transforms: np.ndarray) -> list[np.ndarray]:
    """World mesh vertices of each subject, or [] unless every subject has a readable mesh file."""
    meshes = [getattr(s, 'mesh', None) for s in subjects]
    if not all(m is not None and Path(m).is_file() for m in meshes):
        return []
    from .meshio import read_mesh

    out = []
    for m, T in zip(meshes, transforms):
        verts = read_mesh(m)[0]
        if len(verts) == 0:
            raise DataError(f'"{m}" holds no vertices; expected a surface mesh.')
        out.append(apply_transform(T, verts))
    return out


def run_grooming(cfg, cohort=None, *, progress: bool = True) -> GroomResult:
    """Groom ``cohort`` with ``cfg.groom`` into ``cfg.resolved_paths()['groom_dir']``.

    Args:
        cfg: A :class:`~deepssm_nb.config.Config`.
        cohort: The cohort; default: the one ``cfg.data`` describes (:func:`deepssm_nb.data.cohort_from_config`).
        progress: Show a progress bar.
    """
    if cohort is None:
        from .data import cohort_from_config

        cohort = cohort_from_config(cfg.data)
    g = cfg.groom
    return groom_cohort(
        cohort,
        spacing=g.spacing,
        padding=g.padding,
        reference=g.reference,
        registration_iterations=g.registration_iterations,
        mask_margin=g.mask_margin,
        processes=g.processes,
        scaling=g.procrustes_scaling,
        train_alignment=g.train_alignment,
        out_dir=cfg.resolved_paths()['groom_dir'],
        random_state=cfg.seed,
        progress=progress,
    )


def load_groomed(groom_dir: str | os.PathLike) -> GroomResult:
    """Read a groom folder written by :func:`groom_cohort`.

    Raises:
        FileNotFoundError: No ``groom.json`` (grooming has not run) or a file
            it lists is missing.
        DataError: ``groom.json`` is malformed.
    """
    root = Path(groom_dir)
    info_path = root / 'groom.json'
    if not info_path.is_file():
        raise FileNotFoundError(f'No groomed cohort in "{root}": "{info_path.name}" is missing; run grooming first.')
    info = read_json(info_path)
    try:
        subjects = [
            GroomedSubject(
                d['id'],
                d['split'],
                root / d['image'],
                root / d['particles'],
                np.asarray(d['transform'], dtype=float),
                d.get('registration_error_mm'),
                d.get('registration_error_max_mm'),
                Path(d['source_image']) if d.get('source_image') else None,
            )
            for d in info['subjects']
        ]
        mask = info.get('reference_mask')
        result = GroomResult(
            root,
            root / info['reference_image'],
            float(info['spacing']),
            subjects,
            info['reference'],
            np.asarray(info['bbox'], dtype=float),
            root / info['mean_particles'],
            root / mask if mask else None,
            info,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f'"{info_path}" is malformed ({type(e).__name__}: {e}); rerun grooming.') from None
    missing = [str(p) for s in subjects for p in (s.image, s.particles) if not p.is_file()]
    missing += [str(p) for p in (result.reference_image, result.reference_mask) if p is not None and not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f'Groomed files listed in "{info_path}" are missing: {missing[:5]}'
            + (f' and {len(missing) - 5} more' if len(missing) > 5 else '')
        )
    return result


def register_to_reference(
    image,
    groomed: GroomResult | str | os.PathLike,
    *,
    iterations: int | None = None,
    stages: tuple[str, ...] | str | None = None,
    random_state: int = 0,
    name: str = 'image',
    coarse: bool = False,
):
    """Register a new image to a groomed cohort's reference, as grooming did for its test images.

    Args:
        image: ``sitk.Image`` or an image file.
        groomed: A :class:`GroomResult` or its folder.
        iterations: Optimizer iterations per stage; default: as in grooming.
        stages: Registration stages; default: as in grooming; ``'fast'``: grooming's last stage only.
        random_state: Seed of the metric's voxel sampling.
        name: What the image is, for messages (default: the file name).
        coarse: Register a copy smoothed and resampled to the reference spacing where the image is finer (a finer
            image adds voxels, not accuracy, at that scale), then resample the original image once through the
            ``T`` found. Prediction does this.

    Returns:
        ``(registered, T)`` as :func:`register_image`: the image on the
        reference grid and the (4, 4) original -> world matrix.
    """
    if not isinstance(groomed, GroomResult):
        groomed = load_groomed(groomed)
    if isinstance(image, (str, os.PathLike)):
        name = f'"{image}"' if name == 'image' else name
        image = read_image(image, name='image')
    info = groomed.info
    reference, mask = groomed.reference_images()
    if stages == 'fast':
        stages = tuple((info.get('stages') or ['similarity'])[-1:])
    stages = tuple(stages or info.get('stages') or REGISTRATION_STAGES)
    moving = image
    if coarse:
        factors = np.minimum(1.0, np.asarray(image.GetSpacing()) / np.asarray(reference.GetSpacing()))
        if np.all(np.asarray(image.GetSize()) * factors >= 16) and np.any(factors < 0.9):
            moving = downsample_image(image, tuple(float(f) for f in factors), name=name)
    registered, T = register_image(
        moving,
        reference,
        iterations=int(iterations or info.get('registration_iterations', 200)),
        mask=mask,
        stages=stages,
        random_state=random_state,
        name=name,
    )
    return (resample_to_reference(image, reference, T) if coarse else registered), T
