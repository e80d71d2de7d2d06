"""Which score tells an unusual image apart? A validation-only comparison for the Uncertain-DeepSSM flag.

``bench/uncertainty.py`` scores each image by its mean total uncertainty, and on the test femurs of all 7 folds
that separates the corrupted images from the clean ones poorly (AUROC 0.57). This benchmark compares that score
with the other two uncertainty parts and with three distances of the image's encoding from the training set's,
on the VALIDATION images of the first folds only (the test femurs are not read), so that a replacement can be
chosen without looking at test results:

* ``total_mm``, ``aleatoric_mm``, ``epistemic_mm``: the mean predicted uncertainty of the particles;
* ``feature_mahalanobis``: the Mahalanobis distance of the encoder's 96 features (eval mode) from the training
  images' features (Ledoit-Wolf covariance);
* ``latent_mahalanobis``: the same for the predicted PCA scores;
* ``feature_knn``: the mean distance to the 5 nearest training images in the standardised feature space.

Each validation image is scored clean and corrupted five ways (as in ``ood_check``; the femur mask of
``no_femur`` comes from the image's own particles). The training statistics come from the stored training images
(real and thin-plate-spline samples) as the network reads them. It writes ``bench/results/ood_scores_<profile>.json``
with the pooled and per-fold AUROC of every score, overall and per corruption, and ``wall_s``.

Usage::

    python bench/ood_scores.py --profile workshop --work-dir WORK --max-folds 2   # WORK as for accuracy.py
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
import uncertainty as unc_bench

import deepssm_nb
from deepssm_nb import pipeline
from deepssm_nb.corruptions import CORRUPTIONS, corrupt_all, ood_auroc
from deepssm_nb.data import cohort_from_config
from deepssm_nb.io import write_json
from deepssm_nb.novelty import FeatureDistance, encoder_features

RESULTS = Path(__file__).resolve().parent / 'results'
SCORES = ('total_mm', 'aleatoric_mm', 'epistemic_mm', 'feature_mahalanobis', 'latent_mahalanobis', 'feature_knn')
KNN = 5


def _encodings(net: Any, images: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(features (B, 96), latent means (B, L))`` of whitened images, eval mode, no dropout."""
    import torch

    net.eval()
    with torch.no_grad():
        latent = net.encode(images)[0].double().cpu().numpy()
    return encoder_features(net, images), latent


class _Distance:
    """Mahalanobis (:class:`~deepssm_nb.novelty.FeatureDistance`) and k-nearest-neighbour distances from a
    reference set of vectors."""

    def __init__(self, reference: np.ndarray):
        self.fd = FeatureDistance().fit(reference)
        self.mean = reference.mean(0)
        self.scale = reference.std(0) + 1e-8
        self.ref = (reference - self.mean) / self.scale

    def mahalanobis(self, x: np.ndarray) -> np.ndarray:
        return self.fd.score(x)

    def knn(self, x: np.ndarray, k: int = KNN) -> np.ndarray:
        z = (x - self.mean) / self.scale
        d = np.sqrt(((z[:, None, :] - self.ref[None]) ** 2).sum(-1))
        return np.sort(d, axis=1)[:, :k].mean(1)


def uncertain_fold_configs(profile: str, work_dir: Path, data_dir: str | None, max_folds: int):
    """``(k, fold config, cohort ids)`` of the first folds of the accuracy benchmark, with the stochastic encoder."""
    cfg = deepssm_nb.get_profile(profile, work_dir=str(work_dir))
    cfg.data.data_dir = data_dir
    cohort = cohort_from_config(cfg.data)
    ids = cohort.ids()
    folds = accuracy.make_folds(ids, math.ceil(len(ids) / cfg.data.num_test), random_state=cfg.seed)
    for k, test_ids in enumerate(folds[:max_folds]):
        fold_cfg = unc_bench._fold_cfg(profile, work_dir, k, cohort, test_ids, data_dir)
        fold_cfg.deepssm.encoder.deterministic = False
        yield k, fold_cfg.validate(), ids


class FoldScorer:
    """A fold's trained Uncertain-DeepSSM (trained first if needed) and the training references of the distances.

    Attributes:
        net: The network (best / fine-tuned / calibrated as the config says).
        train, val: Its stored training and validation loaders (no augmentation); ``norm`` their normalisation.
    """

    def __init__(self, cfg: Any):
        from torch.utils.data import DataLoader

        from deepssm_nb.loaders import load_train_val_loaders
        from deepssm_nb.model_files import load_trained_model

        pipeline.ensure(cfg, 'train', verbose=False)
        ds = cfg.deepssm
        self.net = load_trained_model(
            cfg.resolved_paths()['model_dir'],
            use_best=ds.use_best_model,
            fine_tuned=ds.fine_tune.enabled,
            calibrated=ds.calibrate,
            uncertain=True,
        )
        self.train, self.val, self.norm = load_train_val_loaders(cfg, augmented=False)
        self.uncertainty = ds.uncertainty
        feats, lats = [], []
        for batch in DataLoader(self.train.dataset, batch_size=8, shuffle=False):
            f, z = _encodings(self.net, batch['image'])
            feats.append(f)
            lats.append(z)
        self.feature_ref, self.latent_ref = _Distance(np.concatenate(feats)), _Distance(np.concatenate(lats))

    def __call__(self, images: Any) -> tuple[Any, dict[str, np.ndarray]]:
        """``(ParticleUncertainty, {score: (B,)})`` of whitened images ``(B, 1, D, H, W)``: every score of SCORES."""
        from deepssm_nb.predict import predict_uncertainty

        u = self.uncertainty
        pu = predict_uncertainty(self.net, images, passes=u.mc_passes, seed=u.mc_seed)
        f, z = _encodings(self.net, images)
        return pu, {
            'total_mm': pu.total_mm.double().mean(1).cpu().numpy(),
            'aleatoric_mm': pu.aleatoric_mm.double().mean(1).cpu().numpy(),
            'epistemic_mm': pu.epistemic_mm.double().mean(1).cpu().numpy(),
            'feature_mahalanobis': self.feature_ref.mahalanobis(f),
            'latent_mahalanobis': self.latent_ref.mahalanobis(z),
            'feature_knn': self.feature_ref.knn(f),
        }


def _fold(cfg: Any, *, max_images: int, seed: int) -> dict[str, Any]:
    import torch
    from tqdm.auto import tqdm

    from deepssm_nb.train import input_mask
    from deepssm_nb.uncertainty_analysis import FEMUR_MARGIN_MM

    scorer = FoldScorer(cfg)
    val = scorer.val
    n_val = len(val.dataset)
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(n_val, size=min(max_images, n_val), replace=False))
    conditions = ('clean', *CORRUPTIONS)
    values: dict[str, dict[str, list[float]]] = {s: {c: [] for c in conditions} for s in SCORES}
    for k, i in enumerate(tqdm(picked.tolist(), desc='validation images', unit='image')):
        item = val.dataset[i]
        image = item['image']
        mask = input_mask(scorer.norm, item['particles'].double().numpy(), FEMUR_MARGIN_MM)
        images = {'clean': image, **corrupt_all(image, seed=seed + k, strength=1.0, femur_mask=mask)}
        _, row = scorer(torch.stack([images[c] for c in conditions]))
        for s in SCORES:
            for c, v in zip(conditions, row[s].tolist()):
                values[s][c].append(float(v))
    return {
        'values': values,
        'n_validation': n_val,
        'n_images': int(picked.size),
        'n_train': len(scorer.train.dataset),
    }


def _aurocs(values: dict[str, list[float]] | dict[str, np.ndarray]) -> dict[str, Any]:
    clean = np.asarray(values['clean'])
    corrupted = np.concatenate([np.asarray(values[c]) for c in CORRUPTIONS])
    return {
        'ood_auroc': ood_auroc(clean, corrupted),
        'by_kind': {c: ood_auroc(clean, np.asarray(values[c])) for c in CORRUPTIONS},
    }


def run(profile: str, *, work_dir: Path, data_dir: str | None, max_folds: int, max_images: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    per_fold, pooled = [], {s: {c: [] for c in ('clean', *CORRUPTIONS)} for s in SCORES}
    for k, fold_cfg, _ in uncertain_fold_configs(profile, work_dir, data_dir, max_folds):
        t = time.perf_counter()
        out = _fold(fold_cfg, max_images=max_images, seed=k)
        # Pooled as they are: every fold's model has its own scale, so 'fold_mean' is the fairer figure.
        for s in SCORES:
            for c, v in out['values'][s].items():
                pooled[s][c].extend(v)
        per_fold.append(
            {
                'fold': k,
                'n_train': out['n_train'],
                'n_validation': out['n_validation'],
                'n_images': out['n_images'],
                'wall_s': round(time.perf_counter() - t, 1),
                'scores': {s: _aurocs(out['values'][s]) for s in SCORES},
            }
        )
        print(
            f'fold {k}: ' + ', '.join(f'{s} {per_fold[-1]["scores"][s]["ood_auroc"]:.2f}' for s in SCORES),
            flush=True,
        )
    return {
        'profile': profile,
        'folds_run': len(per_fold),
        'split': 'validation images only (clean and corrupted); no test femur is read',
        'scores': {
            s: {**_aurocs(pooled[s]), 'fold_mean': float(np.mean([f['scores'][s]['ood_auroc'] for f in per_fold]))}
            for s in SCORES
        },
        'per_fold': per_fold,
        'wall_s': round(time.perf_counter() - t0, 1),
        'machine': {'python': platform.python_version(), 'platform': platform.platform()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--profile', default='workshop', choices=deepssm_nb.config.PROFILES)
    parser.add_argument('--work-dir', default='bench_work', help='work folder, as for bench/accuracy.py')
    parser.add_argument('--data-dir', default=None, help='cohort cache folder')
    parser.add_argument('--max-folds', type=int, default=2, help='run the first N folds')
    parser.add_argument('--max-images', type=int, default=48, help='validation images scored per fold')
    parser.add_argument('--note', default=None, help='free text stored in the JSON')
    parser.add_argument('--output', default=None, help='JSON file to write')
    args = parser.parse_args(argv)
    summary = run(
        args.profile,
        work_dir=Path(args.work_dir) / args.profile,
        data_dir=args.data_dir,
        max_folds=args.max_folds,
        max_images=args.max_images,
    )
    if args.note:
        summary['note'] = args.note
    out = Path(args.output) if args.output else RESULTS / f'ood_scores_{args.profile}.json'
    write_json(out, summary)
    print(', '.join(f'{s} {v["ood_auroc"]:.3f}' for s, v in summary['scores'].items()) + f'; wrote {out}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
