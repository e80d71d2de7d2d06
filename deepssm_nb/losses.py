"""Training losses and the particle error metric.

* :func:`mse_loss`: mean over every coordinate of ``(pred - target)**2``.
* :func:`focal_loss`: each squared error gated by a sigmoid of its size,
  ``l**2 / (1 + exp(a * (c - l)))`` with ``l = |pred - target|``, averaged.
  Errors far above ``c`` count as plain ``l**2``, errors far below are damped.
  With ``a = 0`` the gate is 1/2 everywhere, so the loss is **MSE / 2**.
* :func:`particle_rmse`: the error reported in logs, in mm: the root of the
  mean *squared Euclidean distance* per particle,
  ``sqrt(mean_{b, m} ||pred[b, m] - target[b, m]||**2)``. It equals
  ``sqrt(3 * mse_loss)`` on particles.

Example:
    >>> pred, target = torch.zeros(2, 4, 3), torch.ones(2, 4, 3)
    >>> float(mse_loss(pred, target)), round(float(particle_rmse(pred, target)) ** 2, 4)
    (1.0, 3.0)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._validation import check_in_range, look_up_option

__all__ = ['LOSSES', 'focal_loss', 'get_loss', 'mse_loss', 'particle_rmse', 'squared_distance_sum']

LOSSES = ('MSE', 'Focal')


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements (any matching shapes)."""
    _check_same_shape(pred, target)
    return torch.mean((pred - target) ** 2)


def focal_loss(pred: torch.Tensor, target: torch.Tensor, a: float = 1.32, c: float = 10.0) -> torch.Tensor:
    """Focal regression loss: ``mean(l**2 * sigmoid(a * (l - c)))``, ``l = |pred - target|``.

    Args:
        pred: Any shape, e.g. particles ``(B, M, 3)`` in mm.
        target: Same shape as ``pred``.
        a: Steepness of the gate (``a = 0`` gives MSE / 2).
        c: Error size (same units as ``pred``) where the gate is 1/2.

    Returns:
        Scalar tensor.
    """
    _check_same_shape(pred, target)
    check_in_range(a, name='a', low=0.0)
    check_in_range(c, name='c', low=0.0)
    err = torch.abs(pred - target)
    # l**2 / (1 + exp(a (c - l))) written with a sigmoid, which does not overflow for large a (c - l).
    return torch.mean(err**2 * torch.sigmoid(a * (err - c)))


def get_loss(name: str, *, a: float = 1.32, c: float = 10.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss called ``name`` (``'MSE'`` or ``'Focal'``); ``a`` and ``c`` are used by Focal only."""
    name = look_up_option(name, LOSSES, name='loss')
    if name == 'MSE':
        return mse_loss
    check_in_range(a, name='focal a', low=0.0)
    check_in_range(c, name='focal c', low=0.0)

    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(pred, target, a=a, c=c)

    loss.__name__ = f'focal_loss(a={a}, c={c})'
    return loss


def squared_distance_sum(pred: torch.Tensor, target: torch.Tensor) -> tuple[float, int]:
    """Sum of squared Euclidean distances between particles, and the number of particles.

    Args:
        pred: ``(B, M, 3)`` particles.
        target: ``(B, M, 3)`` particles.

    Returns:
        ``(sum_{b, m} ||pred - target||**2, B * M)``, for accumulating
        :func:`particle_rmse` over batches.
    """
    _check_same_shape(pred, target)
    d = (pred.detach().double() - target.detach().double()) ** 2
    return float(d.sum()), int(d.numel() // pred.shape[-1])


def particle_rmse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Root mean squared per-particle Euclidean distance, ``(B, M, 3)`` inputs -> scalar (mm)."""
    _check_same_shape(pred, target)
    if pred.shape[-1] != 3:
        raise ValueError(f'particles must have shape (..., M, 3); got {tuple(pred.shape)}.')
    return torch.sqrt(torch.mean(torch.sum((pred - target) ** 2, dim=-1)))


def _check_same_shape(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f'pred and target must have the same shape; got {tuple(pred.shape)} and {tuple(target.shape)}.'
        )
