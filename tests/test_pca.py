"""ShapePCA: fit, mode selection, reconstruction and the ShapeWorks file layout."""

from __future__ import annotations

import numpy as np
import pytest

from deepssm_nb import ConfigError, DataError, NotFittedError
from deepssm_nb.pca import ShapePCA


def _shapes(n=8, m=30, modes=(6.0, 3.0, 1.0), noise=0.0, seed=0):
    """n shapes of m particles with a known number of strong modes."""
    rng = np.random.default_rng(seed)
    mean = rng.normal(scale=20, size=(m, 3))
    basis = np.linalg.qr(rng.normal(size=(3 * m, len(modes))))[0].T  # orthonormal (k, 3m)
    scores = rng.normal(size=(n, len(modes))) * modes
    x = mean.ravel() + scores @ basis + rng.normal(scale=noise, size=(n, 3 * m))
    return x.reshape(n, m, 3)


def test_all_modes_reconstruct_training_shapes_exactly():
    x = _shapes(noise=0.5)
    pca = ShapePCA(percent_variability=1.0).fit(x)
    assert pca.n_components_ == len(x) - 1
    np.testing.assert_allclose(pca.inverse_transform(pca.transform(x)), x, atol=1e-9)
    np.testing.assert_allclose(pca.transform(x), pca.scores_, atol=1e-9)
    flat = pca.components_.reshape(pca.n_components_, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(pca.n_components_), atol=1e-12)
    np.testing.assert_allclose(pca.mean_, x.mean(0), atol=1e-12)
    # eigenvalues are the variances of the scores
    np.testing.assert_allclose(pca.explained_variance_, pca.scores_.var(axis=0, ddof=1), rtol=1e-9)


def test_percent_variability_picks_the_smallest_sufficient_count():
    x = _shapes(n=12, modes=(10.0, 5.0, 2.0, 0.5), noise=0.01)
    ratio = ShapePCA(percent_variability=1.0).fit(x).eigenvalues_
    cum = np.cumsum(ratio) / ratio.sum()
    for p in (0.5, 0.8, 0.9, 0.97, 0.999):
        pca = ShapePCA(percent_variability=p).fit(x)
        expected = int(np.argmax(cum >= p)) + 1
        assert pca.n_components_ == expected
        assert pca.explained_variance_ratio_.sum() >= p - 1e-12
        if expected > 1:
            assert pca.explained_variance_ratio_[:-1].sum() < p
    assert ShapePCA(2).fit(x).n_components_ == 2


def test_single_vector_and_batch_agree():
    x = _shapes()
    pca = ShapePCA(3).fit(x)
    np.testing.assert_allclose(pca.transform(x[2]), pca.transform(x)[2])
    np.testing.assert_allclose(pca.inverse_transform(pca.scores_[2]), pca.inverse_transform(pca.scores_)[2])


def test_modes_have_a_deterministic_sign():
    x = _shapes(noise=0.2)
    a = ShapePCA(3).fit(x).components_
    b = ShapePCA(3).fit(x[::-1].copy()).components_
    np.testing.assert_allclose(a, b, atol=1e-8)


def test_save_and_load_round_trip_in_shapeworks_layout(tmp_path):
    x = _shapes(noise=0.3)
    pca = ShapePCA(percent_variability=0.9).fit(x)
    pca.save(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(
        ['eigenvalues.txt', 'mean.particles', 'original_PCA_scores.particles']
        + [f'pcamode{i}.particles' for i in range(len(x) - 1)]
    )
    assert np.loadtxt(tmp_path / 'mean.particles').shape == (x.shape[1], 3)
    assert np.loadtxt(tmp_path / 'original_PCA_scores.particles').shape == (len(x), pca.n_components_)
    loaded = ShapePCA.load(tmp_path)
    assert loaded.n_components_ == pca.n_components_
    for attr in ('mean_', 'components_', 'explained_variance_', 'explained_variance_ratio_', 'scores_', 'eigenvalues_'):
        np.testing.assert_array_equal(getattr(loaded, attr), getattr(pca, attr))


@pytest.mark.bad_input
def test_bad_inputs_raise_named_errors(tmp_path):
    x = _shapes()
    with pytest.raises(NotFittedError, match='fit'):
        ShapePCA().transform(x)
    with pytest.raises(DataError, match='at least 2'):
        ShapePCA().fit(x[:1], names=['only.particles'])
    bad = x.copy()
    bad[3, 5, 1] = np.nan
    with pytest.raises(DataError, match='s3.particles'):
        ShapePCA().fit(bad, names=[f's{i}.particles' for i in range(len(x))])
    with pytest.raises(DataError, match=r'\(N, M, 3\)'):
        ShapePCA().fit(x[..., :2])
    with pytest.raises(DataError, match='identical'):
        ShapePCA().fit(np.repeat(x[:1], 4, axis=0))
    with pytest.raises(ConfigError, match='n_components'):
        ShapePCA(50).fit(x)
    with pytest.raises(ConfigError, match='percent_variability'):
        ShapePCA(percent_variability=1.5).fit(x)
    pca = ShapePCA(2).fit(x)
    with pytest.raises(DataError, match='particles'):
        pca.transform(x[:, :10])
    with pytest.raises(DataError, match='scores'):
        pca.inverse_transform(np.zeros((3, 5)))
    with pytest.raises(FileNotFoundError, match='mean.particles'):
        ShapePCA.load(tmp_path)
