"""The feature-space distance that flags images unlike the training ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepssm_nb import NotFittedError
from deepssm_nb.models import DeepSSMNet
from deepssm_nb.novelty import FeatureDistance, encoder_features, fit_feature_distance


def _gaussian(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(3, 3))
    cov = a @ a.T + np.eye(3)
    return rng.multivariate_normal([1.0, -2.0, 0.5], cov, size=n), cov


def test_distance_is_the_mahalanobis_distance_for_many_samples():
    x, cov = _gaussian(20000)
    fd = FeatureDistance().fit(x)
    assert fd.shrinkage_ < 0.01 and fd.n_samples_ == 20000
    points = np.array([[1.0, -2.0, 0.5], [3.0, 0.0, 0.0], [-1.0, -1.0, 2.0]])
    d = points - np.array([1.0, -2.0, 0.5])
    exact = np.sqrt(np.einsum('bi,ij,bj->b', d, np.linalg.inv(cov), d))
    np.testing.assert_allclose(fd.score(points), exact, rtol=0.03, atol=0.03)
    # a fresh draw of the same distribution has a mean squared distance of about 3 (chi-squared, 3 dof)
    fresh = np.random.default_rng(1).multivariate_normal([1.0, -2.0, 0.5], cov, size=5000)
    assert abs(float(np.mean(fd.score(fresh) ** 2)) - 3.0) < 0.15


def test_few_samples_shrink_and_still_rank_far_points_higher():
    x = np.random.default_rng(0).normal(size=(10, 40))  # fewer samples than features: a singular sample covariance
    fd = FeatureDistance().fit(x)
    assert 0.0 < fd.shrinkage_ <= 1.0
    assert np.all(np.isfinite(fd.precision_))
    near, far = fd.score(np.vstack([x.mean(0), x.mean(0) + 10.0]))
    assert near < 1e-6 < far


def test_save_and_load_give_the_same_scores(tmp_path):
    x, _ = _gaussian(300)
    fd = FeatureDistance().fit(x)
    path = fd.save(tmp_path / 'features.npz')
    again = FeatureDistance.load(path)
    np.testing.assert_array_equal(again.score(x[:7]), fd.score(x[:7]))
    assert again.shrinkage_ == fd.shrinkage_ and again.n_samples_ == 300
    assert [p.name for p in tmp_path.iterdir()] == ['features.npz']  # no temporary file left


def test_bad_input_gives_precise_errors(tmp_path):
    with pytest.raises(NotFittedError, match=r'not fitted yet. Call `fit\(features\)`'):
        FeatureDistance().score(np.zeros((1, 3)))
    with pytest.raises(ValueError, match='at least 2 feature vectors; got 1'):
        FeatureDistance().fit(np.zeros((1, 3)))
    with pytest.raises(ValueError, match=r'features must have shape \(N, F\); got \(5,\)'):
        FeatureDistance().fit(np.zeros(5))
    fd = FeatureDistance().fit(_gaussian(50)[0])
    with pytest.raises(ValueError, match=r'features must have shape \(B, 3\); got \(2, 4\)'):
        fd.score(np.zeros((2, 4)))
    with pytest.raises(ValueError, match='NaN or infinite'):
        fd.score(np.array([[0.0, np.nan, 0.0]]))
    with pytest.raises(FileNotFoundError, match='missing.npz'):
        FeatureDistance.load(tmp_path / 'missing.npz')
    np.savez(tmp_path / 'other.npz', location=np.zeros(3))
    with pytest.raises(ValueError, match=r"is not a FeatureDistance file: it lacks \['n_samples', 'precision'"):
        FeatureDistance.load(tmp_path / 'other.npz')
    np.savez(tmp_path / 'bad.npz', location=np.zeros(3), precision=np.eye(4), shrinkage=0.1, n_samples=9)
    with pytest.raises(ValueError, match=r'location has shape \(3,\) and precision \(4, 4\)'):
        FeatureDistance.load(tmp_path / 'bad.npz')


def test_encoder_features_are_the_eval_mode_backbone_output_and_restore_modes():
    torch.manual_seed(0)
    net = DeepSSMNet((1, 16, 16, 16), num_latent=3, num_correspondences=10, channels=(2, 3, 3, 4, 4), dropout=0.3)
    x = torch.randn(4, 1, 16, 16, 16)
    net.train()
    f = encoder_features(net, x)
    assert f.shape == (4, 96) and f.dtype == np.float64
    assert all(m.training for m in net.modules())  # modes restored
    np.testing.assert_array_equal(encoder_features(net, x), f)  # no dropout: the same every time
    net.eval()
    with torch.no_grad():
        np.testing.assert_allclose(f, net.encoder.backbone(x).double().numpy(), atol=1e-6)
    fd = fit_feature_distance(net, [{'image': img} for img in x])
    assert fd.n_samples_ == 4 and fd.location_.shape == (96,)
    np.testing.assert_allclose(fd.location_, f.mean(0), atol=1e-9)
