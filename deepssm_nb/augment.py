"""Data augmentation: new shapes from a PCA model and new images by thin-plate-spline warps.

Longer than the package's other modules because it holds the stage and the table it writes: the resumable
sample generation (its worker processes and seeds) and ``TotalData.csv`` (read and written only here).

For the N training subjects (groomed images and world particles), the stage

1. fits a :class:`~deepssm_nb.pca.ShapePCA` (modes by count or % variance) and
   saves it in ``PCA_Particle_Info/``;
2. fits a score sampler (``gaussian``, ``mixture`` or ``kde``, see
   :mod:`deepssm_nb.samplers`) and, for sample ``i``, draws its scores with
   the seed :func:`sample_seed` ``(random_state, i)``;
3. writes the sampled particles and the base image warped by a thin-plate
   spline through every ``landmark_step``-th particle (:mod:`deepssm_nb.tps`)
   to ``Generated-Particles/`` and ``Generated-Images/``;
4. writes ``TotalData.csv`` (no header: ``image_path,particle_path,score_1..score_L``,
   the real rows first) and ``augmentation.json`` (parameters, and per row its
   ``name``, ``base`` subject and ``seed``).

Sample ``i`` depends only on the inputs, the parameters and ``(random_state, i)``:
not on the number of processes or on the other samples, so
:func:`regenerate_sample` rebuilds any one of them byte for byte. Every file
is written atomically; a rerun with the same inputs resumes where an earlier
run stopped.

Example:
    >>> num_modes = run_data_augmentation('aug', images, particle_files,   # doctest: +SKIP
    ...                                   num_samples=100, processes=2, random_state=0)
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import multiprocessing
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._validation import DataError, check_in_range, check_random_state, look_up_option
from .freshness import StageRecord
from .imageops import ImageGrid, cast_like
from .io import atomic_write_text, read_json, read_particles, write_image, write_json, write_particles
from .pca import ShapePCA
from .samplers import SAMPLERS, get_sampler
from .tps import INTERPOLATIONS

__all__ = [
    'AugmentResult',
    'TotalData',
    'load_augmentation',
    'read_total_data',
    'regenerate_sample',
    'run_augmentation',
    'run_data_augmentation',
    'sample_name',
    'sample_seed',
    'write_total_data',
]

PCA_DIR, IMAGE_DIR, PARTICLE_DIR = 'PCA_Particle_Info', 'Generated-Images', 'Generated-Particles'
CSV_NAME, JSON_NAME = 'TotalData.csv', 'augmentation.json'
_FORMAT = 'deepssm_nb.augmentation/1'
_GENERATED = re.compile(r'^Generated_sample_(\d+)\.(nrrd|particles)$')


def sample_name(index: int) -> str:
    """``Generated_sample_0001`` for ``index`` 1 (1-based, as ShapeWorks)."""
    return f'Generated_sample_{index:04d}'


def sample_seed(random_state: int, index: int) -> int:
    """The seed of sample ``index``: a 64-bit integer from ``SeedSequence(random_state, spawn_key=(index,))``."""
    return int(np.random.SeedSequence(int(random_state), spawn_key=(int(index),)).generate_state(1, np.uint64)[0])


# --------------------------------------------------------------------------- inputs and model


def _read_inputs(img_list, world_point_list, names) -> tuple[list[Path], list[Path], list[str], np.ndarray]:
    images, points = [Path(p) for p in img_list], [Path(p) for p in world_point_list]
    if len(images) != len(points):
        raise DataError(
            f'img_list has {len(images)} files but world_point_list has {len(points)}; '
            'expected one particle file per image.'
        )
    if len(points) < 2:
        only = f' ("{points[0]}")' if points else ''
        raise DataError(f'augmentation needs at least 2 training shapes for a PCA; got {len(points)}{only}.')
    names = [p.name.split('.')[0] for p in images] if names is None else [str(n) for n in names]
    if len(names) != len(images) or len(set(names)) != len(names):
        raise DataError(f'names must be {len(images)} distinct strings; got {names!r}.')
    missing = [f'Image file not found: "{p}"' for p in images if not p.is_file()]
    if missing:
        raise FileNotFoundError('\n'.join(missing))
    shapes = [read_particles(p) for p in points]
    counts = [len(s) for s in shapes]
    expected = max(set(counts), key=counts.count)
    wrong = [
        f'"{p}" holds {c} particles; expected {expected} (as the other files).'
        for p, c in zip(points, counts)
        if c != expected
    ]
    if wrong:
        raise DataError(wrong)
    return [p.resolve() for p in images], [p.resolve() for p in points], names, np.stack(shapes)


def _model(shapes: np.ndarray, params: dict, names: list[str]):
    pca = ShapePCA(params['num_dim'] or None, percent_variability=params['percent_variability'])
    pca.fit(shapes, names=names)
    sampler = get_sampler(
        params['sampler'], mixture_num=params['mixture_num'], random_state=params['random_state'] % (2**32)
    ).fit(pca.scores_)
    return pca, sampler


def _draw(sampler, seed: int) -> tuple[np.ndarray, int]:
    scores, base = sampler.sample(1, random_state=np.random.default_rng(seed))
    return scores[0], int(base[0])


def _read_sources(sources, images: list[Path]) -> list[dict | None]:
    """Each input's original scan and grooming transform, checked; ``[None] * N`` without sources."""
    if sources is None:
        return [None] * len(images)
    sources = list(sources)
    if len(sources) != len(images):
        raise DataError(
            f'sources has {len(sources)} entries but img_list has {len(images)}; expected one '
            '(original scan, transform) pair per image.'
        )
    out = []
    for i, (path, T) in enumerate(sources):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f'Original scan of input {i + 1} not found: "{path}"')
        T = np.asarray(T, dtype=float)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise DataError(
                f'sources[{i}]: the transform of "{path}" must be a finite (4, 4) matrix; got shape {T.shape}.'
            )
        out.append({'source': str(path.resolve()), 'to_world': T.tolist()})
    return out


def _record(
    params: dict, images: list[Path], points: list[Path], shapes: np.ndarray, sources: list[dict | None]
) -> StageRecord:
    """What the samples are made from: every parameter but their number, the inputs, and the training shapes."""
    key = {k: v for k, v in params.items() if k != 'num_samples'}
    key['particle_files'] = [str(p) for p in points]
    key['shapes_sha256'] = hashlib.sha256(np.ascontiguousarray(shapes).tobytes()).hexdigest()
    key['to_world'] = [s and s['to_world'] for s in sources]
    return StageRecord.of(key, {'images': images, 'sources': [Path(s['source']) for s in sources if s]})


# --------------------------------------------------------------------------- workers

_BASE: dict = {}  # the last warp source of this process: {'key', 'synth'}


def _init_worker() -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _synthesizer(base: dict, warp: dict):
    """A one-base :class:`~deepssm_nb.synthesis.SampleSynthesizer` for ``base`` (cached: tasks come sorted by base)."""
    key = (base['image'], base.get('source'), str(base.get('to_world')), tuple(sorted(warp.items())))
    if _BASE.get('key') != key:
        from .synthesis import SampleSynthesizer, base_scan

        _BASE.clear()
        grid = ImageGrid.from_file(base['image'], name='groomed base image')
        scan = base_scan(
            base['id'],
            base['particles'],
            grid,
            groomed_image=base['image'],
            source=base.get('source'),
            to_world=base.get('to_world'),
        )
        _BASE.update(key=key, synth=SampleSynthesizer([scan], grid, **warp))
    return _BASE['synth']


def _generate(task: dict) -> str:
    """Write one sample's particles and image (atomically). Returns its name."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        write_particles(task['particles_out'], task['particles'])
        synth = _synthesizer(task['base'], task['warp'])
        warped = synth.warp(0, task['particles'])
        write_image(task['image_out'], synth.grid.to_image(cast_like(warped, synth.bases[0].dtype)))
    return task['name']


def _run_tasks(tasks: list[dict], processes: int, progress: bool) -> None:
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc='Generating images', unit='sample', disable=not progress)
    try:
        if processes <= 1 or len(tasks) <= 1:
            for task in tasks:
                _generate(task)
                bar.update()
            return
        size = max(1, min(16, len(tasks) // (4 * processes)))
        chunks = [tasks[i : i + size] for i in range(0, len(tasks), size)]
        ctx = multiprocessing.get_context('spawn')
        with cf.ProcessPoolExecutor(processes, mp_context=ctx, initializer=_init_worker) as pool:
            futures = {pool.submit(_generate_chunk, chunk): len(chunk) for chunk in chunks}
            try:
                for fut in cf.as_completed(futures):
                    fut.result()
                    bar.update(futures[fut])
            except cf.process.BrokenProcessPool:
                pool.shutdown(wait=True, cancel_futures=True)
                raise RuntimeError(
                    'an augmentation worker process died. Workers are started with the "spawn" method, so a script '
                    "must call the augmentation under `if __name__ == '__main__':`; a worker may also have run out "
                    'of memory. Finished samples are kept; rerun (or use processes=1) to resume.'
                ) from None
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        bar.close()


def _generate_chunk(chunk: list[dict]) -> list[str]:
    return [_generate(task) for task in chunk]


# --------------------------------------------------------------------------- the stage


def run_data_augmentation(
    out_dir,
    img_list,
    world_point_list,
    num_samples: int = 3,
    num_dim: int = 0,
    percent_variability: float = 0.95,
    sampler: str = 'kde',
    mixture_num: int = 0,
    processes: int = 1,
    random_state=0,
    *,
    landmark_step: int = 2,
    grid_step: float = 4.0,
    interpolation: str = 'cubic',
    kink_radius: float = 2.0,
    names=None,
    sources=None,
    progress: bool = True,
) -> int:
    """Generate ``num_samples`` shapes and images from the training set (resumable).

    Args:
        out_dir: Output folder (``aug_dir``).
        img_list: N groomed training images, all aligned with their particles.
        world_point_list: N world-frame ``.particles`` files (same particle count).
        num_samples: Samples to generate.
        num_dim: PCA modes to keep; 0 chooses by ``percent_variability``.
        percent_variability: Variance fraction to keep when ``num_dim`` is 0.
        sampler: ``'kde'``, ``'gaussian'`` or ``'mixture'``.
        mixture_num: Mixture components; 0 chooses by BIC/AIC.
        processes: Worker processes for the image warps.
        random_state: Seed (int), generator, or None (fresh entropy, recorded).
        landmark_step: Every k-th particle is a control point of the warp.
        grid_step: Coarse warp grid spacing, voxels (0 = exact spline at every voxel).
        interpolation: ``'cubic'`` or ``'linear'`` interpolation of the coarse warp.
        kink_radius: Exact kernel correction around each control point, in cells.
        names: Subject ids of the N inputs (default: image file names).
        sources: Optional N pairs ``(original scan file, (4, 4) grooming transform original -> world)``. With
            them each warp reads the base's original scan, interpolated once as the real groomed images are
            (:mod:`deepssm_nb.synthesis`); without, it reads the groomed image (interpolated twice).
        progress: Show a progress bar.

    Returns:
        The number of PCA modes kept.

    Raises:
        DataError: Fewer than 2 shapes, unequal particle counts, NaN values (the file is named).
        FileNotFoundError: A listed file does not exist.
        ConfigError: A parameter out of range or an unknown sampler.
    """
    out = Path(out_dir)
    check_in_range(num_samples, name='num_samples', low=0, integer=True)
    check_in_range(num_dim, name='num_dim', low=0, integer=True)
    check_in_range(processes, name='processes', low=1, integer=True)
    check_in_range(landmark_step, name='landmark_step', low=1, integer=True)
    params = {
        'num_samples': int(num_samples),
        'num_dim': int(num_dim),
        'percent_variability': float(percent_variability),
        'sampler': look_up_option(sampler, SAMPLERS, name='sampler'),
        'mixture_num': int(mixture_num),
        'random_state': check_random_state(random_state),
        'landmark_step': int(landmark_step),
        'grid_step': float(grid_step),
        'interpolation': look_up_option(interpolation, INTERPOLATIONS, name='interpolation'),
        'kink_radius': float(kink_radius),
        'warp_from': 'groomed' if sources is None else 'original',
    }
    images, points, names, shapes = _read_inputs(img_list, world_point_list, names)
    src = _read_sources(sources, images)
    record = _record(params, images, points, shapes, src)
    old = _previous(out)
    resume = record.matches(StageRecord.from_dict(old.get('record')))
    if resume and _finished(out, old, params['num_samples']):
        return int(old['n_components'])  # nothing to do; files (and their times) stay as they are
    pca, smp = _model(shapes, params, [str(p) for p in points])
    pca.save(out / PCA_DIR)
    plan = []
    for i in range(1, params['num_samples'] + 1):
        seed = sample_seed(params['random_state'], i)
        scores, base = _draw(smp, seed)
        plan.append((sample_name(i), seed, scores, base))
    _clean(out, keep={p[0] for p in plan} if resume else set())
    rows = [
        {'name': p.name.split('.')[0], 'base': n, 'seed': None, 'image': str(p), 'particles': str(q)}
        for p, q, n in zip(images, points, names)
    ]
    rows += [
        {
            'name': name,
            'base': names[b],
            'base_index': b,
            'seed': seed,
            'image': str((out / IMAGE_DIR / f'{name}.nrrd').resolve()),
            'particles': str((out / PARTICLE_DIR / f'{name}.particles').resolve()),
        }
        for name, seed, _, b in plan
    ]
    info = {
        'format': _FORMAT,
        'complete': False,
        'record': record.to_dict(),
        'num_samples': params['num_samples'],
        'num_dim': params['num_dim'],
        'n_components': pca.n_components_,
        'parameters': params,
        'sampler': smp.params(),
        'inputs': [
            {'id': n, 'image': str(p), 'particles': str(q), **(x or {})}
            for p, q, n, x in zip(images, points, names, src)
        ],
        'rows': rows,
    }
    write_json(out / JSON_NAME, info)
    warp = {
        'landmark_step': params['landmark_step'],
        'grid_step': params['grid_step'],
        'interpolation': params['interpolation'],
        'kink_radius': params['kink_radius'],
    }
    tasks = []
    for row, (name, _, scores, b) in sorted(zip(rows[len(images) :], plan), key=lambda t: (t[1][3], t[0]['name'])):
        if Path(row['image']).is_file() and Path(row['particles']).is_file():
            continue
        tasks.append(
            {
                'name': name,
                'image_out': row['image'],
                'particles_out': row['particles'],
                'particles': pca.inverse_transform(scores),
                'base': _task_base(names[b], images[b], shapes[b], src[b]),
                'warp': warp,
            }
        )
    _run_tasks(tasks, int(processes), progress)
    scores_all = np.concatenate([pca.scores_, np.array([p[2] for p in plan]).reshape(-1, pca.n_components_)])
    write_total_data(out / CSV_NAME, [r['image'] for r in rows], [r['particles'] for r in rows], scores_all)
    info['complete'] = True
    write_json(out / JSON_NAME, info)
    return pca.n_components_


def _task_base(name: str, image: Path, particles: np.ndarray, source: dict | None) -> dict:
    return {'id': name, 'image': str(image), 'particles': particles, **(source or {})}


def _previous(out: Path) -> dict:
    try:
        info = read_json(out / JSON_NAME)
    except (FileNotFoundError, DataError):
        return {}
    return info if isinstance(info, dict) and info.get('format') == _FORMAT else {}


def _finished(out: Path, info: dict, num_samples: int) -> bool:
    rows = info.get('rows', [])
    return (
        info.get('complete') is True
        and info.get('num_samples') == num_samples
        and (out / CSV_NAME).is_file()
        and (out / PCA_DIR / 'mean.particles').is_file()
        and all(Path(r['image']).is_file() and Path(r['particles']).is_file() for r in rows)
    )


def _clean(out: Path, keep: set[str]) -> None:
    """Remove generated files not in ``keep`` and temporary files of interrupted writes."""
    for sub in (IMAGE_DIR, PARTICLE_DIR):
        folder = out / sub
        folder.mkdir(parents=True, exist_ok=True)
        for f in folder.iterdir():
            m = _GENERATED.match(f.name)
            stale = m and f.name.rsplit('.', 1)[0] not in keep
            partial = f.name.startswith('.Generated_sample_') and '.tmp' in f.name
            if (stale or partial) and f.is_file():
                f.unlink()


@dataclass(frozen=True)
class AugmentResult:
    """What the augmentation stage hands on: its folder, the shape PCA and the table of every sample.

    Attributes:
        folder: The augmentation folder (``aug_dir``).
        pca: The :class:`~deepssm_nb.pca.ShapePCA` fitted on the training particles.
        table: The rows of ``TotalData.csv``, real subjects first.
        info: ``augmentation.json``: parameters, and each row's base subject and seed.
    """

    folder: Path
    pca: ShapePCA
    table: TotalData
    info: dict = field(repr=False)

    @property
    def num_modes(self) -> int:
        """L, the PCA modes kept."""
        return int(self.pca.n_components_)


def load_augmentation(aug_dir: str | os.PathLike) -> AugmentResult:
    """Read back a finished augmentation folder written by :func:`run_data_augmentation`.

    Raises:
        FileNotFoundError: The folder holds no finished augmentation (the file that is missing is named).
        DataError: ``TotalData.csv`` is malformed (see :func:`read_total_data`).
    """
    folder = Path(aug_dir)
    info_path = folder / JSON_NAME
    if not info_path.is_file():
        raise FileNotFoundError(f'No augmentation in "{folder}": "{JSON_NAME}" is missing; run the augmentation first.')
    info = read_json(info_path)
    if not info.get('complete'):
        raise FileNotFoundError(f'The augmentation in "{folder}" did not finish ("{info_path}"); run it again.')
    return AugmentResult(folder, ShapePCA.load(folder / PCA_DIR), read_total_data(folder / CSV_NAME), info)


def run_augmentation(cfg, groomed, *, progress: bool = True) -> AugmentResult:
    """Run the augmentation stage from a Config and a groomed cohort.

    Uses the training subjects of ``groomed`` (a
    :class:`~deepssm_nb.groom.GroomResult`), ``cfg.augment`` and ``cfg.seed``,
    and writes to ``cfg.resolved_paths()['aug_dir']``.

    Returns:
        :class:`AugmentResult`: the folder, the PCA and the table.
    """
    a = cfg.augment
    sources = None
    if a.warp_from == 'original':
        train = [groomed[i] for i in groomed.ids('train')]
        missing = [s.id for s in train if s.source is None]
        if missing:
            raise DataError(
                f'"{groomed.root / "groom.json"}" names no original scan for {missing[:5]}; rerun '
                "grooming, or set augment.warp_from = 'groomed'."
            )
        sources = [(s.source, s.transform) for s in train]
    aug_dir = cfg.resolved_paths()['aug_dir']
    run_data_augmentation(
        aug_dir,
        groomed.images('train'),
        groomed.particle_files('train'),
        num_samples=a.num_samples,
        num_dim=a.num_dim,
        percent_variability=a.percent_variability,
        sampler=a.sampler,
        mixture_num=a.mixture_num,
        processes=a.processes,
        random_state=cfg.seed,
        landmark_step=a.landmark_step,
        grid_step=a.grid_step,
        names=groomed.ids('train'),
        sources=sources,
        progress=progress,
    )
    return load_augmentation(aug_dir)


def regenerate_sample(aug_dir, index: int, out_dir) -> tuple[Path, Path]:
    """Rebuild generated sample ``index`` (1-based) from ``augmentation.json`` alone.

    The inputs named in the JSON must still exist. The result is identical,
    byte for byte, to the file the stage wrote.

    Returns:
        ``(image_path, particles_path)`` in ``out_dir``.
    """
    info = read_json(Path(aug_dir) / JSON_NAME)
    params = info['parameters']
    if not 1 <= index <= params['num_samples']:
        raise ValueError(f'index must be in [1, {params["num_samples"]}]; got {index}.')
    images, points, names, shapes = _read_inputs(
        [d['image'] for d in info['inputs']],
        [d['particles'] for d in info['inputs']],
        [d['id'] for d in info['inputs']],
    )
    src = _read_sources(
        [(d['source'], d['to_world']) for d in info['inputs']] if params.get('warp_from') == 'original' else None,
        images,
    )
    pca, smp = _model(shapes, params, [str(p) for p in points])
    scores, b = _draw(smp, sample_seed(params['random_state'], index))
    name, out = sample_name(index), Path(out_dir)
    task = {
        'name': name,
        'image_out': out / f'{name}.nrrd',
        'particles_out': out / f'{name}.particles',
        'particles': pca.inverse_transform(scores),
        'base': _task_base(names[b], images[b], shapes[b], src[b]),
        'warp': {k: params[k] for k in ('landmark_step', 'grid_step', 'interpolation', 'kink_radius')},
    }
    _generate(task)
    return task['image_out'], task['particles_out']


# --------------------------------------------------------------------------- the table: TotalData.csv


@dataclass
class TotalData:
    """The rows of ``TotalData.csv`` with the subject each row derives from.

    Attributes:
        images, particles: One file per row.
        scores: (S, L) raw PCA scores.
        names: Sample names (image file name before the first dot).
        bases: The real subject each row derives from (its own name for real rows).
        num_particles: M, the particles per shape.
        path: The CSV the table was read from, if any.
    """

    images: list[Path]
    particles: list[Path]
    scores: np.ndarray
    names: list[str]
    bases: list[str]
    num_particles: int
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def generated(self) -> np.ndarray:
        """(S,) bool: the rows of generated samples (image name ``Generated_sample_*``)."""
        return np.array([n.startswith('Generated_sample_') for n in self.names], dtype=bool)

    def load_particles(self, idx: Sequence[int]) -> np.ndarray:
        """(len(idx), M, 3) particles of the given rows."""
        from .io import read_particles

        return np.stack([read_particles(self.particles[i], num_particles=self.num_particles) for i in idx])


def _resolve(value: str, root: Path) -> Path:
    p = Path(value.strip())
    return p if p.is_absolute() or not (root / p).exists() else root / p


def read_total_data(csv_path: str | os.PathLike) -> TotalData:
    """Read and check ``TotalData.csv`` and the ``augmentation.json`` next to it.

    Args:
        csv_path: CSV without header: ``image_path,particle_path,score_1..score_L``.
            Relative paths are taken from the CSV's folder when they exist there.

    Returns:
        :class:`TotalData`.

    Raises:
        FileNotFoundError: The CSV does not exist.
        DataError: Empty CSV; rows with missing columns, non-numeric scores or
            missing files (every bad row is named); duplicate names; rows
            unknown to ``augmentation.json``.
    """
    import csv

    from .io import read_particles

    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f'Augmented data CSV not found: "{csv_path}"')
    with open(csv_path, newline='') as f:
        rows = [(n, r) for n, r in enumerate(csv.reader(f), start=1) if any(c.strip() for c in r)]
    if not rows:
        raise DataError(
            f'"{csv_path}" holds no rows; expected image_path,particle_path,score_1..score_L per line '
            f'(run the augmentation stage first).'
        )
    problems: list[str] = []
    images, particles, scores = [], [], []
    width = len(rows[0][1])
    for n, row in rows:  # n: the line in the file, blank lines counted
        where = f'"{csv_path}", line {n}'
        if len(row) < 3 or len(row) != width:
            problems.append(
                f'{where}: expected {max(width, 3)} columns (image_path, particle_path, score_1..'
                f'score_L); got {len(row)}.'
            )
            continue
        img, par = _resolve(row[0], csv_path.parent), _resolve(row[1], csv_path.parent)
        for kind, p in (('image', img), ('particle', par)):
            if not p.is_file():
                problems.append(f'{where}: {kind} file not found: "{p}".')
        try:
            scores.append([float(v) for v in row[2:]])
        except ValueError:
            problems.append(f'{where}: scores must be numbers; got {row[2:]!r}.')
        images.append(img)
        particles.append(par)
    if problems:
        raise DataError(problems[:20] + ([f'... and {len(problems) - 20} more'] if len(problems) > 20 else []))
    names = [p.name.split('.')[0] for p in images]
    dupes = sorted({x for x in names if names.count(x) > 1})
    if dupes:
        raise DataError(
            f'"{csv_path}": image names must be distinct (file name before the first dot); repeated: {dupes[:10]}.'
        )
    score_arr = np.asarray(scores, dtype=np.float64)
    if not np.all(np.isfinite(score_arr)):
        raise DataError(f'"{csv_path}": scores contain NaN or infinite values.')
    bases = _read_bases(csv_path.parent / 'augmentation.json', names)
    num_particles = read_particles(particles[0]).shape[0]
    return TotalData(images, particles, score_arr, names, bases, num_particles, csv_path)


def _read_bases(path: Path, names: list[str]) -> list[str]:
    """The base subject of each row, from ``augmentation.json`` (entries with ``name`` and ``base``)."""
    if not path.is_file():
        warnings.warn(
            f'"{path}" not found: every CSV row is treated as its own subject, so augmented copies of one '
            f'subject may fall on both sides of the train/validation split.',
            stacklevel=3,
        )
        return list(names)
    info = read_json(path)
    entries = []
    for value in info.values() if isinstance(info, dict) else [info]:
        if (
            isinstance(value, list)
            and value
            and all(isinstance(e, dict) and 'name' in e and 'base' in e for e in value)
        ):
            entries += value
    lookup = {str(e['name']).split('.')[0]: str(e['base']) for e in entries}
    unknown = [x for x in names if x not in lookup]
    if unknown:
        raise DataError(
            f'"{path}" has no entry (name, base) for {len(unknown)} CSV row(s), e.g. {unknown[:5]}; '
            f'it does not match TotalData.csv. Rerun the augmentation stage.'
        )
    return [lookup[x] for x in names]


def write_total_data(csv_path: str | os.PathLike, images, particles, scores: np.ndarray) -> Path:
    """Write ``TotalData.csv`` atomically: one ``image_path,particle_path,score_1..score_L`` line per row.

    Scores are written with ``repr`` of each float, so they read back bit for bit.

    Args:
        csv_path: The file to write.
        images, particles: One path per row.
        scores: (S, L) raw PCA scores.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if not len(images) == len(particles) == len(scores):
        raise ValueError(
            f'expected one image, particle file and score row per sample; got {len(images)} images, '
            f'{len(particles)} particle files and {len(scores)} score rows.'
        )
    lines = [','.join([str(i), str(p)] + [repr(float(v)) for v in s]) for i, p, s in zip(images, particles, scores)]
    atomic_write_text(csv_path, '\n'.join(lines) + '\n')
    return Path(csv_path)
