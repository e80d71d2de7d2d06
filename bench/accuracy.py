"""Accuracy benchmark: the whole pipeline on the embedded femur cohort, with folds.

Every real femur is a test subject exactly once. The cohort is built once; each
fold gets a view of it (a folder whose ``manifest.csv`` marks that fold's
subjects as ``test`` and points at the same files) and its own work folder,
then runs cohort -> groom -> augment -> loaders -> train -> predict -> analyze.
Surface distances are pooled over all test subjects of all folds and written,
with both baselines and the ratios, to ``bench/results/accuracy_<profile>.json``.
For context it also scores the PCA floor with every mode of the training shapes
(``pca_floor_all_modes_mm``): the closest shape in their span, in the least-squares
sense on the particles, so its ratio to the mean shape (``best_ratio_to_mean_shape``)
is about the best a model built from these training shapes can reach.

Usage::

    python bench/accuracy.py --profile workshop                 # every fold
    python bench/accuracy.py --profile smoke --max-folds 1      # a quick check
    python bench/accuracy.py --only-fold 3 --set groom.train_alignment=procrustes   # one fold, another design

A run of every fold writes ``bench/results/accuracy_<profile>.json``; a partial run writes
``<work-dir>/<profile>/accuracy.json`` (or ``--output``), so the committed result is never replaced by a part.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

import deepssm_nb
from deepssm_nb import pipeline
from deepssm_nb.config import get_field
from deepssm_nb.data import cohort_from_config
from deepssm_nb.data.cohort import write_manifest
from deepssm_nb.io import write_json

RESULTS = Path(__file__).resolve().parent / 'results'


def make_folds(ids: list[str], num_folds: int, *, random_state: int = 0) -> list[list[str]]:
    """Split subject ids into ``num_folds`` test sets of near-equal size (shuffled, seeded)."""
    order = [str(i) for i in np.random.default_rng(random_state).permutation(ids)]
    return [sorted(order[k::num_folds]) for k in range(num_folds)]


def fold_cohort(cohort: Any, test_ids: list[str], folder: Path) -> Path:
    """A cohort folder with the same files as ``cohort`` and ``test_ids`` as its test split."""
    folder.mkdir(parents=True, exist_ok=True)
    subjects = [dataclasses.replace(s, split='test' if s.id in test_ids else 'train') for s in cohort.subjects]
    write_manifest(folder / 'manifest.csv', subjects, folder)  # absolute paths: the files stay where they are
    for f in (cohort.mean_mesh, cohort.mean_particles):
        if f is not None:
            shutil.copy2(f, folder / Path(f).name)
    return folder


def _set(cfg: Any, key: str, value: Any) -> None:
    """Set the dotted config field ``key`` (e.g. ``groom.train_alignment``) to ``value``."""
    parent, _, leaf = key.rpartition('.')
    obj = get_field(cfg, parent) if parent else cfg
    if not hasattr(obj, leaf):
        raise SystemExit(f'--set: unknown config key {key!r}')
    setattr(obj, leaf, value)


def _parse_setting(text: str) -> tuple[str, Any]:
    """``'key=value'`` with a JSON value (a bare word is a string)."""
    key, sep, raw = text.partition('=')
    if not sep:
        raise argparse.ArgumentTypeError(f'expected key=value, got {text!r}')
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def real_validation(fold_cfg: Any) -> dict[str, Any]:
    """Particle RMSE on the fold's REAL validation femurs: the model prediction uses, and the mean shape.

    The validation split is mostly generated samples, whose shapes (drawn by the sampler) and images (warps of a
    base) are not those of real femurs: its RMSE can fall while the real femurs get worse. This figure uses only the
    real subjects of the validation split (never a test femur), so designs whose generated samples differ can be
    compared on it. The mean shape is the mean of the real training femurs in the same frame.

    Returns:
        ``val_real_rmse_mm``, ``val_real_mean_shape_rmse_mm`` (means over subjects) and ``n_val_real``.
    """
    import torch

    from deepssm_nb.datasets import DeepSSMDataset
    from deepssm_nb.model_files import load_trained_model
    from deepssm_nb.normalization import load_normalization

    paths = fold_cfg.resolved_paths()
    real = set(cohort_from_config(fold_cfg.data).ids())
    loader_dir = Path(paths['loader_dir'])
    train_names = (loader_dir / 'train_names.txt').read_text().split('\n')[:-1]
    train_real = [i for i, n in enumerate(train_names) if n in real]
    mean = np.load(loader_dir / 'train_particles.npy', mmap_mode='r')[train_real].mean(axis=0)
    val = DeepSSMDataset(loader_dir, 'val', load_normalization(loader_dir))
    ds = fold_cfg.deepssm
    net = load_trained_model(
        paths['model_dir'], use_best=ds.use_best_model, fine_tuned=ds.fine_tune.enabled, calibrated=ds.calibrate
    )
    net_rmse, mean_rmse = [], []
    for i, name in enumerate(val.names):
        if name not in real:
            continue
        item = val[i]
        truth = np.asarray(item['particles'], dtype=np.float64)
        with torch.no_grad():
            _, pred = net(item['image'][None])
        net_rmse.append(float(np.sqrt(((pred[0].double().numpy() - truth) ** 2).sum(-1).mean())))
        mean_rmse.append(float(np.sqrt(((mean - truth) ** 2).sum(-1).mean())))
    return {
        'val_real_rmse_mm': float(np.mean(net_rmse)),
        'val_real_mean_shape_rmse_mm': float(np.mean(mean_rmse)),
        'n_val_real': len(net_rmse),
    }


def all_modes_floor(fold_cfg: Any) -> list[dict[str, Any]]:
    """The PCA floor with every mode of the fold's training shapes, scored like the other methods.

    The kept-mode floor is what a perfect network that predicts the kept modes would reach; this one is the
    least-squares projection onto the span of all training shapes, whose particle error no prediction in that
    span can beat. Its surface distance is close to (not strictly) the best such a prediction can reach, so
    ``pca_floor_all_modes_mm / mean_shape_baseline_mm`` shows about how far below the mean shape a linear shape
    model of these femurs can go. Its files go to ``<analysis_dir>_all_modes`` (the fold's own analysis is left
    as it is).

    Returns:
        One row per test subject (``method='pca_floor_all_modes'``), as in ``AnalysisResult.rows``.
    """
    from deepssm_nb.analyze import analyze_results, baseline_particles
    from deepssm_nb.groom import load_groomed
    from deepssm_nb.io import write_particles
    from deepssm_nb.pca import ShapePCA

    paths = fold_cfg.resolved_paths()
    cohort = cohort_from_config(fold_cfg.data)
    test_ids = cohort.ids('test')
    groomed = load_groomed(paths['groom_dir'])
    train = groomed.particles('train')
    pca = ShapePCA(len(train) - 1).fit(train)
    out = Path(f'{paths["analysis_dir"]}_all_modes')
    for sid, points in baseline_particles(groomed, pca, test_ids)['pca_floor'].items():
        write_particles(out / 'pca_floor_all_modes' / f'{sid}.particles', points)
    truth_dir = Path(cohort[test_ids[0]].segmentation).parent
    result = analyze_results(
        out / 'analysis',
        truth_dir,
        out / 'pca_floor_all_modes',
        (cohort.mean_mesh, cohort.mean_particles),
        subject_ids=test_ids,
        progress=False,
        particles_dir=Path(cohort[test_ids[0]].particles).parent,
    )
    return [dict(r, method='pca_floor_all_modes') for r in result.rows if r['method'] == 'deepssm']


def _pooled(rows: list[dict[str, Any]], method: str, stat: str) -> float:
    return float(np.mean([r[stat] for r in rows if r['method'] == method]))


def skill(deepssm_mm: float, mean_shape_mm: float, pca_floor_mm: float) -> float:
    """The fraction of the gap from the mean shape down to the kept-mode PCA floor that DeepSSM closes.

    1 is a perfect prediction of the kept PCA scores, 0 is no better than the registered mean shape, and a
    negative value is worse than it.
    """
    return (mean_shape_mm - deepssm_mm) / (mean_shape_mm - pca_floor_mm)


def seed_figures(rows: list[dict[str, Any]], seed: int) -> dict[str, Any]:
    """The pooled figures of one training seed: surface distance, both baselines, skill and per-femur wins."""
    dm, ms, pf = (_pooled(rows, m, 'mean') for m in ('deepssm', 'mean_shape', 'pca_floor'))
    by = {(r['id'], r['method']): r['mean'] for r in rows}
    ids = sorted({r['id'] for r in rows})
    wins = sum(by[(i, 'deepssm')] < by[(i, 'mean_shape')] for i in ids)
    return {
        'seed': seed,
        'mean_surface_distance_mm': dm,
        'mean_shape_baseline_mm': ms,
        'pca_floor_mm': pf,
        'skill': skill(dm, ms, pf),
        'wins_vs_mean_shape': int(wins),
        'n_test_subjects': len(ids),
    }


def run(
    profile: str,
    *,
    work_dir: Path,
    data_dir: str | None,
    num_folds: int | None,
    max_folds: int | None,
    until: str = 'analyze',
    analyze_only: bool = False,
    processes: int | None = None,
    only_fold: int | None = None,
    settings: dict[str, Any] | None = None,
    prior_wall_s: float = 0.0,
    seeds: list[int] | None = None,
) -> dict[str, Any] | None:
    seeds = list(seeds or [0])
    t0 = time.perf_counter()
    cfg = deepssm_nb.get_profile(profile, work_dir=str(work_dir))
    cfg.data.data_dir = data_dir
    cohort = cohort_from_config(cfg.data)
    ids = cohort.ids()
    num_folds = num_folds or math.ceil(len(ids) / cfg.data.num_test)
    folds = make_folds(ids, num_folds, random_state=cfg.seed)
    rows, per_fold = [], []
    for k, test_ids in enumerate(folds[:max_folds]):
        if only_fold is not None and k != only_fold:
            continue
        fold_cfg = deepssm_nb.get_profile(profile, work_dir=str(work_dir / f'fold_{k}'))
        fold_cfg.data.cohort = str(fold_cohort(cohort, test_ids, work_dir / f'fold_{k}' / 'cohort'))
        fold_cfg.data.data_dir = data_dir
        for key, value in (settings or {}).items():
            _set(fold_cfg, key, value)
        fold_cfg.validate()
        if processes:
            fold_cfg.groom.processes = fold_cfg.augment.processes = processes
        model_name = fold_cfg.deepssm.model_name
        for seed in seeds:
            # Every seed shares the fold's grooming, augmentation and loaders; only the training differs.
            fold_cfg.deepssm.trainer.seed = seed
            fold_cfg.deepssm.model_name = model_name if seeds == [0] else f'{model_name}_seed{seed}'
            t = time.perf_counter()
            if until != 'analyze':
                pipeline.ensure(fold_cfg, until)
                print(f'fold {k}: {test_ids} -> {until} done in {time.perf_counter() - t:.1f} s', flush=True)
                continue
            if analyze_only:
                # Predictions were made elsewhere (e.g. on a GPU machine): redo the cheap, deterministic grooming
                # here for the baselines, then analyse the predictions as they are.
                from deepssm_nb.analyze import run_analysis

                pipeline.ensure(fold_cfg, 'groom', verbose=False)
                result = run_analysis(fold_cfg)
            else:
                result = pipeline.ensure(fold_cfg, 'analyze')
            rows += [dict(r, seed=seed) for r in result.rows + all_modes_floor(fold_cfg)]
            figures = pipeline.key_figures(fold_cfg)
            per_fold.append(
                {
                    'fold': k,
                    'seed': seed,
                    'test_ids': test_ids,
                    'wall_s': round(time.perf_counter() - t, 1),
                    'mean_surface_distance_mm': result.summary['mean_surface_distance_mm'],
                    **{
                        key: figures[key]
                        for key in ('best_val_rmse_mm', 'calibrated_val_rmse_mm', 'pca_modes_kept')
                        if key in figures
                    },
                    **real_validation(fold_cfg),
                }
            )
            print(
                f'fold {k} seed {seed}: {test_ids} -> {result.summary["mean_surface_distance_mm"]:.3f} mm', flush=True
            )
    if until != 'analyze':
        return None
    dm, ms, pf = (_pooled(rows, m, 'mean') for m in ('deepssm', 'mean_shape', 'pca_floor'))
    per_seed = [seed_figures([r for r in rows if r['seed'] == seed], seed) for seed in seeds]
    pooled = [p['mean_surface_distance_mm'] for p in per_seed]
    return {
        'profile': profile,
        'folds': num_folds,
        'folds_run': len({p['fold'] for p in per_fold}),
        'seeds': list(seeds),
        'n_test_subjects': len({r['id'] for r in rows}),
        'mean_surface_distance_mm': dm,
        'skill': skill(dm, ms, pf),
        'wins_vs_mean_shape': min(p['wins_vs_mean_shape'] for p in per_seed),
        'seed_spread_mm': max(pooled) - min(pooled),
        'per_seed': per_seed,
        'hausdorff_mm': _pooled(rows, 'deepssm', 'hausdorff'),
        'p95_mm': _pooled(rows, 'deepssm', 'p95'),
        'particle_rmse_mm': _pooled(rows, 'deepssm', 'particle_rmse'),
        'mean_shape_baseline_mm': ms,
        'pca_floor_mm': pf,
        'ratio_to_mean_shape': dm / ms,
        'ratio_to_pca_floor': dm / pf,
        'pca_floor_all_modes_mm': _pooled(rows, 'pca_floor_all_modes', 'mean'),
        'best_ratio_to_mean_shape': _pooled(rows, 'pca_floor_all_modes', 'mean') / ms,
        'wall_s': round(prior_wall_s + time.perf_counter() - t0, 1),
        **({'prior_wall_s': prior_wall_s} if prior_wall_s else {}),
        'settings': settings or {},
        'per_fold': per_fold,
        'per_subject': [
            {k: r[k] for k in ('id', 'seed', 'method', 'mean', 'p95', 'hausdorff', 'particle_rmse')} for r in rows
        ],
        'machine': {
            'python': platform.python_version(),
            'platform': platform.platform(),
            'processor': platform.processor() or platform.machine(),
        },
        'definition': 'surface distances in mm, symmetric (average of both directed means; p95 and Hausdorff: '
        'the larger direction), averaged over every test subject of every fold',
    }


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--profile', default='workshop', choices=deepssm_nb.config.PROFILES)
    parser.add_argument('--work-dir', default='deepssm_output/bench', help='folder for every fold (kept, resumable)')
    parser.add_argument('--data-dir', default=None, help='cohort cache (default: $DEEPSSM_DATA_DIR or ~/.cache)')
    parser.add_argument('--folds', type=int, default=None, help='default: subjects / num_test, rounded up')
    parser.add_argument('--max-folds', type=int, default=None, help='run only the first K folds (a quick check)')
    parser.add_argument(
        '--until',
        default='analyze',
        choices=pipeline.STAGES[1:],
        help='stop every fold after this stage (e.g. predict on a machine without VTK)',
    )
    parser.add_argument(
        '--analyze-only',
        action='store_true',
        help='analyse predictions already in the work folder (made with --until predict)',
    )
    parser.add_argument('--processes', type=int, default=None, help='worker processes for grooming/augmentation')
    parser.add_argument('--only-fold', type=int, default=None, help='run just fold K (to run folds in parallel)')
    parser.add_argument(
        '--seeds',
        type=int,
        nargs='+',
        default=[0],
        help='training seeds (deepssm.trainer.seed); every figure is given per seed too',
    )
    parser.add_argument('--note', default=None, help='free text stored in the JSON (e.g. where training ran)')
    parser.add_argument(
        '--set',
        dest='settings',
        action='append',
        type=_parse_setting,
        default=[],
        metavar='KEY=VALUE',
        help='change a config field of every fold, e.g. '
        'groom.train_alignment=procrustes (repeatable; stored in the JSON)',
    )
    parser.add_argument(
        '--output',
        default=None,
        help='JSON file to write (default: bench/results/accuracy_<profile>.json for a run of '
        'every fold; <work-dir>/<profile>/accuracy.json for a partial run)',
    )
    parser.add_argument(
        '--prior-wall-s',
        type=float,
        default=0.0,
        help='seconds the folds took before this run (e.g. up to predict on a GPU machine, with '
        '--analyze-only); added to wall_s',
    )
    args = parser.parse_args(argv)
    work = Path(args.work_dir) / args.profile
    summary = run(
        args.profile,
        work_dir=work,
        data_dir=args.data_dir,
        num_folds=args.folds,
        max_folds=args.max_folds,
        until=args.until,
        analyze_only=args.analyze_only,
        processes=args.processes,
        only_fold=args.only_fold,
        settings=dict(args.settings),
        prior_wall_s=args.prior_wall_s,
        seeds=args.seeds,
    )
    if summary is None:
        return work
    if args.note:
        summary['note'] = args.note
    partial = summary['folds_run'] < summary['folds'] or len(summary['seeds']) < 2
    default = work / 'accuracy.json' if partial else RESULTS / f'accuracy_{args.profile}.json'
    out = write_json(Path(args.output) if args.output else default, summary)
    print(f'written: {out}')
    print({k: v for k, v in summary.items() if k not in ('per_fold', 'per_subject', 'machine')})
    return out


if __name__ == '__main__':
    main()
