"""Accuracy ablation: each design variant on the same quick proxy (the same folds and training seeds).

A variant is a set of config changes on the ``workshop`` profile. Every variant runs the folds and seeds of the
proxy through the whole pipeline (as ``bench/accuracy.py`` does, one work folder per variant, resumable), and is
judged on the **real validation femurs** only: the particle RMSE of the model prediction uses on the real subjects
of the validation split (``val_real_rmse_mm``), next to the mean shape's on the same femurs. The validation split
is mostly generated samples whose shapes and images differ by variant (another sampler draws other shapes), so its
overall RMSE does not compare variants; the test femurs are reported for each variant but never used to choose.

Usage::

    python bench/ablation.py --work-dir runs/ablation                      # every variant, the proxy folds/seeds
    python bench/ablation.py --work-dir runs/ablation --variants shipped gaussian
    python bench/ablation.py --work-dir runs/ablation --done-only          # gather what has finished, run nothing

Writes ``bench/results/accuracy_ablation.json`` when every variant ran every proxy run, else
``bench/results/accuracy_ablation_partial.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy

from deepssm_nb.io import write_json

RESULTS = Path(__file__).resolve().parent / 'results'
PROFILE = 'workshop'
PROXY_FOLDS = (0, 1)
PROXY_SEEDS = (0, 1)

# The workshop profile before the training-time augmentation became its default (commit 187ccfd): stored samples
# replayed every epoch, the groomed images warped, the wider encoder and its longer schedule. Every variant is
# written relative to today's profile, so that it names the same configuration whatever the profile's defaults.
BEFORE = {
    'augment.fresh_samples': 0,
    'augment.intensity.enabled': False,
    'augment.pose_jitter_mm': 0.0,
    'augment.pose_jitter_deg': 0.0,
    'augment.warp_from': 'groomed',
    'deepssm.encoder.channels': [12, 24, 48, 96, 192],
    'deepssm.trainer.epochs': 15,
    'deepssm.fine_tune.epochs': 2,
}

VARIANTS: dict[str, dict[str, Any]] = {
    'shipped': dict(BEFORE),
    'gaussian': {**BEFORE, 'augment.sampler': 'gaussian'},
    'gmask8': {**BEFORE, 'augment.sampler': 'gaussian', 'deepssm.encoder.input_margin_mm': 8.0},
    'mask8': {**BEFORE, 'deepssm.encoder.input_margin_mm': 8.0},
    'levers': {'deepssm.trainer.epochs': 15, 'deepssm.fine_tune.epochs': 2},
    'workshop': {},
    'wmask8': {'deepssm.encoder.input_margin_mm': 8.0},
    'wmask8g': {'deepssm.encoder.input_margin_mm': 8.0, 'augment.sampler': 'gaussian'},
}
DESCRIPTIONS = {
    'shipped': 'the workshop profile as shipped before 187ccfd (KDE sampler, stored samples replayed, whole image, '
    'channels 12-192, 15 + 2 epochs)',
    'gaussian': 'samples drawn from a Gaussian of the training scores instead of the KDE around each training shape',
    'gmask8': 'Gaussian sampler, and the encoder reads only voxels within 8 mm of the mean shape',
    'mask8': 'the encoder reads only voxels within 8 mm of the mean shape',
    'levers': 'original-scan warp, 352 fresh samples an epoch, intensity augmentation, pose jitter 1 mm / 1 deg, '
    'channels 8-128, 15 + 2 epochs',
    'workshop': 'the workshop profile of today: the levers at 9 + 1 epochs, the budget that fits the 20-minute '
    'tutorial in float32',
    'wmask8': "today's workshop profile, and the encoder reads only voxels within 8 mm of the mean shape",
    'wmask8g': "today's workshop profile, the 8 mm input band, and fresh samples drawn from a Gaussian of the "
    'training scores',
}


def _fold_done(work: Path, fold: int, seeds: list[int]) -> bool:
    model = work / PROFILE / f'fold_{fold}' / 'model'
    names = ['femur_deepssm'] if seeds == [0] else [f'femur_deepssm_seed{s}' for s in seeds]
    return all((model / n / 'analysis' / 'summary.json').is_file() for n in names)


def _runs(summary: dict[str, Any], fold: int) -> list[dict[str, Any]]:
    """One row per training seed of one fold: the validation figures and the fold's test figures."""
    out = []
    for row in summary['per_fold']:
        sid = row['seed']
        subj = {}
        for r in summary['per_subject']:
            if r['seed'] == sid:
                subj.setdefault(r['id'], {})[r['method']] = r['mean']
        wins = sum(v['deepssm'] < v['mean_shape'] for v in subj.values())
        out.append(
            {
                'fold': fold,
                'seed': sid,
                'test_ids': row['test_ids'],
                **{
                    k: row.get(k)
                    for k in (
                        'val_real_rmse_mm',
                        'val_real_mean_shape_rmse_mm',
                        'n_val_real',
                        'best_val_rmse_mm',
                        'calibrated_val_rmse_mm',
                        'wall_s',
                    )
                },
                'test_mean_surface_distance_mm': row['mean_surface_distance_mm'],
                'test_mean_shape_baseline_mm': float(np.mean([v['mean_shape'] for v in subj.values()])),
                'test_pca_floor_mm': float(np.mean([v['pca_floor'] for v in subj.values()])),
                'test_wins_vs_mean_shape': int(wins),
                'n_test': len(subj),
            }
        )
    return out


def summarize(name: str, runs: list[dict[str, Any]], folds: list[int], seeds: list[int]) -> dict[str, Any]:
    """A variant's figures over its proxy runs (means over runs; the test figures pooled over femurs)."""
    entry: dict[str, Any] = {
        'name': name,
        'description': DESCRIPTIONS.get(name, ''),
        'settings': VARIANTS[name],
        'runs_done': len(runs),
        'runs_planned': len(folds) * len(seeds),
        'complete': len(runs) == len(folds) * len(seeds),
        'runs': runs,
    }
    if not runs:
        return entry
    val, val_mean = (float(np.mean([r[k] for r in runs])) for k in ('val_real_rmse_mm', 'val_real_mean_shape_rmse_mm'))
    n = [r['n_test'] for r in runs]
    dm, ms, pf = (
        float(np.average([r[f'test_{k}'] for r in runs], weights=n))
        for k in ('mean_surface_distance_mm', 'mean_shape_baseline_mm', 'pca_floor_mm')
    )
    entry.update(
        {
            'val_real_rmse_mm': val,
            'val_real_mean_shape_rmse_mm': val_mean,
            'val_real_ratio_to_mean_shape': val / val_mean,
            'val_real_rmse_mm_per_run': [r['val_real_rmse_mm'] for r in runs],
            'test_reported_not_chosen_on': {
                'mean_surface_distance_mm': dm,
                'mean_shape_baseline_mm': ms,
                'pca_floor_mm': pf,
                'skill': accuracy.skill(dm, ms, pf),
                'wins_vs_mean_shape': int(sum(r['test_wins_vs_mean_shape'] for r in runs)),
                'femur_runs': int(sum(n)),
            },
        }
    )
    return entry


def _included(path: Path, gathered: set[str]) -> list[dict[str, Any]]:
    """The variants of an earlier ablation JSON that this run does not gather, kept as measured."""
    try:
        earlier = json.loads(path.read_text())
        variants = earlier['variants']
    except (OSError, ValueError, KeyError) as e:
        raise SystemExit(f'--include {path}: expected an ablation JSON with a "variants" list; {e}') from None
    kept = []
    for entry in variants:
        if entry['name'] in gathered:
            continue
        if entry['name'] not in VARIANTS:
            raise SystemExit(f'--include {path}: variant {entry["name"]!r} is not one of {sorted(VARIANTS)}')
        kept.append({**entry, 'settings': VARIANTS[entry['name']], 'included_from': path.name})
    return kept


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', required=True, help='one folder per variant below it (kept, resumable)')
    parser.add_argument('--data-dir', default=None, help='cohort cache (default: $DEEPSSM_DATA_DIR or ~/.cache)')
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument('--folds', type=int, nargs='+', default=list(PROXY_FOLDS))
    parser.add_argument('--seeds', type=int, nargs='+', default=list(PROXY_SEEDS))
    parser.add_argument('--done-only', action='store_true', help='gather the finished runs; train nothing')
    parser.add_argument('--note', default=None, help='free text stored in the JSON (e.g. the machine)')
    parser.add_argument(
        '--output', default=None, help='JSON file (default: bench/results/accuracy_ablation[_partial].json)'
    )
    parser.add_argument(
        '--include',
        default=None,
        help='an earlier ablation JSON: its variants that this run does not gather are kept as they were measured '
        '(marked "included_from"; their settings restated relative to the current profile)',
    )
    args = parser.parse_args(argv)
    entries = []
    for name in args.variants:
        work = Path(args.work_dir) / name
        runs: list[dict[str, Any]] = []
        for fold in args.folds:
            if args.done_only and not _fold_done(work, fold, args.seeds):
                continue
            summary = accuracy.run(
                PROFILE,
                work_dir=work / PROFILE,
                data_dir=args.data_dir,
                num_folds=None,
                max_folds=None,
                only_fold=fold,
                settings=VARIANTS[name],
                seeds=args.seeds,
            )
            runs += _runs(summary, fold)
        entries.append(summarize(name, runs, args.folds, args.seeds))
    if args.include:
        entries = _included(Path(args.include), {e['name'] for e in entries}) + entries
    done = [e for e in entries if e['complete']]
    chosen = min(done, key=lambda e: e['val_real_rmse_mm'])['name'] if done else None
    complete = len(done) == len(entries)
    result = {
        'status': 'complete'
        if complete
        else 'partial: '
        + ', '.join(f'{e["name"]} {e["runs_done"]}/{e["runs_planned"]} runs' for e in entries if not e['complete']),
        'profile': PROFILE,
        'proxy': {
            'folds': args.folds,
            'seeds': args.seeds,
            'fold_test_ids': {str(r['fold']): r['test_ids'] for e in entries for r in e['runs']},
        },
        'choose_on': 'val_real_rmse_mm: particle RMSE of the prediction on the real validation femurs, mean over the '
        'proxy runs (lower is better); test-femur figures are reported, never used to choose',
        'chosen_among_complete': chosen,
        'variants': entries,
        'machine': {
            'python': platform.python_version(),
            'platform': platform.platform(),
            'processor': platform.processor() or platform.machine(),
        },
    }
    if args.note:
        result['note'] = args.note
    name = 'accuracy_ablation.json' if complete else 'accuracy_ablation_partial.json'
    out = write_json(Path(args.output) if args.output else RESULTS / name, result)
    print(f'written: {out}')
    for e in entries:
        if e['runs']:
            t = e['test_reported_not_chosen_on']
            print(
                f'{e["name"]:>9}: {e["runs_done"]}/{e["runs_planned"]} runs, real validation '
                f'{e["val_real_rmse_mm"]:.3f} mm (mean shape {e["val_real_mean_shape_rmse_mm"]:.3f}); '
                f'test {t["mean_surface_distance_mm"]:.3f} mm (mean shape {t["mean_shape_baseline_mm"]:.3f}, '
                f'skill {t["skill"]:.2f}, wins {t["wins_vs_mean_shape"]}/{t["femur_runs"]})'
            )
    return out


if __name__ == '__main__':
    main()
