"""Uncertainty of a predicted shape: the Gaussian likelihood of the scores and its path to each particle, in mm.

Uncertain-DeepSSM (Adams, Bhalodia and Elhabian 2020) predicts, for every latent score, a mean and a log-variance.
The variance is the **aleatoric** part: what the image itself leaves open (noise, blur, a femur partly outside the
field of view). Monte Carlo dropout at prediction time gives the **epistemic** part: how much the prediction moves
with the network's own weights, large on images unlike the training ones. This module holds the arithmetic both
need, independent of any network:

* :func:`gaussian_nll`: the loss ``0.5 * (log σ² + (μ - y)² / σ²)``, averaged;
* :func:`particle_nll`: the same likelihood for true particles, through the decoder's Jacobian (a free latent);
* :func:`nll_weight`: the blend from the MSE burn-in into that loss over the training epochs;
* :func:`propagate_linear`: the exact covariance of each particle when the decoder is linear (the PCA decoder):
  ``Cov(x_m) = W_m diag(s² σ²) W_mᵀ``, with ``W_m`` the decoder rows of particle ``m`` and ``s`` the score scale;
* :func:`propagate_sampled`: the same by sampling, for any decoder (the non-linear one);
* :func:`combine_passes`: Monte Carlo passes into aleatoric, epistemic and total uncertainty, by the law of total
  covariance (total = mean of the passes' covariances + covariance of the passes' means).

A particle's uncertainty in mm is ``sqrt(trace(Cov(x_m)))``: the root mean squared distance of the particle from its
predicted position, if the prediction's distribution is right (:func:`particle_std_mm`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._validation import check_in_range

__all__ = [
    'ParticleUncertainty',
    'combine_passes',
    'gaussian_nll',
    'nll_weight',
    'particle_nll',
    'particle_std_mm',
    'propagate_linear',
    'propagate_sampled',
]

LOG_VAR_RANGE = (-12.0, 8.0)  # clamp of predicted log-variances: σ from 0.0025 to 55 whitened units


def gaussian_nll(mean: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean Gaussian negative log-likelihood, without its constant: ``0.5 * (log σ² + (μ - y)² / σ²)``.

    Args:
        mean: ``(B, L)`` predicted means.
        log_var: ``(B, L)`` predicted log-variances (clamped to :data:`LOG_VAR_RANGE`, so that one bad
            prediction cannot make the loss infinite).
        target: ``(B, L)`` true values.

    Returns:
        A scalar tensor.

    Raises:
        ValueError: Shapes that differ.
    """
    if mean.shape != log_var.shape or mean.shape != target.shape:
        raise ValueError(
            f'gaussian_nll: mean, log_var and target must have one shape; got {tuple(mean.shape)}, '
            f'{tuple(log_var.shape)} and {tuple(target.shape)}.'
        )
    log_var = log_var.clamp(*LOG_VAR_RANGE)
    return 0.5 * (log_var + (mean - target) ** 2 * torch.exp(-log_var)).mean()


def particle_nll(
    pred: torch.Tensor, jacobian: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """Gaussian negative log-likelihood of true particles, each coordinate with its propagated variance.

    The variance of coordinate ``c`` is ``sum_l J[c, l]² σ²_l`` (the diagonal of ``J diag(σ²) Jᵀ``; the
    correlations between coordinates are left out), floored at 1e-6 mm².

    Args:
        pred: ``(B, M, 3)`` predicted particles (the decoded means), mm.
        jacobian: ``(B, 3 M, L)`` the decoder's Jacobian at the means (held constant).
        log_var: ``(B, L)`` predicted log-variances of the latent scores.
        target: ``(B, M, 3)`` true particles, mm.

    Returns:
        A scalar tensor: ``0.5 * (log v + r² / v)`` averaged over every coordinate.
    """
    b, m = pred.shape[:2]
    if target.shape != pred.shape or jacobian.shape[:2] != (b, 3 * m) or log_var.shape != (b, jacobian.shape[2]):
        raise ValueError(
            f'particle_nll: expected pred and target (B, M, 3), jacobian (B, 3 M, L) and log_var (B, L); got '
            f'{tuple(pred.shape)}, {tuple(target.shape)}, {tuple(jacobian.shape)} and {tuple(log_var.shape)}.'
        )
    var = torch.einsum('bcl,bl->bc', jacobian.float() ** 2, torch.exp(log_var.float().clamp(*LOG_VAR_RANGE)))
    var = var.clamp_min(1e-6)
    r2 = ((pred.float() - target.float()) ** 2).reshape(b, -1)
    return 0.5 * (torch.log(var) + r2 / var).mean()


def nll_weight(epoch: int, burn_in: int, ramp: int) -> float:
    """Weight of the likelihood term at ``epoch`` (1-based); the MSE term gets ``1 -`` this weight.

    0 for the first ``burn_in`` epochs (the means learn first, as plain regression), then rising linearly to 1 over
    ``ramp`` epochs (0: at once), then 1.

    Example:
        >>> [nll_weight(e, burn_in=2, ramp=2) for e in range(1, 6)]
        [0.0, 0.0, 0.5, 1.0, 1.0]
    """
    epoch = int(check_in_range(epoch, name='epoch', low=1, integer=True))
    burn_in = int(check_in_range(burn_in, name='burn_in', low=0, integer=True))
    ramp = int(check_in_range(ramp, name='ramp', low=0, integer=True))
    past = epoch - burn_in
    if past <= 0:
        return 0.0
    return 1.0 if ramp == 0 else min(1.0, past / ramp)


def propagate_linear(
    score_var: torch.Tensor, weight: torch.Tensor, score_std: torch.Tensor | None = None
) -> torch.Tensor:
    """Exact per-particle covariance of a linear decoder ``x = W (z * s + μ) + b`` with independent scores.

    Args:
        score_var: ``(B, L)`` variances of the (whitened) scores ``z``.
        weight: ``(3 M, L)`` the decoder matrix ``W`` (rows in the order x0, y0, z0, x1, ...).
        score_std: ``(L,)`` the scale ``s`` of the whitening; None means 1.

    Returns:
        ``(B, M, 3, 3)`` covariances in mm².

    Raises:
        ValueError: Sizes that do not fit together.
    """
    if score_var.ndim != 2 or weight.ndim != 2 or weight.shape[1] != score_var.shape[1] or weight.shape[0] % 3:
        raise ValueError(
            f'propagate_linear: expected score_var (B, L) and weight (3 M, L); got {tuple(score_var.shape)} and '
            f'{tuple(weight.shape)}.'
        )
    var = score_var.double()
    if score_std is not None:
        if score_std.shape != (weight.shape[1],):
            raise ValueError(f'propagate_linear: score_std must be ({weight.shape[1]},); got {tuple(score_std.shape)}.')
        var = var * score_std.double() ** 2
    w = weight.double().view(-1, 3, weight.shape[1])  # (M, 3, L)
    cov = torch.einsum('mil,bl,mjl->bmij', w, var, w)
    return cov.to(score_var.dtype)


def propagate_sampled(
    decode: Callable[[torch.Tensor], torch.Tensor],
    mean: torch.Tensor,
    log_var: torch.Tensor,
    *,
    num_samples: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Per-particle covariance of any decoder, from ``num_samples`` latent draws ``z ~ N(mean, exp(log_var))``.

    Args:
        decode: Latent ``(N, L)`` -> particles ``(N, M, 3)``.
        mean, log_var: ``(B, L)``.
        num_samples: Draws per subject (at least 2).
        generator: The random stream (seeded by the caller).

    Returns:
        ``(B, M, 3, 3)`` covariances in mm² (the unbiased sample covariance).
    """
    n = int(check_in_range(num_samples, name='num_samples', low=2, integer=True))
    std = torch.exp(0.5 * log_var.clamp(*LOG_VAR_RANGE))
    out = []
    for mu, sd in zip(mean, std):
        eps = torch.randn((n, mu.shape[0]), generator=generator, dtype=mu.dtype, device=mu.device)
        x = decode(mu + eps * sd).double()  # (n, M, 3)
        d = x - x.mean(dim=0)
        out.append(torch.einsum('nmi,nmj->mij', d, d) / (n - 1))
    return torch.stack(out).to(mean.dtype)


def particle_std_mm(cov: torch.Tensor) -> torch.Tensor:
    """``(..., M, 3, 3)`` covariances -> ``(..., M)`` uncertainty in mm: ``sqrt(trace)``."""
    return torch.sqrt(torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1).clamp_min(0.0))


@dataclass
class ParticleUncertainty:
    """Predicted particles and their uncertainty, split by source.

    Attributes:
        particles: ``(B, M, 3)`` the mean prediction over the passes, mm.
        aleatoric_mm: ``(B, M)`` from the predicted score variances (mean over passes).
        epistemic_mm: ``(B, M)`` from the spread of the passes (MC dropout).
        total_mm: ``(B, M)``; ``total² = aleatoric² + epistemic²``.
    """

    particles: torch.Tensor
    aleatoric_mm: torch.Tensor
    epistemic_mm: torch.Tensor
    total_mm: torch.Tensor


def combine_passes(particles: torch.Tensor, aleatoric_cov: torch.Tensor | None = None) -> ParticleUncertainty:
    """Monte Carlo passes -> :class:`ParticleUncertainty`, by the law of total covariance.

    Args:
        particles: ``(T, B, M, 3)`` the mean prediction of each of T passes.
        aleatoric_cov: ``(T, B, M, 3, 3)`` each pass's predicted covariance, or None (a deterministic encoder:
            no aleatoric part).

    Returns:
        The mean particles and the three uncertainties. With T = 1 the epistemic part is 0.

    Raises:
        ValueError: Shapes that do not fit together.
    """
    if particles.ndim != 4 or particles.shape[-1] != 3:
        raise ValueError(f'combine_passes: particles must be (T, B, M, 3); got {tuple(particles.shape)}.')
    if aleatoric_cov is not None and aleatoric_cov.shape != (*particles.shape, 3):
        raise ValueError(
            f'combine_passes: aleatoric_cov must be {(*particles.shape, 3)}; got {tuple(aleatoric_cov.shape)}.'
        )
    t = particles.shape[0]
    x = particles.double()
    mean = x.mean(dim=0)
    if t > 1:
        d = x - mean
        epistemic_var = (d**2).sum(-1).sum(0) / (t - 1)  # trace of the covariance of the pass means
    else:
        epistemic_var = torch.zeros(mean.shape[:-1], dtype=x.dtype, device=x.device)
    if aleatoric_cov is None:
        aleatoric_var = torch.zeros_like(epistemic_var)
    else:
        aleatoric_var = torch.diagonal(aleatoric_cov.double(), dim1=-2, dim2=-1).sum(-1).mean(0)
    dtype = particles.dtype
    return ParticleUncertainty(
        particles=mean.to(dtype),
        aleatoric_mm=aleatoric_var.clamp_min(0).sqrt().to(dtype),
        epistemic_mm=epistemic_var.sqrt().to(dtype),
        total_mm=(aleatoric_var.clamp_min(0) + epistemic_var).sqrt().to(dtype),
    )
