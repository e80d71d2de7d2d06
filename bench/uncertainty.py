"""Uncertainty benchmark: Uncertain-DeepSSM on the folds of the accuracy benchmark.

For every fold of ``bench/accuracy.py`` (the same folds, work folders and seed 0 training), the stochastic encoder
(``deepssm.encoder.deterministic: false``) is trained on top of the fold's deterministic model (its uncertainty
stage; the base and fine-tuning stages are those of the accuracy run, reused when they are finished), the test
femurs are predicted with Monte Carlo dropout, and the predicted uncertainties are compared with the actual errors
(:mod:`deepssm_nb.uncertainty_analysis`). Each test image is also corrupted five ways (noise, blur, a shifted crop,
an intensity inversion, the femur removed) to measure how well the uncertainty flags images unlike the training
ones.

Pooled over every test femur of every fold, it writes ``bench/results/uncertainty_<profile>.json`` with:

* ``pearson_r_subject``: each femur's mean predicted uncertainty against its mean particle error;
* ``pearson_r_particle``: the same over all particles;
* ``coverage_95``: the fraction of particle errors inside the predicted 95 % ball;
* ``ood_auroc``: how well the mean uncertainty separates the corrupted images from the clean ones (0.5: chance);
* ``ood_auroc_feature_distance``: the same for the feature distance of :mod:`deepssm_nb.novelty` (the encoder's
  features against the training images'), the second score of the ``uncertain`` flag; ``flagged_uncertain``: the
  fraction of each condition that the flag (either score above its validation level) marks;
* ``mean_surface_distance_mm`` of the stochastic model, and ``deterministic_mean_surface_distance_mm`` of the
  model it started from, on the same femurs;
* ``wall_s``, and the same figures per fold, per uncertainty kind and per corruption.

Usage::

    python bench/uncertainty.py --profile workshop --work-dir WORK --data-dir DATA   # WORK as for accuracy.py
    python bench/uncertainty.py --profile smoke --max-folds 1                        # a quick check

A run of every fold writes ``bench/results/uncertainty_<profile>.json``; a partial run writes
``<work-dir>/<profile>/uncertainty.json`` (or ``--output``).
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy

import deepssm_nb
from deepssm_nb import pipeline
from deepssm_nb.corruptions import CORRUPTIONS, ood_auroc
from deepssm_nb.data import cohort_from_config
from deepssm_nb.io import write_json
from deepssm_nb.uncertainty_analysis import (
    COVERAGE_RADIUS,
    UNCERTAINTY_KINDS,
    analyze_uncertainty,
    ood_check,
)

RESULTS = Path(__file__).resolve().parent / 'results'
GOALS = {
    'pearson_r_subject': '>= 0.5',
    'coverage_95': 'between 0.90 and 0.98',
    'ood_auroc': '>= 0.9',
    'mean_surface_distance_mm': 'within 5 % of deterministic_mean_surface_distance_mm',
}


def _fold_cfg(profile: str, work: Path, k: int, cohort: Any, test_ids: list[str], data_dir: str | None) -> Any:
    cfg = deepssm_nb.get_profile(profile, work_dir=str(work / f'fold_{k}'))
    cfg.data.cohort = str(accuracy.fold_cohort(cohort, test_ids, work / f'fold_{k}' / 'cohort'))
    cfg.data.data_dir = data_dir
    return cfg


def run(
    profile: str,
    *,
    work_dir: Path,
    data_dir: str | None,
    max_folds: int | None = None,
    model_name: str | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    cfg = deepssm_nb.get_profile(profile, work_dir=str(work_dir))
    cfg.data.data_dir = data_dir
    cohort = cohort_from_config(cfg.data)
    ids = cohort.ids()
    num_folds = math.ceil(len(ids) / cfg.data.num_test)
    folds = accuracy.make_folds(ids, num_folds, random_state=cfg.seed)
    per_fold, std = [], {k: [] for k in UNCERTAINTY_KINDS}
    errors, ood, det_rows, unc_rows = [], [], [], []
    for k, test_ids in enumerate(folds[:max_folds]):
        t = time.perf_counter()
        det = _fold_cfg(profile, work_dir, k, cohort, test_ids, data_dir)
        if model_name:
            det.deepssm.model_name = model_name
        for key, value in (settings or {}).items():
            accuracy._set(det, key, value)
        det.validate()
        unc = deepssm_nb.Config.from_dict(det.to_dict())
        unc.deepssm.encoder.deterministic = False
        unc.validate()
        det_result = pipeline.ensure(det, 'analyze', verbose=False)
        unc_result = pipeline.ensure(unc, 'analyze', verbose=False)
        ua = analyze_uncertainty(unc)
        oc = ood_check(unc)
        for kind in UNCERTAINTY_KINDS:
            std[kind].append(ua.std[kind])
        errors.append(ua.error_mm)
        ood.append(oc)
        det_rows += [r for r in det_result.rows if r['method'] == 'deepssm']
        unc_rows += [r for r in unc_result.rows if r['method'] == 'deepssm']
        s = ua.summary()
        per_fold.append(
            {
                'fold': k,
                'test_ids': test_ids,
                'wall_s': round(time.perf_counter() - t, 1),
                'mean_surface_distance_mm': unc_result.summary['mean_surface_distance_mm'],
                'deterministic_mean_surface_distance_mm': det_result.summary['mean_surface_distance_mm'],
                'coverage_95': s['coverage_95'],
                'mean_total_mm': s['mean_total_mm'],
                'mean_particle_error_mm': s['mean_particle_error_mm'],
                'threshold_mm': s['threshold_mm'],
                'ood_auroc': oc['ood_auroc'],
                'ood_auroc_feature_distance': oc['ood_auroc_feature_distance'],
                'feature_threshold': oc['feature_threshold'],
                'flagged_uncertain': oc['flagged'],
                'uncertain': s['uncertain'],
            }
        )
        print(
            f'fold {k}: {test_ids} -> {per_fold[-1]["mean_surface_distance_mm"]:.3f} mm '
            f'(deterministic {per_fold[-1]["deterministic_mean_surface_distance_mm"]:.3f}), coverage '
            f'{s["coverage_95"]:.2f}, OOD AUROC {oc["ood_auroc"]:.2f} (feature distance '
            f'{oc["ood_auroc_feature_distance"]:.2f})',
            flush=True,
        )
    stds = {kind: np.concatenate(v) for kind, v in std.items()}  # (N, M)
    err = np.concatenate(errors)
    conditions = ('clean', *CORRUPTIONS)
    ood_values = {c: np.concatenate([o['mean_total_mm'][c] for o in ood]) for c in conditions}
    corrupted = np.concatenate([ood_values[c] for c in CORRUPTIONS])
    thresholds = [o['threshold_mm'] for o in ood]
    # Each fold's model has its own feature space: pool the distances in units of the fold's validation level.
    fd = {
        c: np.concatenate([np.asarray(o['feature_distance'][c]) / o['feature_threshold'] for o in ood])
        for c in conditions
    }
    flagged = {
        c: float(
            np.mean(
                np.concatenate(
                    [
                        (np.asarray(o['mean_total_mm'][c]) > o['threshold_mm'])
                        | (np.asarray(o['feature_distance'][c]) > o['feature_threshold'])
                        for o in ood
                    ]
                )
            )
        )
        for c in conditions
    }
    flagged_by_uncertainty = {
        c: float(np.mean(np.concatenate([np.asarray(o['mean_total_mm'][c]) > o['threshold_mm'] for o in ood])))
        for c in conditions
    }
    r = {
        kind.removesuffix('_mm'): {
            'pearson_r_subject': _pearson(stds[kind].mean(1), err.mean(1)),
            'pearson_r_particle': _pearson(stds[kind], err),
            'mean_mm': float(stds[kind].mean()),
        }
        for kind in UNCERTAINTY_KINDS
    }
    dm = float(np.mean([row['mean'] for row in unc_rows]))
    ddm = float(np.mean([row['mean'] for row in det_rows]))
    return {
        'profile': profile,
        'folds': num_folds,
        'folds_run': len(per_fold),
        'seeds': [0],
        'n_test_subjects': int(err.shape[0]),
        'pearson_r_subject': r['total']['pearson_r_subject'],
        'pearson_r_particle': r['total']['pearson_r_particle'],
        'coverage_95': float(np.mean(err <= COVERAGE_RADIUS * stds['total_mm'])),
        'ood_auroc': ood_auroc(ood_values['clean'], corrupted),
        'ood_auroc_by_kind': {c: ood_auroc(ood_values['clean'], ood_values[c]) for c in CORRUPTIONS},
        'ood_auroc_feature_distance': ood_auroc(fd['clean'], np.concatenate([fd[c] for c in CORRUPTIONS])),
        'ood_auroc_feature_distance_by_kind': {c: ood_auroc(fd['clean'], fd[c]) for c in CORRUPTIONS},
        'flagged_uncertain': flagged,
        'flagged_by_uncertainty_alone': flagged_by_uncertainty,
        'mean_uncertainty_by_condition_mm': {c: float(np.mean(v)) for c, v in ood_values.items()},
        'mean_surface_distance_mm': dm,
        'deterministic_mean_surface_distance_mm': ddm,
        'surface_distance_ratio': dm / ddm,
        'mean_particle_error_mm': float(err.mean()),
        'by_kind': r,
        'thresholds_mm': thresholds,
        'uncertainty_settings': dict(vars(unc.deepssm.uncertainty)),
        'goals': GOALS,
        'per_fold': per_fold,
        'wall_s': round(time.perf_counter() - t0, 1),
        'machine': {'python': platform.python_version(), 'platform': platform.platform()},
        'definition': 'uncertainty = sqrt(trace of the predicted covariance) of a particle, mm; error = distance '
        'of the predicted from the true particle, mm (both in the image frame); coverage: error within '
        f'{COVERAGE_RADIUS:.3f} x the total uncertainty; OOD: each test image clean and corrupted five ways, '
        "scored by its mean total uncertainty (ood_auroc) and by its feature distance over the fold's validation "
        'level (ood_auroc_feature_distance); flagged_uncertain: either score above its validation level',
    }


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson r, or None (JSON null) for fewer than 3 points (one smoke fold has 2 test femurs)."""
    from deepssm_nb.viz.uncertainty import pearson_r

    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    return float(pearson_r(x, y)) if x.size >= 3 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--profile', default='workshop', choices=deepssm_nb.config.PROFILES)
    parser.add_argument('--work-dir', default='bench_work', help='work folder, as for bench/accuracy.py')
    parser.add_argument('--data-dir', default=None, help='cohort cache folder')
    parser.add_argument('--max-folds', type=int, default=None, help='run only the first N folds')
    parser.add_argument(
        '--model-name',
        default=None,
        help='model folder of the deterministic run to start from (e.g. femur_deepssm_seed0 after '
        "accuracy.py --seeds 0 1); default: the profile's",
    )
    parser.add_argument(
        '--set',
        dest='settings',
        action='append',
        type=accuracy._parse_setting,
        default=[],
        metavar='KEY=VALUE',
        help='change a config field of every fold (repeatable), e.g. deepssm.uncertainty.epochs=4',
    )
    parser.add_argument('--note', default=None, help='free text stored in the JSON')
    parser.add_argument('--output', default=None, help='JSON file to write')
    args = parser.parse_args(argv)
    work = Path(args.work_dir) / args.profile
    summary = run(
        args.profile,
        work_dir=work,
        data_dir=args.data_dir,
        max_folds=args.max_folds,
        model_name=args.model_name,
        settings=dict(args.settings),
    )
    summary['settings'] = dict(args.settings)
    if args.note:
        summary['note'] = args.note
    partial = summary['folds_run'] < summary['folds']
    default = work / 'uncertainty.json' if partial else RESULTS / f'uncertainty_{args.profile}.json'
    out = Path(args.output) if args.output else default
    write_json(out, summary)
    keys = ('pearson_r_subject', 'pearson_r_particle', 'coverage_95', 'ood_auroc', 'ood_auroc_feature_distance')
    print(
        ', '.join(f'{k} {summary[k]:.3f}' if summary[k] is not None else f'{k} n/a' for k in keys)
        + f'; surface distance {summary["mean_surface_distance_mm"]:.3f} mm '
        f'(deterministic {summary["deterministic_mean_surface_distance_mm"]:.3f}); wrote {out}'
    )
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
