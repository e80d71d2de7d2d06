"""Validation calibration of Base-DeepSSM's predicted PCA scores.

With a few dozen training subjects, a network can learn to recognise each training subject instead of reading the
shape from the image. On a new subject its scores then scatter more than the truth does, and the mean shape would
have been the better guess. Calibration measures this on the validation split (subjects the network never trained
on) and corrects it with one factor per PCA mode:

    alpha_k = clip(sum_i y_ik z_ik / sum_i z_ik^2, 0, 1)

where ``z_ik`` is the whitened score the network predicts for validation sample ``i`` and ``y_ik`` the true one. This
is the least-squares shrinkage of each predicted score towards the training mean (whitened score 0): 1 keeps mode k
as the network predicts it, 0 replaces it by the mean. With the orthonormal PCA decoder the particle error is a sum
over modes, so these factors also minimise the validation particle error among all per-mode shrinkages. A network
that reads the shape well gets factors near 1 and is left almost unchanged.

The factors are written to ``calibration.json`` next to the model, one entry per model file (checked against its size
and modification time), and applied when predicting (:func:`apply_calibration` scales the rows of the network's last
linear layer). The validation split also picks the best epoch, so the validation error after calibration is slightly
optimistic; the test subjects stay untouched.

Example:
    >>> alpha, report = fit_calibration(net, val_loader)                     # doctest: +SKIP
    >>> apply_calibration(net, alpha)                                        # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._validation import DataError, check_array
from .freshness import StageRecord
from .io import read_json, write_json

__all__ = [
    'CALIBRATION_FILE',
    'apply_calibration',
    'calibrate_model',
    'calibration_record',
    'fit_calibration',
    'load_calibration',
]

CALIBRATION_FILE = 'calibration.json'


def _head(net: torch.nn.Module) -> torch.nn.Linear:
    head = getattr(getattr(net, 'encoder', None), 'head', None)
    if not isinstance(head, torch.nn.Linear) or not hasattr(net, 'decoder'):
        raise TypeError(
            'calibration applies to a Base-DeepSSM network (DeepSSMNet: encoder.head -> PCA decoder); '
            f'got {type(net).__name__}.'
        )
    return head


@torch.no_grad()
def fit_calibration(
    net: torch.nn.Module, loader: Any, *, device: str | torch.device = 'cpu'
) -> tuple[np.ndarray, dict[str, float]]:
    """Fit one shrinkage factor per PCA mode on a (validation) loader.

    Args:
        net: A :class:`~deepssm_nb.models.DeepSSMNet`.
        loader: Yields dicts with ``'image'`` ``(B, 1, D, H, W)``, ``'scores'`` ``(B, L)`` (whitened, as the
            network predicts them) and ``'particles'`` ``(B, M, 3)`` mm.
        device: Where to run the network.

    Returns:
        ``(alpha, report)``: ``alpha`` (L,) in [0, 1]; ``report`` with ``val_rmse_mm_before``,
        ``val_rmse_mm_after`` (particle RMSE over the loader) and ``num_samples``.

    Raises:
        TypeError: ``net`` is not a Base-DeepSSM network.
        DataError: The loader is empty or its scores do not match the network's L.
    """
    _head(net)
    net = net.eval().to(device)
    pred, true, parts = [], [], []
    for batch in loader:
        z, _ = net(batch['image'].to(device))
        pred.append(z.float())
        true.append(batch['scores'].to(device).float())
        parts.append(batch['particles'].to(device).float())
    if not pred:
        raise DataError('calibration needs validation samples; the loader is empty.')
    z, y, p = torch.cat(pred), torch.cat(true), torch.cat(parts)
    if z.shape != y.shape:
        raise DataError(f"the loader's scores have shape {tuple(y.shape)}; the network predicts {tuple(z.shape)}.")
    denom = (z * z).sum(0)
    alpha = torch.where(denom > 0, (z * y).sum(0) / denom.clamp_min(1e-12), torch.zeros_like(denom)).clamp(0.0, 1.0)
    rmse = lambda q: float(((net.decoder(q) - p) ** 2).sum(-1).mean().sqrt())
    report = {'val_rmse_mm_before': rmse(z), 'val_rmse_mm_after': rmse(z * alpha), 'num_samples': len(z)}
    return alpha.cpu().numpy().astype(np.float64), report


@torch.no_grad()
def apply_calibration(net: torch.nn.Module, alpha: np.ndarray) -> torch.nn.Module:
    """Scale predicted score k by ``alpha[k]`` (folded into the last linear layer); return ``net``.

    Args:
        net: A :class:`~deepssm_nb.models.DeepSSMNet` (changed in place).
        alpha: (L,) factors, as :func:`fit_calibration` returns them.
    """
    head = _head(net)
    a = check_array(alpha, name='alpha', shape=(head.out_features,))
    if not np.all((a >= 0) & (a <= 1)):
        raise DataError(f'alpha must lie in [0, 1]; got values from {a.min():g} to {a.max():g}.')
    scale = torch.as_tensor(a, dtype=head.weight.dtype, device=head.weight.device)
    head.weight.mul_(scale[:, None])
    if head.bias is not None:
        head.bias.mul_(scale)
    return net


def _record(model_file: Path) -> StageRecord:
    """What a calibration was fitted for: the model file (by name, so the folder can move)."""
    return StageRecord.of({}, {'model': model_file}, relative=True)


def calibrate_model(
    net: torch.nn.Module, model_file: str | os.PathLike, loader: Any, *, device: str | torch.device = 'cpu'
) -> dict[str, Any]:
    """Fit the calibration of the model in ``model_file`` and write ``calibration.json`` beside it.

    ``net`` must hold the weights of ``model_file`` (uncalibrated). An up-to-date file is reused.

    Returns:
        The calibration record: ``model``, ``alpha`` (list of L), ``val_rmse_mm_before``, ``val_rmse_mm_after``,
        ``num_samples``.
    """
    model_file = Path(model_file)
    existing = _read(model_file)
    if existing is not None:
        return existing
    alpha, report = fit_calibration(net, loader, device=device)
    record = {'model': model_file.name, 'record': _record(model_file).to_dict(), 'alpha': alpha.tolist(), **report}
    records = _read_all(model_file.parent)
    records[model_file.name] = record
    write_json(model_file.parent / CALIBRATION_FILE, records)
    return record


def _read_all(model_dir: Path) -> dict[str, Any]:
    path = model_dir / CALIBRATION_FILE
    try:
        records = read_json(path) if path.is_file() else {}
    except DataError:
        return {}
    return records if isinstance(records, dict) else {}


def _read(model_file: Path) -> dict[str, Any] | None:
    if not model_file.is_file():
        return None
    record = _read_all(model_file.parent).get(model_file.name)
    if not isinstance(record, dict) or not _record(model_file).matches(StageRecord.from_dict(record.get('record'))):
        return None
    return record


def calibration_record(model_file: str | os.PathLike) -> dict[str, Any] | None:
    """The calibration record of ``model_file`` (see :func:`calibrate_model`), or None when it is missing or stale."""
    return _read(Path(model_file))


def load_calibration(model_file: str | os.PathLike) -> np.ndarray | None:
    """The factors fitted for ``model_file``, or None when there are none or they belong to another model file."""
    record = _read(Path(model_file))
    return None if record is None else np.asarray(record['alpha'], dtype=np.float64)
