"""The error-ranking benchmark's correlations (the figures that decide whether a score follows the error)."""

from __future__ import annotations

import numpy as np
import pytest
from bench_modules import load_bench


@pytest.fixture(scope='module')
def bench():
    return load_bench('error_ranking')


def test_pearson_and_spearman_against_numpy(bench):
    rng = np.random.default_rng(3)
    error = rng.gamma(2.0, 1.0, 40)
    score = error**3 + rng.normal(0, 0.5, 40)
    r = bench.correlations(error, score)
    assert r['pearson_r'] == pytest.approx(np.corrcoef(error, score)[0, 1], abs=1e-12)
    ranks = lambda x: np.argsort(np.argsort(x))
    assert r['spearman_r'] == pytest.approx(np.corrcoef(ranks(error), ranks(score))[0, 1], abs=1e-12)
    assert r['spearman_r'] > r['pearson_r']  # monotone but not linear


def test_a_monotone_score_ranks_perfectly_and_a_reversed_one_negatively(bench):
    error = np.array([0.5, 1.0, 2.0, 4.0, 8.0])
    assert bench.correlations(error, np.log(error))['spearman_r'] == pytest.approx(1.0)
    assert bench.correlations(error, -error)['pearson_r'] == pytest.approx(-1.0)


@pytest.mark.parametrize(
    'error, score',
    [([1.0, 2.0, 3.0], [3.3, 3.3, 3.3]), ([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]), ([1.0, 2.0], [1.0, 2.0])],
    ids=['constant score', 'constant error', 'two images'],
)
def test_undefined_correlations_are_none_not_nan(bench, error, score):
    assert bench.correlations(error, score) == {'pearson_r': None, 'spearman_r': None}
