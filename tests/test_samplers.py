"""Score samplers: reproducibility and the statistics stated in their docstrings."""

from __future__ import annotations

import numpy as np
import pytest

from deepssm_nb import ConfigError, DataError, NotFittedError
from deepssm_nb.samplers import (
    GaussianSampler,
    KDESampler,
    MixtureSampler,
    choose_mixture_components,
    get_sampler,
    kde_bandwidth,
    mahalanobis_nearest,
    sample_scores,
)


def _scores(n=20, cov=((4.0, 1.0, 0.0), (1.0, 2.0, 0.3), (0.0, 0.3, 0.5)), seed=0):
    rng = np.random.default_rng(seed)
    return rng.multivariate_normal(np.zeros(len(cov)), cov, size=n)


@pytest.mark.parametrize('method', ['gaussian', 'mixture', 'kde'])
def test_same_seed_same_samples(method):
    s = _scores()
    a = sample_scores(s, 50, method, mixture_num=2, random_state=7)
    b = sample_scores(s, 50, method, mixture_num=2, random_state=7)
    c = sample_scores(s, 50, method, mixture_num=2, random_state=8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.allclose(a[0], c[0])
    assert a[0].shape == (50, 3) and a[1].shape == (50,) and a[1].dtype == np.int64
    assert a[1].min() >= 0 and a[1].max() < len(s)


def test_gaussian_matches_the_mean_and_covariance():
    s = _scores()
    sampler = GaussianSampler().fit(s)
    z, base = sampler.sample(40000, random_state=0)
    np.testing.assert_allclose(z.mean(0), s.mean(0), atol=0.05)
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.cov(s, rowvar=False), atol=0.08)
    np.testing.assert_array_equal(base[:100], mahalanobis_nearest(z[:100], s))


def test_mahalanobis_nearest_uses_the_covariance():
    s = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0], [1.0, 1.0], [-1.0, -1.0]])
    q = np.array([[2.2, 0.6]])
    assert mahalanobis_nearest(q, s, np.eye(2))[0] == 1
    assert mahalanobis_nearest(q, s, np.diag([1.0, 100.0]))[0] == 3  # distances along y count 10 times more


def test_kde_bandwidth_formula_and_noise_statistics():
    s = _scores(n=15)
    prec = np.linalg.inv(np.cov(s, rowvar=False))
    d2 = np.array([[(a - b) @ prec @ (a - b) for b in s] for a in s])
    np.fill_diagonal(d2, np.inf)
    expected = d2.min(axis=1).mean() / s.shape[1]
    assert kde_bandwidth(s) == pytest.approx(expected, rel=1e-10)
    sampler = KDESampler().fit(s)
    assert sampler.bandwidth_ == pytest.approx(expected, rel=1e-10)
    z, base = sampler.sample(60000, random_state=1)
    noise = z - s[base]
    # the bandwidth is a variance: noise ~ N(0, h^2 S)
    np.testing.assert_allclose(noise.mean(0), 0, atol=0.02)
    np.testing.assert_allclose(np.cov(noise, rowvar=False), expected * np.cov(s, rowvar=False), atol=0.02)
    # bases are uniform over the real examples
    counts = np.bincount(base, minlength=len(s))
    assert counts.min() > 0.8 * len(z) / len(s) and counts.max() < 1.2 * len(z) / len(s)


def test_kde_bandwidth_skips_duplicates():
    s = _scores(n=10)
    dup = np.concatenate([s, s[:1]])
    prec = np.linalg.inv(np.cov(dup, rowvar=False))
    d2 = np.array([[(a - b) @ prec @ (a - b) for b in dup] for a in dup])
    d2[d2 < 1e-12] = np.inf  # self and the duplicate
    assert kde_bandwidth(dup) == pytest.approx(d2.min(axis=1).mean() / 3, rel=1e-10)


def test_mixture_component_count_is_halfway_between_bic_and_aic():
    from sklearn.mixture import GaussianMixture

    s = _scores(n=9)
    fits = [GaussianMixture(k, covariance_type='full', random_state=0).fit(s) for k in range(1, 9)]
    k_bic = 1 + int(np.argmin([g.bic(s) for g in fits]))
    k_aic = 1 + int(np.argmin([g.aic(s) for g in fits]))
    assert choose_mixture_components(s, random_state=0) == int(np.floor((k_bic + k_aic) / 2 + 0.5))
    assert choose_mixture_components(s[:2], random_state=0) == 1  # only 1..N-1 components are tried


def test_mixture_samples_follow_the_fitted_components():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(30, 2)) * 0.3 + [-5, 0]
    b = rng.normal(size=(10, 2)) * 0.3 + [5, 2]
    s = np.concatenate([a, b])
    sampler = MixtureSampler(2, random_state=0).fit(s)
    np.testing.assert_allclose(sorted(sampler.weights_), [0.25, 0.75], atol=1e-6)
    z, base = sampler.sample(20000, random_state=2)
    left = z[:, 0] < 0
    assert left.mean() == pytest.approx(0.75, abs=0.02)
    np.testing.assert_allclose(z[left].mean(0), a.mean(0), atol=0.05)
    np.testing.assert_allclose(np.cov(z[left], rowvar=False), np.cov(a, rowvar=False, ddof=0), atol=0.02)
    assert (base[left] < 30).mean() > 0.99  # bases come from the same cluster


@pytest.mark.bad_input
def test_bad_inputs():
    s = _scores()
    with pytest.raises(ConfigError, match="Did you mean 'kde'"):
        get_sampler('KDE2')
    with pytest.raises(DataError, match='N >= 2'):
        KDESampler().fit(s[:1])
    bad = s.copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataError, match='NaN'):
        GaussianSampler().fit(bad)
    with pytest.raises(NotFittedError, match='fit'):
        KDESampler().sample(3, random_state=0)
    with pytest.raises(DataError, match='identical'):
        kde_bandwidth(np.ones((5, 2)))
    with pytest.raises(ConfigError, match='n_components'):
        MixtureSampler(100).fit(s)
