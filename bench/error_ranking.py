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
Spearman r of every score, per fold and over the folds' images (each fold's model has its own scale, so the per-fold
figures and their mean are the fairer ones), the spread of each score across the images, and ``wall_s``.

Usage::

    python bench/error_ranking.py --profile workshop --work-dir WORK --max-folds 3   # WORK as for accuracy.py
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
import ood_scores
import uncertainty as unc_bench

import deepssm_nb
from deepssm_nb import pipeline
from deepssm_nb.data import cohort_from_config
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

    from deepssm_nb.loaders import load_train_val_loaders
    from deepssm_nb.model_files import load_trained_model
    from deepssm_nb.predict import predict_uncertainty

    pipeline.ensure(cfg, 'train', verbose=False)
    ds = cfg.deepssm
    net = load_trained_model(
        cfg.resolved_paths()['model_dir'],
        use_best=ds.use_best_model,
        fine_tuned=ds.fine_tune.enabled,
        calibrated=ds.calibrate,
        uncertain=True,
    )
    train, val, _ = load_train_val_loaders(cfg, augmented=False)
    feats, lats = [], []
    for batch in DataLoader(train.dataset, batch_size=8, shuffle=False):
        f, z = ood_scores._encodings(net, batch['image'])
        feats.append(f)
        lats.append(z)
    feature_ref = ood_scores._Distance(np.concatenate(feats))
    latent_ref = ood_scores._Distance(np.concatenate(lats))
    u = ds.uncertainty
    names, errors, mean_errors, values = [], [], [], {s: [] for s in SCORES}
    with torch.no_grad():
        mean_shape = net.decoder(torch.zeros(1, net.decoder.linear.in_features)).double()  # whitened score 0
    for batch in tqdm(DataLoader(val.dataset, batch_size=8, shuffle=False), desc='validation batches'):
        pu = predict_uncertainty(net, batch['image'], passes=u.mc_passes, seed=u.mc_seed)
        f, z = ood_scores._encodings(net, batch['image'])
        err = (pu.particles.double() - batch['particles'].double()).norm(dim=-1).mean(1)
        errors += err.tolist()
        mean_errors += (mean_shape - batch['particles'].double()).norm(dim=-1).mean(1).tolist()
        names += list(batch['name'])
        row = {
            'total_mm': pu.total_mm.double().mean(1).numpy(),
            'aleatoric_mm': pu.aleatoric_mm.double().mean(1).numpy(),
            'epistemic_mm': pu.epistemic_mm.double().mean(1).numpy(),
            'feature_mahalanobis': feature_ref.mahalanobis(f),
            'latent_mahalanobis': latent_ref.mahalanobis(z),
            'feature_knn': feature_ref.knn(f),
        }
        for s in SCORES:
            values[s] += [float(v) for v in row[s]]
    return {'names': names, 'errors': errors, 'mean_shape_errors': mean_errors, 'values': values}


def _figures(errors: list[float], values: dict[str, list[float]], real: np.ndarray) -> dict[str, Any]:
    e = np.asarray(errors)
    out: dict[str, Any] = {}
    for s in SCORES:
        v = np.asarray(values[s])
        out[s] = {
            **correlations(e, v),
            'real_only': correlations(e[real], v[real]),
            'relative_spread': float(v.std() / abs(v.mean())) if v.mean() else None,
        }
    return out


def run(profile: str, *, work_dir: Path, data_dir: str | None, max_folds: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    cfg = deepssm_nb.get_profile(profile, work_dir=str(work_dir))
    cfg.data.data_dir = data_dir
    cohort = cohort_from_config(cfg.data)
    ids = cohort.ids()
    folds = accuracy.make_folds(ids, math.ceil(len(ids) / cfg.data.num_test), random_state=cfg.seed)
    per_fold = []
    for k, test_ids in enumerate(folds[:max_folds]):
        t = time.perf_counter()
        fold_cfg = unc_bench._fold_cfg(profile, work_dir, k, cohort, test_ids, data_dir)
        fold_cfg.deepssm.encoder.deterministic = False
        fold_cfg.validate()
        out = _fold(fold_cfg)
        real = np.array([n in set(ids) for n in out['names']])
        per_fold.append(
            {
                'fold': k,
                'n_images': len(out['errors']),
                'n_real': int(real.sum()),
                'mean_error_mm': {
                    'real': float(np.mean(np.asarray(out['errors'])[real])),
                    'generated': float(np.mean(np.asarray(out['errors'])[~real])),
                },
                'mean_shape_error_mm': {
                    'real': float(np.mean(np.asarray(out['mean_shape_errors'])[real])),
                    'generated': float(np.mean(np.asarray(out['mean_shape_errors'])[~real])),
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
