"""Which score ranks images by their error? A validation-only search for a lever on ``pearson_r_subject``.

``bench/uncertainty.py`` correlates each test femur's mean predicted std with its mean particle error
(``pearson_r_subject``, goal 0.5). Before changing what the package reports as uncertainty, this benchmark asks on
the VALIDATION images of the first folds (real femurs and thin-plate-spline samples; no test femur is read) whether
any score that prediction can compute follows the error:

* ``total_mm``, ``aleatoric_mm``, ``epistemic_mm``: the mean predicted uncertainty of the particles;
* ``feature_mahalanobis``, ``latent_mahalanobis``, ``feature_knn``: the distances of ``bench/ood_scores.py``.

For each image, the error is the mean distance of its predicted particles (the mean over the Monte Carlo passes)
from its true particles, in mm; the same distance for the training mean shape is reported beside it, for the real
femurs and for the generated samples apart (a generated sample's shape lies inside the shape model, so the network
could read it exactly). It writes ``bench/results/error_ranking_<profile>.json`` with the Pearson and
Spearman r of every score per fold, over all its validation images and over its real femurs alone, the mean of the
per-fold Pearson r (each fold's model has its own scale, so the folds' images are not pooled), the relative spread
of each score across the images, and ``wall_s``.

Usage::

    python bench/error_ranking.py --profile workshop --work-dir WORK --max-folds 3   # WORK as for accuracy.py
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ood_scores

import deepssm_nb
from deepssm_nb.io import write_json

RESULTS = Path(__file__).resolve().parent / 'results'
SCORES = ood_scores.SCORES


def _rank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind='stable')
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    return r


def correlations(error: np.ndarray, score: np.ndarray) -> dict[str, float | None]:
    """Pearson and Spearman r of a score with the error; None where either is constant (or fewer than 3 images)."""
    error, score = np.asarray(error, float), np.asarray(score, float)
    if error.size < 3 or np.ptp(error) == 0 or np.ptp(score) < 1e-9 * max(1.0, float(np.abs(score).max())):
        return {'pearson_r': None, 'spearman_r': None}
    return {
        'pearson_r': float(np.corrcoef(error, score)[0, 1]),
        'spearman_r': float(np.corrcoef(_rank(error), _rank(score))[0, 1]),
    }


def _fold(cfg: Any) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    scorer = ood_scores.FoldScorer(cfg)
    net = scorer.net
    with torch.no_grad():
        mean_shape = net.decoder(torch.zeros(1, net.decoder.linear.in_features)).double()  # whitened score 0
    names, errors, mean_errors, values = [], [], [], {s: [] for s in SCORES}
    for batch in tqdm(DataLoader(scorer.val.dataset, batch_size=8, shuffle=False), desc='validation batches'):
        pu, row = scorer(batch['image'])
        truth = batch['particles'].double()
        errors += (pu.particles.double() - truth).norm(dim=-1).mean(1).tolist()
        mean_errors += (mean_shape - truth).norm(dim=-1).mean(1).tolist()
        names += list(batch['name'])
        for s in SCORES:
            values[s] += [float(v) for v in row[s]]
    return {
        'names': names,
        'errors': np.asarray(errors),
        'mean_shape_errors': np.asarray(mean_errors),
        'values': values,
    }


def _figures(errors: np.ndarray, values: dict[str, list[float]], real: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in SCORES:
        v = np.asarray(values[s])
        out[s] = {
            **correlations(errors, v),
            'real_only': correlations(errors[real], v[real]),
            'relative_spread': float(v.std() / abs(v.mean())) if v.mean() else None,
        }
    return out


def run(profile: str, *, work_dir: Path, data_dir: str | None, max_folds: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    per_fold = []
    for k, fold_cfg, ids in ood_scores.uncertain_fold_configs(profile, work_dir, data_dir, max_folds):
        t = time.perf_counter()
        out = _fold(fold_cfg)
        real = np.isin(out['names'], ids)
        per_fold.append(
            {
                'fold': k,
                'n_images': len(out['errors']),
                'n_real': int(real.sum()),
                **{
                    key: {'real': float(out[name][real].mean()), 'generated': float(out[name][~real].mean())}
                    for key, name in (('mean_error_mm', 'errors'), ('mean_shape_error_mm', 'mean_shape_errors'))
                },
                'scores': _figures(out['errors'], out['values'], real),
                'wall_s': round(time.perf_counter() - t, 1),
            }
        )
        print(
            f'fold {k}: ' + ', '.join(f'{s} {per_fold[-1]["scores"][s]["pearson_r"]}' for s in SCORES),
            flush=True,
        )
    summary = {}
    for s in SCORES:
        rs = [f['scores'][s]['pearson_r'] for f in per_fold]
        summary[s] = {
            'pearson_r_per_fold': rs,
            'pearson_r_fold_mean': float(np.mean([r for r in rs if r is not None]))
            if any(r is not None for r in rs)
            else None,
        }
    best = max(
        (s for s in SCORES if summary[s]['pearson_r_fold_mean'] is not None),
        key=lambda s: summary[s]['pearson_r_fold_mean'],
        default=None,
    )
    return {
        'profile': profile,
        'folds_run': len(per_fold),
        'split': 'validation images only (real femurs and generated samples, clean); no test femur is read',
        'definition': 'error: mean distance of the predicted (MC mean) from the true particles of an image, mm; '
        'r: over the validation images of one fold',
        'scores': summary,
        'best_by_fold_mean_pearson': best,
        'per_fold': per_fold,
        'wall_s': round(time.perf_counter() - t0, 1),
        'machine': {'python': platform.python_version(), 'platform': platform.platform()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--profile', default='workshop', choices=deepssm_nb.config.PROFILES)
    parser.add_argument('--work-dir', default='bench_work', help='work folder, as for bench/accuracy.py')
    parser.add_argument('--data-dir', default=None, help='cohort cache folder')
    parser.add_argument('--max-folds', type=int, default=3, help='run the first N folds')
    parser.add_argument('--note', default=None, help='free text stored in the JSON (e.g. the machine)')
    parser.add_argument('--output', default=None, help='JSON file to write')
    args = parser.parse_args(argv)
    if args.max_folds < 1:
        parser.error(f'--max-folds must be at least 1; got {args.max_folds}.')
    result = run(
        args.profile, work_dir=Path(args.work_dir) / args.profile, data_dir=args.data_dir, max_folds=args.max_folds
    )
    if args.note:
        result['note'] = args.note
    out = Path(args.output) if args.output else RESULTS / f'error_ranking_{args.profile}.json'
    print(f'written: {write_json(out, result)}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
