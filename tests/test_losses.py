"""Losses and the particle RMSE."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepssm_nb import ConfigError
from deepssm_nb.losses import focal_loss, get_loss, mse_loss, particle_rmse, squared_distance_sum


def test_mse_is_the_mean_square():
    pred, target = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[0.0, 0.0], [3.0, 6.0]])
    assert float(mse_loss(pred, target)) == pytest.approx((1 + 4 + 0 + 4) / 4)


def test_focal_matches_its_formula():
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(4, 50, 3)) * 8, rng.normal(size=(4, 50, 3)) * 8
    a, c = 1.32, 10.0
    err = np.abs(pred - target)
    expected = np.mean(err**2 / (1 + np.exp(a * (c - err))))
    got = float(focal_loss(torch.tensor(pred), torch.tensor(target), a=a, c=c))
    assert got == pytest.approx(expected, rel=1e-10)


def test_focal_with_a_zero_is_half_the_mse():
    pred, target = torch.randn(3, 20, 3) * 5, torch.randn(3, 20, 3)
    assert float(focal_loss(pred, target, a=0.0, c=10.0)) == pytest.approx(float(mse_loss(pred, target)) / 2, rel=1e-6)


def test_focal_counts_large_errors_fully_and_damps_small_ones():
    target = torch.zeros(1000)
    big = torch.full((1000,), 40.0)  # l >> c: the gate is ~1
    assert float(focal_loss(big, target, a=1.32, c=10.0)) == pytest.approx(40.0**2, rel=1e-6)
    small = torch.full((1000,), 1.0)  # l << c: the gate is ~exp(-a (c - l))
    assert float(focal_loss(small, target, a=1.32, c=10.0)) < 1e-4 * float(mse_loss(small, target))


def test_focal_does_not_overflow():
    loss = focal_loss(torch.tensor([0.0, 1e4]), torch.zeros(2), a=50.0, c=1e3)
    assert torch.isfinite(loss) and float(loss) == pytest.approx(1e8 / 2, rel=1e-6)


def test_particle_rmse_is_the_euclidean_distance():
    pred = torch.zeros(2, 2, 3)
    target = torch.tensor([[[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]], [[1.0, 2.0, 2.0], [0.0, 0.0, 0.0]]])
    # distances 5, 0, 3, 0 -> sqrt((25 + 9) / 4)
    assert float(particle_rmse(pred, target)) == pytest.approx(np.sqrt(34 / 4))
    assert squared_distance_sum(pred, target) == (pytest.approx(34.0), 4)
    x, y = torch.randn(4, 30, 3), torch.randn(4, 30, 3)
    assert float(particle_rmse(x, y)) == pytest.approx(float(torch.sqrt(3 * mse_loss(x, y))), rel=1e-5)


def test_get_loss():
    assert get_loss('MSE') is mse_loss
    fl = get_loss('Focal', a=0.0, c=3.0)
    x, y = torch.randn(10), torch.randn(10)
    assert float(fl(x, y)) == pytest.approx(float(mse_loss(x, y)) / 2, rel=1e-6)


@pytest.mark.bad_input
def test_bad_loss_arguments():
    with pytest.raises(ConfigError, match="Did you mean 'Focal'"):
        get_loss('focal')
    with pytest.raises(ConfigError, match='a must be'):
        focal_loss(torch.zeros(2), torch.zeros(2), a=-1.0)
    with pytest.raises(ValueError, match=r'same shape; got \(2, 3\) and \(3, 2\)'):
        mse_loss(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r'\(\.\.\., M, 3\)'):
        particle_rmse(torch.zeros(2, 4), torch.zeros(2, 4))
