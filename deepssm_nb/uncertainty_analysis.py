"""How well a stochastic DeepSSM knows its own error: uncertainty against error, and out-of-distribution images.

After :func:`~deepssm_nb.predict.test_deepssm` has written each test subject's ``.std`` file (a stochastic
encoder, ``encoder.deterministic: false``), :func:`analyze_uncertainty` compares the predicted uncertainty of every
particle with its actual error (the distance between the predicted and the true particle, in the image's own
frame):

* ``pearson_r_subject``: each femur's mean predicted uncertainty against its mean particle error. A useful
  uncertainty ranks the femurs as their errors do (r near 1);
* ``pearson_r_particle``: the same over every particle of every femur (where on a femur the error is);
* ``coverage_95``: the fraction of particle errors inside the predicted 95 % interval. A particle's total
  uncertainty ``s`` is the root of the trace of its covariance; taken as isotropic (``s² / 3`` per axis), the
  squared error over ``s² / 3`` follows a chi-square law with 3 degrees of freedom, so the 95 % interval is a
  ball of radius ``sqrt(7.815 / 3) s = 1.614 s``. Well calibrated: 0.95.

:func:`ood_check` makes every test image harder (:mod:`deepssm_nb.corruptions`: noise, blur, a shifted crop, an
intensity inversion, the femur removed) and measures how the mean uncertainty rises: ``ood_auroc`` is the chance
that a corrupted image is more uncertain than a clean one. It measures the same for the feature distance of
:mod:`deepssm_nb.novelty` (``ood_auroc_feature_distance``), and the fraction of each kind that the validation levels
of either score flag ``uncertain``.

Example:
    >>> ua = analyze_uncertainty(cfg)                                  # doctest: +SKIP
    >>> ua.summary()['pearson_r_subject']                              # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._validation import DataError, look_up_option

__all__ = ['COVERAGE_RADIUS', 'UNCERTAINTY_KINDS', 'UncertaintyAnalysis', 'analyze_uncertainty', 'ood_check']

UNCERTAINTY_KINDS = ('total_mm', 'aleatoric_mm', 'epistemic_mm')
COVERAGE_RADIUS = float(np.sqrt(7.814727903251178 / 3.0))  # 95 % ball of an isotropic 3-D Gaussian, in units of s
FEMUR_MARGIN_MM = 4.0  # the "no femur" corruption removes the voxels this close to the subject's true particles


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r; NaN for fewer than 3 points (e.g. the 2 test subjects of the smoke profile)."""
    from .viz.uncertainty import pearson_r

    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    return float(pearson_r(x, y)) if x.size >= 3 else float('nan')


@dataclass
class UncertaintyAnalysis:
    """Predicted uncertainty and actual error of every particle of every test subject.

    Attributes:
        ids: The test subjects, in order.
        std: ``{kind: (N, M)}`` predicted uncertainty in mm for each of :data:`UNCERTAINTY_KINDS`.
        error_mm: ``(N, M)`` distance of each predicted particle from the true one, mm (the image's own frame).
        particles: ``(N, M, 3)`` the predicted particles (own frame), where the heat maps put the uncertainty.
        threshold_mm: The validation threshold of the ``uncertain`` flag (None when not fitted).
        pred_dir: The predictions folder.
        flags: ``{id: uncertain}`` as prediction set them (``predictions.json``).
    """

    ids: list[str]
    std: dict[str, np.ndarray] = field(repr=False)
    error_mm: np.ndarray = field(repr=False)
    particles: np.ndarray = field(repr=False)
    threshold_mm: float | None
    pred_dir: Path
    flags: dict[str, bool] = field(default_factory=dict)

    def subject_std(self, kind: str = 'total_mm') -> np.ndarray:
        """``(N,)`` each subject's mean predicted uncertainty of ``kind`` (mm)."""
        return self.std[look_up_option(kind, UNCERTAINTY_KINDS, name='kind')].mean(axis=1)

    def subject_error(self) -> np.ndarray:
        """``(N,)`` each subject's mean particle error (mm)."""
        return self.error_mm.mean(axis=1)

    def uncertain(self) -> list[bool]:
        """Each subject's flag from prediction: its mean total uncertainty (world frame) above :attr:`threshold_mm`."""
        return [bool(self.flags.get(i, False)) for i in self.ids]

    def summary(self) -> dict[str, Any]:
        """The figures of the module docstring, for every kind, plus the means."""
        out: dict[str, Any] = {
            'n_subjects': len(self.ids),
            'mean_particle_error_mm': float(self.error_mm.mean()),
            'threshold_mm': self.threshold_mm,
            'uncertain': dict(zip(self.ids, self.uncertain())),
        }
        for kind in UNCERTAINTY_KINDS:
            name = kind.removesuffix('_mm')
            out[f'mean_{kind}'] = float(self.std[kind].mean())
            out[f'pearson_r_subject_{name}'] = _pearson(self.subject_std(kind), self.subject_error())
            out[f'pearson_r_particle_{name}'] = _pearson(self.std[kind], self.error_mm)
        out['pearson_r_subject'] = out['pearson_r_subject_total']
        out['pearson_r_particle'] = out['pearson_r_particle_total']
        out['coverage_95'] = float(np.mean(self.error_mm <= COVERAGE_RADIUS * self.std['total_mm']))
        return out

    def table(self):
        """Per subject: mean error, the three mean uncertainties and the flag (HTML in notebooks)."""
        from .analyze import _Table

        rows = [
            [sid, float(e), *(float(self.std[k][i].mean()) for k in UNCERTAINTY_KINDS), str(u)]
            for i, (sid, e, u) in enumerate(zip(self.ids, self.subject_error(), self.uncertain()))
        ]
        header = ['subject', 'error', 'total', 'aleatoric', 'epistemic', 'uncertain']
        return _Table(header, rows, caption='mean particle error and predicted uncertainty (mm)')

    def meshes(self, analysis: Any, subject_id: str, kind: str = 'total_mm'):
        """``(error mesh, uncertainty mesh)``: the predicted surface coloured by its error and by ``kind``.

        Args:
            analysis: The :class:`~deepssm_nb.analyze.AnalysisResult` of the same predictions (its heat maps).
            subject_id: One of :attr:`ids`.
            kind: One of :data:`UNCERTAINTY_KINDS`.
        """
        from .viz.uncertainty import surface_values

        if subject_id not in self.ids:
            raise KeyError(f'subject {subject_id!r} is not a test subject; ids: {self.ids}')
        i = self.ids.index(subject_id)
        kind = look_up_option(kind, UNCERTAINTY_KINDS, name='kind')
        _, predicted = analysis.meshes(subject_id)
        return predicted, surface_values(predicted, self.particles[i], self.std[kind][i])


def analyze_uncertainty(cfg: Any, *, pred_dir: str | os.PathLike | None = None) -> UncertaintyAnalysis:
    """Read the test predictions and their ``.std`` files, and the true particles, of a pipeline run.

    Args:
        cfg: The pipeline :class:`~deepssm_nb.config.Config` of a stochastic model.
        pred_dir: The predictions folder (default: ``cfg``'s).

    Raises:
        FileNotFoundError: No ``.std`` file (the model is deterministic, or prediction has not run).
    """
    from .groom import load_groomed
    from .io import read_json, read_particles
    from .predict import _apply, read_std

    paths = cfg.resolved_paths()
    pred_dir = Path(pred_dir) if pred_dir is not None else Path(paths['pred_dir'])
    subjects = [s for s in load_groomed(paths['groom_dir']).subjects if s.split == 'test']
    if not subjects:
        raise DataError(f'"{paths["groom_dir"]}" holds no test subjects.')
    std: dict[str, list[np.ndarray]] = {k: [] for k in UNCERTAINTY_KINDS}
    errors, predicted = [], []
    for s in subjects:
        true_world = read_particles(s.particles)
        m = true_world.shape[0]
        pred_local = read_particles(pred_dir / 'local_predictions' / f'{s.id}.particles', num_particles=m)
        true_local = _apply(np.linalg.inv(s.transform), true_world)
        values = read_std(pred_dir / 'local_predictions' / f'{s.id}.std', num_particles=m)
        for k in UNCERTAINTY_KINDS:
            std[k].append(values[k])
        errors.append(np.linalg.norm(pred_local - true_local, axis=1))
        predicted.append(pred_local)
    info_path = pred_dir / 'predictions.json'
    record = read_json(info_path).get('uncertainty', {}) if info_path.is_file() else {}
    threshold = record.get('threshold_mm')
    flags = {sid: bool(v.get('uncertain')) for sid, v in record.get('subjects', {}).items()}
    return UncertaintyAnalysis(
        ids=[s.id for s in subjects],
        std={k: np.stack(v) for k, v in std.items()},
        error_mm=np.stack(errors),
        particles=np.stack(predicted),
        threshold_mm=None if threshold is None else float(threshold),
        pred_dir=pred_dir,
        flags=flags,
    )


def ood_check(cfg: Any, net: Any = None, *, seed: int = 0, strength: float = 1.0) -> dict[str, Any]:
    """Predict every test image clean and corrupted, and compare their mean uncertainties and feature distances.

    Each test image (as the network reads it) is corrupted by every kind of
    :data:`~deepssm_nb.corruptions.CORRUPTIONS`; for ``no_femur`` the voxels within 4 mm of the subject's true
    particles are replaced by the tissue around them. Each image gets two scores: its mean total uncertainty, and
    its feature distance from the training images (:mod:`deepssm_nb.novelty`; fitted with the flag's levels by
    :func:`~deepssm_nb.predict.fit_uncertainty_threshold`, which runs here if prediction has not).

    Args:
        cfg: The pipeline config of a trained stochastic model.
        net: The network (default: the trained model of ``cfg``).
        seed: Seed of the corruptions.
        strength: Their strength (see :func:`~deepssm_nb.corruptions.corrupt`).

    Returns:
        ``{'ids', 'mean_total_mm' and 'feature_distance': {condition: [one per subject]}, 'ood_auroc' (the mean
        uncertainty, all corruptions pooled against the clean images), 'auroc': {kind: ...},
        'ood_auroc_feature_distance', 'auroc_feature_distance': {kind: ...}, 'threshold_mm',
        'feature_threshold', 'flagged': {condition: fraction flagged uncertain by either score}}``.
    """
    import torch
    from tqdm.auto import tqdm

    from .corruptions import CORRUPTIONS, corrupt_all, ood_auroc
    from .groom import load_groomed
    from .io import read_particles
    from .loaders import get_test_loader
    from .novelty import encoder_features
    from .predict import (
        _device,
        _features,
        _levels,
        _load_net,
        _normalization,
        fit_uncertainty_threshold,
        predict_uncertainty,
    )
    from .train import input_mask

    paths = cfg.resolved_paths()
    device = _device(cfg)
    net = _load_net(cfg, device=device) if net is None else net
    fit_uncertainty_threshold(cfg, net, verbose=False)  # the levels and the feature statistics (kept on disk)
    levels, features = _levels(cfg), _features(cfg)
    norm = _normalization(net, cfg)
    u = cfg.deepssm.uncertainty
    subjects = [s for s in load_groomed(paths['groom_dir']).subjects if s.split == 'test']
    loader = get_test_loader(
        paths['loader_dir'],
        [s.image for s in subjects],
        float(norm.get('down_factor', cfg.loader.down_factor)),
        normalization=norm,
    )
    conditions = ('clean', *CORRUPTIONS)
    values: dict[str, list[float]] = {c: [] for c in conditions}
    distances: dict[str, list[float]] = {c: [] for c in conditions}
    for k, (s, batch) in enumerate(tqdm(list(zip(subjects, loader)), desc='out-of-distribution', unit='image')):
        image = batch['image'][0]
        mask = input_mask(norm, read_particles(s.particles), FEMUR_MARGIN_MM)
        images = {'clean': image, **corrupt_all(image, seed=seed + k, strength=strength, femur_mask=mask)}
        stack = torch.stack([images[c] for c in conditions]).to(device)
        unc = predict_uncertainty(net, stack, passes=u.mc_passes, seed=u.mc_seed)
        dist = features.score(encoder_features(net, stack))
        for c, v, d in zip(conditions, unc.total_mm.double().mean(dim=1).cpu().tolist(), dist.tolist()):
            values[c].append(float(v))
            distances[c].append(float(d))

    def aurocs(scores: dict[str, list[float]]) -> tuple[float, dict[str, float]]:
        clean = np.asarray(scores['clean'])
        pooled = ood_auroc(clean, np.concatenate([scores[c] for c in CORRUPTIONS]))
        return pooled, {c: ood_auroc(clean, np.asarray(scores[c])) for c in CORRUPTIONS}

    threshold, feature_threshold = levels['threshold_mm'], levels['feature_threshold']
    flagged = {
        c: float(np.mean((np.asarray(values[c]) > threshold) | (np.asarray(distances[c]) > feature_threshold)))
        for c in conditions
    }
    (pooled, by_kind), (pooled_fd, by_kind_fd) = aurocs(values), aurocs(distances)
    return {
        'ids': [s.id for s in subjects],
        'mean_total_mm': values,
        'feature_distance': distances,
        'ood_auroc': pooled,
        'auroc': by_kind,
        'ood_auroc_feature_distance': pooled_fd,
        'auroc_feature_distance': by_kind_fd,
        'threshold_mm': threshold,
        'feature_threshold': feature_threshold,
        'flagged': flagged,
        'seed': seed,
        'strength': strength,
    }
