"""Samplers of new PCA scores from the scores of real training shapes.

Each sampler is fitted on the (N, L) scores of the real shapes and draws new
score vectors together with a *base* example: the real shape whose image is
warped to produce the new image. All three follow the same contract::

    sampler = KDESampler().fit(scores)                       # (N, L)
    new_scores, base = sampler.sample(100, random_state=0)   # (100, L), (100,)

With ``mu`` the mean and ``S`` the (N - 1)-normalised covariance of the real
scores, the Mahalanobis distance is ``d_M(a, b)^2 = (a - b)^T S^+ (a - b)``
(``S^+`` the pseudo-inverse).

* ``gaussian``: ``z ~ N(mu, S)``; base = the real example nearest to ``z``
  in Mahalanobis distance.
* ``mixture``: a Gaussian mixture (full covariances) fitted by EM; pick
  component ``k`` with probability ``pi_k``, then ``z ~ N(mu_k, S_k)``; base =
  nearest real example in Mahalanobis distance (under ``S``). Without a
  component count, models with 1..min(N - 1, 10) components are fitted and
  the count is the rounded mean of the BIC-best and the AIC-best counts.
* ``kde``: a Gaussian kernel density estimate. Bandwidth
  ``h^2 = (1 / (N L)) sum_i min_{j != i} d_M(s_i, s_j)^2`` (the mean squared
  Mahalanobis distance to the nearest other example, per mode; duplicate
  shapes at distance 0 are skipped). A sample picks a real example ``b``
  uniformly (the base) and adds ``N(0, h^2 S)`` noise: ``h^2`` is a
  *variance*, in units of the score covariance, so the noise is isotropic in
  Mahalanobis terms.

Nothing is seeded at import; every ``sample`` call takes ``random_state``.
"""

from __future__ import annotations

import numpy as np

from ._validation import DataError, check_array, check_in_range, look_up_option

__all__ = [
    'SAMPLERS',
    'GaussianSampler',
    'KDESampler',
    'MixtureSampler',
    'choose_mixture_components',
    'get_sampler',
    'kde_bandwidth',
    'mahalanobis_nearest',
    'sample_scores',
]

SAMPLERS = ('gaussian', 'mixture', 'kde')


def _check_scores(scores: np.ndarray) -> np.ndarray:
    s = check_array(scores, name='scores', ndim=2)
    if s.shape[0] < 2 or s.shape[1] < 1:
        raise DataError(f'scores must have shape (N, L) with N >= 2 shapes and L >= 1 modes; got {s.shape}.')
    return s


def _sqrtm(cov: np.ndarray) -> np.ndarray:
    """A matrix ``R`` with ``R R^T = cov`` for a symmetric positive semi-definite ``cov``."""
    vals, vecs = np.linalg.eigh(cov)
    return vecs * np.sqrt(np.clip(vals, 0.0, None))[None, :]


def _precision(scores: np.ndarray) -> np.ndarray:
    return np.linalg.pinv(np.atleast_2d(np.cov(scores, rowvar=False)), hermitian=True)


def mahalanobis_nearest(points: np.ndarray, scores: np.ndarray, precision: np.ndarray | None = None) -> np.ndarray:
    """Index of the nearest row of ``scores`` for each point, in Mahalanobis distance.

    Args:
        points: (n, L) query score vectors.
        scores: (N, L) real scores.
        precision: (L, L) inverse covariance; default: that of ``scores``.

    Returns:
        (n,) int64 indices into ``scores``.
    """
    prec = _precision(scores) if precision is None else precision
    diff = points[:, None, :] - scores[None, :, :]
    d2 = np.einsum('nij,jk,nik->ni', diff, prec, diff)
    return d2.argmin(axis=1).astype(np.int64)


class _Sampler:
    name = ''

    def fit(self, scores: np.ndarray) -> _Sampler:
        """Learn from (N, L) real scores. Returns ``self``."""
        s = _check_scores(scores)
        self.scores_ = s
        self.mean_ = s.mean(axis=0)
        self.covariance_ = np.atleast_2d(np.cov(s, rowvar=False))
        self.precision_ = np.linalg.pinv(self.covariance_, hermitian=True)
        self._fit(s)
        return self

    def _fit(self, s: np.ndarray) -> None:
        pass

    def sample(self, n: int, *, random_state=None) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` score vectors.

        Args:
            n: Number of samples.
            random_state: Seed or ``np.random.Generator``.

        Returns:
            ``(scores (n, L), base_index (n,))``.
        """
        if not hasattr(self, 'scores_'):
            from ._validation import NotFittedError

            raise NotFittedError(f'This {type(self).__name__} is not fitted yet. Call `fit(scores)` first.')
        check_in_range(n, name='n', low=0, integer=True)
        return self._sample(int(n), np.random.default_rng(random_state))

    def params(self) -> dict:
        """Learned parameters worth recording (JSON-ready)."""
        return {'method': self.name}


class GaussianSampler(_Sampler):
    """``z ~ N(mu, S)``; the base is the Mahalanobis-nearest real example."""

    name = 'gaussian'

    def _fit(self, s: np.ndarray) -> None:
        self._root = _sqrtm(self.covariance_)

    def _sample(self, n: int, rng: np.random.Generator):
        z = self.mean_ + rng.standard_normal((n, self.mean_.size)) @ self._root.T
        return z, mahalanobis_nearest(z, self.scores_, self.precision_)


class KDESampler(_Sampler):
    """Kernel density estimate: ``z = s_b + e``, ``b ~ U{1..N}``, ``e ~ N(0, h^2 S)``.

    Attributes:
        bandwidth_: ``h^2``, see :func:`kde_bandwidth`.
    """

    name = 'kde'

    def _fit(self, s: np.ndarray) -> None:
        self.bandwidth_ = kde_bandwidth(s, self.precision_)
        self._root = _sqrtm(self.bandwidth_ * self.covariance_)

    def _sample(self, n: int, rng: np.random.Generator):
        base = rng.integers(0, len(self.scores_), size=n).astype(np.int64)
        z = self.scores_[base] + rng.standard_normal((n, self.mean_.size)) @ self._root.T
        return z, base

    def params(self) -> dict:
        return {'method': self.name, 'bandwidth': float(self.bandwidth_)}


class MixtureSampler(_Sampler):
    """Gaussian mixture: ``k ~ Cat(pi)``, ``z ~ N(mu_k, S_k)``; base = Mahalanobis-nearest.

    Args:
        n_components: Components; 0 chooses by BIC/AIC (:func:`choose_mixture_components`).
        random_state: Seed of the EM initialisation.

    Attributes:
        n_components_, weights_ (K,), means_ (K, L), covariances_ (K, L, L).
    """

    name = 'mixture'

    def __init__(self, n_components: int = 0, *, random_state: int = 0):
        self.n_components = n_components
        self.random_state = random_state

    def _fit(self, s: np.ndarray) -> None:
        from sklearn.mixture import GaussianMixture

        k = int(self.n_components) or choose_mixture_components(s, random_state=self.random_state)
        check_in_range(k, name='n_components', low=1, high=len(s), integer=True)
        gm = GaussianMixture(k, covariance_type='full', random_state=self.random_state).fit(s)
        self.n_components_ = k
        self.weights_ = gm.weights_ / gm.weights_.sum()
        self.means_ = gm.means_
        self.covariances_ = gm.covariances_
        self._roots = np.array([_sqrtm(c) for c in gm.covariances_])

    def _sample(self, n: int, rng: np.random.Generator):
        comp = rng.choice(self.n_components_, size=n, p=self.weights_)
        eps = rng.standard_normal((n, self.mean_.size))
        z = self.means_[comp] + np.einsum('nij,nj->ni', self._roots[comp], eps)
        return z, mahalanobis_nearest(z, self.scores_, self.precision_)

    def params(self) -> dict:
        return {'method': self.name, 'n_components': int(self.n_components_), 'weights': self.weights_.tolist()}


def kde_bandwidth(scores: np.ndarray, precision: np.ndarray | None = None) -> float:
    """The KDE bandwidth ``h^2`` (a variance, in units of the score covariance).

    ``h^2 = (1 / (N L)) sum_i min_{j != i, d > 0} d_M(s_i, s_j)^2``.

    Args:
        scores: (N, L) real scores.
        precision: (L, L) inverse covariance; default: that of ``scores``.
    """
    s = _check_scores(scores)
    prec = _precision(s) if precision is None else precision
    diff = s[:, None, :] - s[None, :, :]
    d2 = np.einsum('nij,jk,nik->ni', diff, prec, diff)
    d2[d2 <= 1e-12 * max(float(d2.max()), 1e-300)] = np.inf  # self and duplicates
    nearest = d2.min(axis=1)
    nearest = nearest[np.isfinite(nearest)]
    if not len(nearest):
        raise DataError('kde_bandwidth: all score vectors are identical; cannot set a bandwidth.')
    return float(nearest.mean() / s.shape[1])


def choose_mixture_components(scores: np.ndarray, *, max_components: int = 10, random_state: int = 0) -> int:
    """Mixture size halfway between the BIC-best and the AIC-best count.

    Fits full-covariance mixtures with 1..min(N - 1, max_components)
    components and returns ``round((k_BIC + k_AIC) / 2)`` (halves round up).
    """
    from sklearn.mixture import GaussianMixture

    s = _check_scores(scores)
    ks = range(1, max(1, min(len(s) - 1, max_components)) + 1)
    bic, aic = [], []
    for k in ks:
        gm = GaussianMixture(k, covariance_type='full', random_state=random_state).fit(s)
        bic.append(gm.bic(s))
        aic.append(gm.aic(s))
    k_bic, k_aic = ks[int(np.argmin(bic))], ks[int(np.argmin(aic))]
    return int(np.floor((k_bic + k_aic) / 2 + 0.5))


def get_sampler(method: str = 'kde', *, mixture_num: int = 0, random_state: int = 0) -> _Sampler:
    """An unfitted sampler by name: ``'gaussian'``, ``'mixture'`` or ``'kde'``.

    Args:
        method: Sampler name (the nearest spelling is suggested on a typo).
        mixture_num: Mixture components (0 = choose by BIC/AIC).
        random_state: Seed of the mixture's EM fit.
    """
    method = look_up_option(method, SAMPLERS, name='sampler')
    if method == 'gaussian':
        return GaussianSampler()
    if method == 'kde':
        return KDESampler()
    return MixtureSampler(mixture_num, random_state=random_state)


def sample_scores(
    scores: np.ndarray, n: int, method: str = 'kde', *, mixture_num: int = 0, random_state=None
) -> tuple[np.ndarray, np.ndarray]:
    """Fit a sampler on real ``scores`` (N, L) and draw ``n`` new score vectors.

    Example:
        >>> s = np.random.default_rng(0).normal(size=(10, 3))
        >>> z, base = sample_scores(s, 5, 'gaussian', random_state=1)
        >>> z.shape, base.shape
        ((5, 3), (5,))

    Returns:
        ``(scores (n, L), base_index (n,))``.
    """
    rng = np.random.default_rng(random_state)
    fit_seed = int(rng.integers(2**31 - 1))
    sampler = get_sampler(method, mixture_num=mixture_num, random_state=fit_seed).fit(scores)
    return sampler.sample(n, random_state=rng)
