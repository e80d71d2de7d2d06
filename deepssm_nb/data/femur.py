"""The offline femur cohort: proximal femurs of the 26 LLP26 subjects with synthetic CT-like hip images.

For each subject the proximal femur (head, neck, trochanters, upper shaft) is cut from the whole femur by a plane
through three landmarks of its own (perpendicular to the shaft, 80 mm below the head centre on the mean shape) and
closed by a flat cap. ``M`` particles are spread evenly over that surface on the mean shape and carried to every
subject through the shared triangulation, so they correspond exactly and lie exactly on each surface. Each subject
gets a random rigid pose, an off-centre field of view (the proximal femur plus 15-45 mm per side, so part of the
pelvis is in view) and a CT-like image: cortical shell, trabecular interior, pelvis and femoral shaft as
unlabelled distractors, soft tissue, blur, noise and per-scan intensity changes.

The cohort is cached in ``<data_dir>/femur_n<N>_m<M>_s<spacing>_seed<seed>``; a second call reuses it, and an
interrupted build resumes subject by subject. Every random choice comes from ``seed``, and each subject's files
depend only on ``seed`` and its own index, not on the number of subjects built or the number of processes.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from .._validation import check_in_range
from ..config import DataConfig, default_data_dir
from ..freshness import StageRecord
from ..io import read_json, write_json, write_particles
from ..meshio import write_mesh
from . import meshops
from ._anatomy import find_anatomy, subject_frame
from ._source import ShapeSource, load_shape_source
from ._subject import SubjectPlan, plan_subject, subject_paths, write_subject
from .cohort import Cohort, Subject, load_cohort, write_manifest

__all__ = ['CUT_BELOW_HEAD_MM', 'build_femur_cohort', 'cohort_folder_name', 'load_femur_cohort']

FORMAT_VERSION = 1
CUT_BELOW_HEAD_MM = 80.0
PARTICLE_MARGIN_MM = 3.0
# Starting worker processes costs about a second; smaller builds (e.g. 10 subjects at 2 mm) run in this process.
POOL_MIN_VOXELS = 15_000_000


def cohort_folder_name(num_subjects: int, num_particles: int, spacing: float, seed: int) -> str:
    """Name of the cache folder of a cohort, e.g. ``femur_n26_m512_s1.0_seed0``."""
    return f'femur_n{num_subjects}_m{num_particles}_s{float(spacing)}_seed{seed}'


def _parameters(
    source: ShapeSource, num_subjects: int, num_particles: int, spacing: float, num_test: int, seed: int
) -> dict:
    return {
        'format_version': FORMAT_VERSION,
        'source': source.path.name,
        'source_sha256': source.digest,
        'num_subjects': num_subjects,
        'num_particles': num_particles,
        'spacing': float(spacing),
        'num_test': num_test,
        'seed': seed,
        'cut_below_head_mm': CUT_BELOW_HEAD_MM,
        'particle_margin_mm': PARTICLE_MARGIN_MM,
    }


def _is_complete(root: Path, params: dict) -> bool:
    """True when ``cohort.json`` matches ``params`` and every file it lists exists."""
    try:
        info = read_json(root / 'cohort.json')
    except (FileNotFoundError, ValueError):
        return False
    if not StageRecord.of(params, {}).matches(StageRecord.from_dict(info)):
        return False
    files = [root / 'manifest.csv', root / 'mean.vtk', root / 'mean.particles']
    files += [p for s in info.get('subjects', []) for p in subject_paths(root, s['id']).values()]
    return len(info.get('subjects', [])) == params['num_subjects'] and all(p.is_file() for p in files)


def _plan(source: ShapeSource, params: dict) -> tuple[list[SubjectPlan], dict]:
    """Choose subjects and split, define the anatomy on the mean, and plan every subject (cheap)."""
    n_source = len(source)
    cohort_seed, *subject_seeds = np.random.SeedSequence(params['seed']).spawn(1 + n_source)
    choice_seed, particle_seed = cohort_seed.spawn(2)
    rng = np.random.default_rng(choice_seed)
    chosen = np.arange(n_source)
    if params['num_subjects'] < n_source:
        chosen = np.sort(rng.choice(n_source, params['num_subjects'], replace=False))
    test = set(rng.choice(chosen, params['num_test'], replace=False).tolist()) if params['num_test'] else set()

    faces = source.femur_faces
    mean_femur = source.femur_vertices.mean(axis=0)
    anatomy = find_anatomy(
        mean_femur,
        faces,
        source.pelvis_vertices.mean(axis=0),
        source.femur_vertices,
        params['num_particles'],
        np.random.default_rng(particle_seed),
        cut_below_head_mm=CUT_BELOW_HEAD_MM,
        margin_mm=PARTICLE_MARGIN_MM,
    )
    plans = [
        plan_subject(
            source.subject_ids[i],
            int(i),
            'test' if i in test else 'train',
            subject_seeds[i],
            source.femur_vertices[i],
            faces,
            source.pelvis_vertices[i],
            source.pelvis_faces,
            anatomy,
            params['spacing'],
        )
        for i in chosen
    ]
    frame = subject_frame(mean_femur, faces, anatomy)
    mean_v, mean_f, _ = meshops.clip_and_cap(mean_femur, faces, frame.plane_point, frame.plane_normal)
    mean = {
        'vertices': mean_v,
        'faces': mean_f,
        'particles': meshops.barycentric_points(mean_femur, faces, anatomy.particle_faces, anatomy.particle_bary),
        'info': {
            'head_diameter_mm': round(2 * frame.head_radius, 3),
            'femoral_offset_mm': round(frame.offset_mm, 3),
            'landmark_faces': anatomy.landmark_faces.tolist(),
            'landmark_barycentric': anatomy.landmark_bary.round(9).tolist(),
        },
    }
    return plans, mean


def build_femur_cohort(
    *,
    num_subjects: int = 26,
    num_particles: int = 512,
    spacing: float = 1.0,
    num_test: int = 4,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    processes: int = 2,
    progress: bool = True,
    source: str | os.PathLike | None = None,
) -> Cohort:
    """Build (or reuse) the offline femur cohort.

    Args:
        num_subjects: Subjects to build (2 to 26); fewer than 26 are chosen by ``seed``.
        num_particles: Correspondence points per shape, M.
        spacing: Voxel size of the images, mm.
        num_test: Subjects held out as test images, chosen by ``seed``; the rest are training subjects.
        seed: Seed of every random choice.
        data_dir: Cache folder; default ``$DEEPSSM_DATA_DIR`` or ``~/.cache/deepssm_nb``.
        processes: Worker processes for the images. 1, or a small build (under 15 million voxels in all), runs
            in this process. Workers are started with 'spawn': a script that calls this function must guard its
            entry point with ``if __name__ == '__main__':``.
        progress: Show a progress bar.
        source: An npz of femur and pelvis meshes in correspondence (default: the embedded LLP26 meshes).

    Returns:
        The cohort (see :func:`load_cohort`); ``cohort.info`` holds the parameters and per-subject pose and
        measurements.

    Raises:
        ConfigError: An argument is out of range.

    Example:
        >>> cohort = build_femur_cohort(num_subjects=10, num_particles=128, spacing=2.0,
        ...                             num_test=2)                              # doctest: +SKIP
        >>> cohort.particles('train').shape                                    # doctest: +SKIP
        (8, 128, 3)
    """
    shapes = load_shape_source(source)
    check_in_range(num_subjects, name='num_subjects', low=2, high=len(shapes), integer=True)
    check_in_range(num_particles, name='num_particles', low=3, high=100000, integer=True)
    check_in_range(spacing, name='spacing', low=0.2, high=10.0)
    check_in_range(num_test, name='num_test', low=0, high=num_subjects - 1, integer=True)
    check_in_range(seed, name='seed', low=0, integer=True)
    check_in_range(processes, name='processes', low=1, high=256, integer=True)
    params = _parameters(shapes, num_subjects, num_particles, spacing, num_test, seed)
    name = cohort_folder_name(num_subjects, num_particles, spacing, seed)
    if source is not None:
        name += f'_{shapes.digest[:8]}'
    root = default_data_dir(data_dir) / name
    if _is_complete(root, params):
        return load_cohort(root)

    # A build started with other parameters (or code version) is not resumed.
    root.mkdir(parents=True, exist_ok=True)
    (root / 'cohort.json').unlink(missing_ok=True)
    started = root / '.build.json'
    if started.is_file() and read_json(started) != params:
        for sub in ('images', 'segmentations', 'meshes', 'particles'):
            shutil.rmtree(root / sub, ignore_errors=True)
    write_json(started, params)

    plans, mean = _plan(shapes, params)
    todo = [p for p in plans if not all(f.is_file() for f in subject_paths(root, p.id).values())]
    _run(todo, root, processes, progress)

    write_mesh(root / 'mean.vtk', mean['vertices'], mean['faces'])
    write_particles(root / 'mean.particles', mean['particles'])
    subjects = [Subject(p.id, split=p.split, **{k: v for k, v in subject_paths(root, p.id).items()}) for p in plans]
    write_manifest(root / 'manifest.csv', subjects, root)
    record = StageRecord.of(params, {}).to_dict()  # the shape source is in the parameters, by its hash
    write_json(root / 'cohort.json', {**record, 'mean': mean['info'], 'subjects': [p.info for p in plans]})
    started.unlink(missing_ok=True)
    return load_cohort(root)


def _run(plans: list[SubjectPlan], root: Path, processes: int, progress: bool) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(plans), desc='femur cohort', unit='subject', disable=not progress or not plans)
    try:
        voxels = sum(int(np.prod(p.grid.shape)) for p in plans)
        if processes == 1 or len(plans) < 2 or voxels < POOL_MIN_VOXELS:
            for plan in plans:
                write_subject(plan, root)
                bar.update()
            return
        # 'spawn' starts clean workers: safe whatever the parent holds (threads, CUDA, open files).
        with ProcessPoolExecutor(max_workers=min(processes, len(plans)), mp_context=get_context('spawn')) as pool:
            futures = [pool.submit(write_subject, plan, root) for plan in plans]
            for future in as_completed(futures):
                future.result()
                bar.update()
    finally:
        bar.close()


def load_femur_cohort(cfg_data: DataConfig, *, processes: int = 2, progress: bool = True) -> Cohort:
    """The femur cohort described by a :class:`~deepssm_nb.config.DataConfig` (built on first use).

    Args:
        cfg_data: ``cfg.data`` of a :class:`~deepssm_nb.config.Config`.
        processes: Worker processes if the cohort must be built.
        progress: Show a progress bar while building.
    """
    return build_femur_cohort(
        num_subjects=cfg_data.num_subjects,
        num_particles=cfg_data.num_particles,
        spacing=cfg_data.spacing,
        num_test=cfg_data.num_test,
        seed=cfg_data.seed,
        data_dir=cfg_data.data_dir,
        processes=processes,
        progress=progress,
    )
