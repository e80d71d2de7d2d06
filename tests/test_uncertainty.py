"""The uncertainty arithmetic: the Gaussian likelihood, the burn-in blend and the propagation to particles."""

from __future__ import annotations

import math

import pytest
import torch

from deepssm_nb import ConfigError
from deepssm_nb.uncertainty import (
    combine_passes,
    gaussian_nll,
    nll_weight,
    particle_nll,
    particle_std_mm,
    propagate_linear,
    propagate_sampled,
)


def _decoder(m: int = 7, lat: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn((3 * m, lat), generator=g, dtype=torch.float64)
    bias = torch.randn(3 * m, generator=g, dtype=torch.float64)
    score_std = torch.rand(lat, generator=g, dtype=torch.float64) * 3 + 0.5
    return weight, bias, score_std


def test_linear_propagation_matches_monte_carlo():
    weight, bias, s = _decoder()
    var = torch.tensor([[0.5, 2.0, 0.1, 1.0], [1.5, 0.2, 0.7, 0.05]], dtype=torch.float64)
    exact = propagate_linear(var, weight, s)
    assert exact.shape == (2, 7, 3, 3)
    g = torch.Generator().manual_seed(1)
    for b in range(2):
        z = torch.randn((200_000, 4), generator=g, dtype=torch.float64) * var[b].sqrt()
        x = ((z * s) @ weight.T + bias).view(-1, 7, 3)
        d = x - x.mean(0)
        mc = torch.einsum('nmi,nmj->mij', d, d) / (len(x) - 1)
        scale = torch.diagonal(exact[b], dim1=-2, dim2=-1).sum(-1).max()
        assert torch.max(torch.abs(mc - exact[b])) < 0.02 * scale
    assert torch.allclose(particle_std_mm(exact) ** 2, torch.diagonal(exact, dim1=-2, dim2=-1).sum(-1))


def test_sampled_propagation_agrees_with_the_exact_one_for_a_linear_decoder():
    weight, bias, s = _decoder(seed=3)
    mean = torch.zeros((1, 4), dtype=torch.float64)
    log_var = torch.log(torch.tensor([[0.3, 1.2, 0.8, 0.1]], dtype=torch.float64))

    def decode(z):
        return ((z * s) @ weight.T + bias).view(z.shape[0], -1, 3)

    sampled = propagate_sampled(decode, mean, log_var, num_samples=100_000, generator=torch.Generator().manual_seed(0))
    exact = propagate_linear(log_var.exp(), weight, s)
    assert torch.allclose(particle_std_mm(sampled), particle_std_mm(exact), rtol=0.02)
    again = propagate_sampled(decode, mean, log_var, num_samples=100, generator=torch.Generator().manual_seed(5))
    same = propagate_sampled(decode, mean, log_var, num_samples=100, generator=torch.Generator().manual_seed(5))
    assert torch.equal(again, same)


def test_gaussian_nll_value_and_minimum():
    mean, target = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.0, 0.0]])
    log_var = torch.log(torch.tensor([[2.0, 4.0]]))
    expected = 0.5 * ((math.log(2.0) + 1 / 2.0) + (math.log(4.0) + 4 / 4.0)) / 2
    assert gaussian_nll(mean, log_var, target).item() == pytest.approx(expected, rel=1e-6)
    # for a fixed error the loss is smallest where the variance equals the squared error
    lv = torch.log(torch.tensor([[1.0, 4.0]])).requires_grad_(True)
    gaussian_nll(mean, lv, target).backward()
    assert torch.allclose(lv.grad, torch.zeros(1, 2), atol=1e-7)
    with pytest.raises(ValueError, match=r'one shape; got \(1, 2\), \(1, 3\) and \(1, 2\)'):
        gaussian_nll(mean, torch.zeros(1, 3), target)


def test_nll_weight_blends_after_the_burn_in():
    assert [nll_weight(e, burn_in=3, ramp=4) for e in range(1, 9)] == [0, 0, 0, 0.25, 0.5, 0.75, 1, 1]
    assert [nll_weight(e, burn_in=0, ramp=0) for e in (1, 2)] == [1.0, 1.0]
    with pytest.raises(ConfigError, match='burn_in'):
        nll_weight(1, burn_in=-1, ramp=2)
    with pytest.raises(ConfigError, match='epoch'):
        nll_weight(0, burn_in=1, ramp=2)


def test_combine_passes_splits_aleatoric_and_epistemic():
    g = torch.Generator().manual_seed(0)
    passes = torch.randn((50, 2, 5, 3), generator=g, dtype=torch.float64)
    cov = torch.eye(3, dtype=torch.float64).expand(50, 2, 5, 3, 3) * 0.25  # trace 0.75 per particle
    u = combine_passes(passes, cov)
    assert torch.allclose(u.particles, passes.mean(0))
    assert torch.allclose(u.aleatoric_mm, torch.full((2, 5), math.sqrt(0.75), dtype=torch.float64))
    spread = passes.var(dim=0, unbiased=True).sum(-1).sqrt()
    assert torch.allclose(u.epistemic_mm, spread)
    assert torch.allclose(u.total_mm**2, u.aleatoric_mm**2 + u.epistemic_mm**2)
    one = combine_passes(passes[:1])
    assert torch.all(one.epistemic_mm == 0) and torch.all(one.aleatoric_mm == 0)
    with pytest.raises(ValueError, match=r'aleatoric_cov must be \(50, 2, 5, 3, 3\); got \(50, 2, 5, 3\)'):
        combine_passes(passes, passes)


def test_particle_nll_uses_the_propagated_variance():
    g = torch.Generator().manual_seed(3)
    b, m, lat = 2, 5, 3
    jac = torch.randn((b, 3 * m, lat), generator=g)
    log_var = torch.randn((b, lat), generator=g) * 0.3
    pred = torch.randn((b, m, 3), generator=g)
    target = pred + torch.randn((b, m, 3), generator=g)
    var = (jac**2 * torch.exp(log_var)[:, None, :]).sum(-1)
    r2 = ((pred - target) ** 2).reshape(b, -1)
    expected = 0.5 * (torch.log(var) + r2 / var).mean()
    assert torch.allclose(particle_nll(pred, jac, log_var, target), expected, atol=1e-6)
    # the right variance beats a too small and a too large one
    r = torch.tensor([[[1.0, 1.0, 1.0]]])
    one = torch.ones((1, 3, 1))
    losses = [particle_nll(torch.zeros_like(r), one, torch.tensor([[math.log(v)]]), r) for v in (0.25, 1.0, 4.0)]
    assert losses[1] < losses[0] and losses[1] < losses[2]
    with pytest.raises(ValueError, match=r'particle_nll: expected pred and target \(B, M, 3\)'):
        particle_nll(pred, jac[:, :-1], log_var, target)
