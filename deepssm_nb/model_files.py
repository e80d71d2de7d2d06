"""Saved networks: the model files a training run writes, how to load them, and how to inspect a network.

A model file (``best_model.torch``, ``final_model_ft.torch``, ...) is a dict that ``torch.load(..., weights_only=True)``
reads: the weights, the network's kind and constructor arguments, the whitening of the loaders it was trained with,
and the training stage, epoch and validation RMSE at which it was saved.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .io import atomic_path, plain
from .models import TLDeepSSMNet, build_model

__all__ = ['load_model_file', 'load_trained_model', 'model_file', 'parameter_changes', 'save_model_file', 'summary']


def model_file(
    model_dir: str | os.PathLike, *, use_best: bool = True, fine_tuned: bool | None = None, uncertain: bool = False
) -> Path:
    """Path of a saved model in ``model_dir``.

    Args:
        model_dir: The training output folder.
        use_best: ``best_model*`` (lowest validation error) or ``final_model*``.
        fine_tuned: Use the fine-tuned file (``*_ft.torch``); ``None`` means
            when it exists.
        uncertain: The stochastic encoder's model, ``final_model_unc.torch`` (the uncertainty stage always
            delivers its last epoch; ``use_best`` and ``fine_tuned`` are then ignored).

    Raises:
        FileNotFoundError: The file does not exist (the message lists what does).
    """
    model_dir = Path(model_dir)
    stem = 'best_model' if use_best else 'final_model'
    if uncertain:
        path = model_dir / 'final_model_unc.torch'
    else:
        if fine_tuned is None:
            fine_tuned = (model_dir / f'{stem}_ft.torch').is_file()
        path = model_dir / f'{stem}{"_ft" if fine_tuned else ""}.torch'
    if not path.is_file():
        found = sorted(p.name for p in model_dir.glob('*.torch')) if model_dir.is_dir() else []
        raise FileNotFoundError(
            f'Model file not found: "{path}". Found: {found or "nothing"}; run train_deepssm(cfg) first.'
        )
    return path


def save_model_file(
    path: Path, net: nn.Module, *, stage: str, epoch: int, val_rmse_mm: float, normalization: dict | None
) -> Path:
    """Write a model file (a dict loadable with ``torch.load(..., weights_only=True)``), atomically."""
    payload = {
        'state_dict': {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
        'kind': net.kind,
        'model_kwargs': plain(net.model_kwargs),
        'normalization': plain(normalization),
        'stage': stage,
        'epoch': int(epoch),
        'val_rmse_mm': float(val_rmse_mm),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_trained_model(
    model_dir: str | os.PathLike,
    *,
    use_best: bool = True,
    fine_tuned: bool | None = None,
    calibrated: bool = False,
    uncertain: bool = False,
    device: str | torch.device = 'cpu',
) -> nn.Module:
    """Load a trained network in eval mode.

    The returned module carries ``net.normalization`` (image and score
    whitening from the loaders) and ``net.model_info`` (``kind``, ``epoch``,
    ``val_rmse_mm``, ``stage``, ``path``, ``calibration``).

    Args:
        model_dir: The training output folder (``cfg.resolved_paths()['model_dir']``).
        use_best: Load ``best_model*.torch`` rather than ``final_model*.torch``.
        fine_tuned: See :func:`model_file`.
        calibrated: Apply the validation calibration fitted for this file
            (:mod:`deepssm_nb.calibration`), when there is one;
            ``model_info['calibration']`` holds the factors applied, or None.
        uncertain: Load the stochastic encoder's model (see :func:`model_file`).
        device: Where to put the network.
    """
    path = model_file(model_dir, use_best=use_best, fine_tuned=fine_tuned, uncertain=uncertain)
    return load_model_file(path, calibrated=calibrated, device=device)


def load_model_file(
    path: str | os.PathLike, *, calibrated: bool = False, device: str | torch.device = 'cpu'
) -> nn.Module:
    """Load the network saved in ``path`` in eval mode (see :func:`load_trained_model`)."""
    path = Path(path)
    payload = torch.load(path, map_location='cpu', weights_only=True)
    net = build_model(payload['kind'], **payload['model_kwargs'])
    net.load_state_dict(payload['state_dict'])
    net.normalization = payload.get('normalization')
    net.model_info = {k: payload.get(k) for k in ('kind', 'epoch', 'val_rmse_mm', 'stage')} | {'path': str(path)}
    net.model_info['calibration'] = None
    if calibrated and payload['kind'] == 'base':
        from .calibration import apply_calibration, load_calibration

        alpha = load_calibration(path)
        if alpha is not None:
            apply_calibration(net, alpha)
            net.model_info['calibration'] = alpha.tolist()
    return net.to(device).eval()


def summary(net: nn.Module) -> str:
    """A table of the network's layers: output shape (batch 1), parameters, and whether they train.

    Example:
        >>> from deepssm_nb.models import DeepSSMNet
        >>> print(summary(DeepSSMNet((1, 64, 64, 64), 8, 512)))   # doctest: +SKIP
    """
    rows: list[tuple[str, str, int, str]] = []
    hooks = []
    for name, m in net.named_modules():
        if isinstance(m, (nn.Conv3d, nn.MaxPool3d, nn.Linear)):

            def hook(mod, inp, out, name=name):
                if any(r[0] == name for r in rows):
                    return
                n = sum(p.numel() for p in mod.parameters())
                train = 'yes' if any(p.requires_grad for p in mod.parameters()) else ('-' if n == 0 else 'frozen')
                rows.append((name, str(tuple(out.shape)), n, train))

            hooks.append(m.register_forward_hook(hook))
    kw = net.model_kwargs
    was_training = net.training
    device = next(net.parameters()).device
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, *kw['in_shape'], device=device))
            if isinstance(net, TLDeepSSMNet):
                net.autoencode(torch.zeros(1, kw['num_correspondences'], 3, device=device))
    finally:
        for h in hooks:
            h.remove()
        net.train(was_training)
    order = {name: i for i, (name, _) in enumerate(net.named_modules())}
    rows.sort(key=lambda r: order[r[0]])
    total = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    width = max(len(r[0]) for r in rows) + 2
    lines = [
        (
            f'{type(net).__name__}: input {tuple(kw["in_shape"])}, {kw["num_latent"]} latent, '
            f'{kw["num_correspondences"]} particles'
        ),
        f'{"layer":<{width}}{"output shape":<26}{"parameters":>12}  trains',
    ]
    lines += [f'{n:<{width}}{shape:<26}{p:>12,}  {t}' for n, shape, p, t in rows]
    lines.append(f'{"total, with batch norm and PReLU":<{width + 26}}{total:>12,}  {trainable:,} trainable')
    return '\n'.join(lines)


def _float_state(obj: nn.Module | dict | str | os.PathLike) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        state = obj.state_dict()
    elif isinstance(obj, dict):
        state = obj.get('state_dict', obj)
    else:
        state = torch.load(obj, map_location='cpu', weights_only=True)['state_dict']
    buffers = {
        'running_mean',
        'running_var',
        'num_batches_tracked',
        'score_mean',
        'score_std',
        'particle_mean',
        'particle_scale',
        'initialized',
    }
    return {
        k: v.detach().cpu().double()
        for k, v in state.items()
        if v.is_floating_point() and k.rsplit('.', 1)[-1] not in buffers
    }


def parameter_changes(
    before: nn.Module | dict | str | os.PathLike, after: nn.Module | dict | str | os.PathLike
) -> dict[str, float]:
    """Relative change ``||after - before|| / ||before||`` of the learned weights of each top-level part.

    Args:
        before, after: Networks, state dicts or model files (``*.torch``) of the same architecture.

    Returns:
        ``{part: relative change}``, e.g. ``{'encoder': 0.31, 'decoder': 0.0}``
        (buffers such as batch-norm statistics and the PCA whitening are left out).
    """
    a, b = _float_state(before), _float_state(after)
    if a.keys() != b.keys():
        raise ValueError(f'before and after are different networks: {sorted(a.keys() ^ b.keys())[:5]} ...')
    parts: dict[str, list[float]] = {}
    for k in a:
        acc = parts.setdefault(k.split('.')[0], [0.0, 0.0])
        acc[0] += float(torch.sum((b[k] - a[k]) ** 2))
        acc[1] += float(torch.sum(a[k] ** 2))
    return {p: float(np.sqrt(d / max(n, 1e-300))) for p, (d, n) in parts.items()}
