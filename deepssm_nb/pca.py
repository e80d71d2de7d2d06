"""Principal component analysis of correspondence-point shapes.

A shape is M particles in correspondence, flattened row-major to a vector of
length 3M ``(x1, y1, z1, x2, ...)``. With N training shapes stacked in the
(N, 3M) matrix ``X``, mean ``mu`` and centred data ``Xc = X - mu``, the thin
SVD ``Xc = U S V^T`` gives the modes (rows of ``V^T``), the eigenvalues
``lambda_j = s_j^2 / (N - 1)`` of the sample covariance, and the scores
``Xc V``. At most N - 1 modes carry variance.

:class:`ShapePCA` follows the scikit-learn estimator contract: ``__init__``
stores parameters, ``fit`` learns attributes ending in ``_``. Fit it on
training shapes only. ``save`` and ``load`` use the ShapeWorks layout
(``mean.particles``, ``pcamode<i>.particles``, ``eigenvalues.txt``,
``original_PCA_scores.particles``).

Example:
    >>> import numpy as np
    >>> shapes = np.random.default_rng(0).normal(size=(6, 10, 3))
    >>> pca = ShapePCA(percent_variability=1.0).fit(shapes)
    >>> pca.n_components_
    5
    >>> bool(np.allclose(pca.inverse_transform(pca.transform(shapes)), shapes))
    True
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._validation import DataError, NotFittedError, check_array, check_in_range
from .io import atomic_write_text

__all__ = ['ShapePCA']


class ShapePCA:
    """PCA of (N, M, 3) particle sets; keeps modes by count or by % variance.

    Args:
        n_components: Modes to keep. ``None`` (or 0) chooses the smallest
            number whose cumulative variance fraction reaches
            ``percent_variability``.
        percent_variability: Fraction of the variance to keep, in (0, 1].

    Attributes:
        mean_: (M, 3) mean shape.
        components_: (L, M, 3) kept modes; orthonormal when flattened.
        explained_variance_: (L,) eigenvalues of the kept modes.
        explained_variance_ratio_: (L,) their fraction of the total variance.
        eigenvalues_: (N - 1,) all eigenvalues, descending (for plots).
        n_components_: L, the number of kept modes.
        scores_: (N, L) scores of the training shapes.
        n_particles_: M.
    """

    def __init__(self, n_components: int | None = None, *, percent_variability: float = 0.95):
        self.n_components = n_components
        self.percent_variability = percent_variability

    # ------------------------------------------------------------------ fitting
    def fit(self, particles: np.ndarray, *, names: list[str] | None = None) -> ShapePCA:
        """Learn the mean, modes and eigenvalues.

        Args:
            particles: (N, M, 3) training shapes, N >= 2.
            names: Optional file or subject names, used in error messages.

        Returns:
            ``self``.

        Raises:
            DataError: Not (N, M, 3), fewer than 2 shapes, NaN values, or
                identical shapes (no variance).
            ConfigError: ``n_components`` or ``percent_variability`` out of range.
        """
        x = _check_shapes(particles, names)
        check_in_range(self.percent_variability, name='percent_variability', low=0.0, high=1.0, low_inclusive=False)
        n, m, _ = x.shape
        flat = x.reshape(n, -1)
        mean = flat.mean(axis=0)
        _, s, vt = np.linalg.svd(flat - mean, full_matrices=False)
        rank = min(n - 1, vt.shape[0])
        eig = s[:rank] ** 2 / (n - 1)
        total = eig.sum()
        # variation at rounding level (a few ulps of the coordinates) is no variation
        if not total > (1e-9 * max(1.0, float(np.abs(flat).max()))) ** 2:
            raise DataError(f'the {n} training shapes are identical; PCA needs shapes that vary.')
        keep = eig > total * 1e-12
        eig, vt = eig[keep], vt[:rank][keep]
        # a deterministic sign: the largest coordinate of each mode is positive
        signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
        vt = vt * signs[:, None]
        ratio = eig / total
        if self.n_components:
            check_in_range(self.n_components, name='n_components', low=1, high=len(eig), integer=True)
            num = int(self.n_components)
        else:
            num = int(np.searchsorted(np.cumsum(ratio), self.percent_variability - 1e-12) + 1)
            num = min(num, len(eig))
        self._set(mean.reshape(m, 3), vt, eig, total, num, (flat - mean) @ vt[:num].T)
        return self

    def _set(self, mean, all_modes, eig, total, num, scores) -> None:
        m = mean.shape[0]
        self.mean_ = mean
        self._all_modes = all_modes
        self.eigenvalues_ = eig
        self.components_ = all_modes[:num].reshape(num, m, 3)
        self.explained_variance_ = eig[:num]
        self.explained_variance_ratio_ = eig[:num] / total
        self.n_components_ = num
        self.n_particles_ = m
        self.scores_ = scores

    def fit_transform(self, particles: np.ndarray) -> np.ndarray:
        """``fit`` then return the (N, L) training scores."""
        return self.fit(particles).scores_

    # ------------------------------------------------------------------ mapping
    def transform(self, particles: np.ndarray) -> np.ndarray:
        """Project shapes on the kept modes.

        Args:
            particles: (N, M, 3) or (M, 3) shapes.

        Returns:
            (N, L) scores (or (L,) for a single shape).
        """
        self._check_fitted()
        x = np.asarray(particles, float)
        single = x.ndim == 2
        x = check_array(x[None] if single else x, name='particles', ndim=3, shape=(None, self.n_particles_, 3))
        scores = (x.reshape(len(x), -1) - self.mean_.ravel()) @ self.components_.reshape(self.n_components_, -1).T
        return scores[0] if single else scores

    def inverse_transform(self, scores: np.ndarray) -> np.ndarray:
        """Shapes from scores: ``mean + sum_j scores_j * mode_j``.

        Args:
            scores: (N, L) or (L,) scores.

        Returns:
            (N, M, 3) shapes (or (M, 3) for a single score vector).
        """
        self._check_fitted()
        s = np.asarray(scores, float)
        single = s.ndim == 1
        s = check_array(s[None] if single else s, name='scores', ndim=2, shape=(None, self.n_components_))
        flat = self.mean_.ravel() + s @ self.components_.reshape(self.n_components_, -1)
        out = flat.reshape(len(s), self.n_particles_, 3)
        return out[0] if single else out

    def _check_fitted(self) -> None:
        if not hasattr(self, 'components_'):
            raise NotFittedError(
                'This ShapePCA instance is not fitted yet. Call `fit` with the training '
                'particles (N, M, 3) before using it.'
            )

    def __repr__(self) -> str:
        return f'ShapePCA(n_components={self.n_components!r}, percent_variability={self.percent_variability!r})'

    # ------------------------------------------------------------------ files
    def save(self, folder: str | os.PathLike) -> Path:
        """Write the model in the ShapeWorks layout.

        Files: ``mean.particles`` (M x 3), ``pcamode<i>.particles`` for every
        mode with variance (M x 3, i from 0), ``eigenvalues.txt`` (one per
        line) and ``original_PCA_scores.particles`` (N x L; its column count
        is the number of kept modes). Numbers are written with 17 significant
        digits, so :meth:`load` restores the model exactly.

        Returns:
            The folder.
        """
        self._check_fitted()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        _write_rows(folder / 'mean.particles', self.mean_)
        for i, mode in enumerate(self._all_modes):
            _write_rows(folder / f'pcamode{i}.particles', mode.reshape(-1, 3))
        atomic_write_text(folder / 'eigenvalues.txt', ''.join(f'{e!r}\n' for e in self.eigenvalues_.tolist()))
        _write_rows(folder / 'original_PCA_scores.particles', self.scores_)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ShapePCA:
        """Read a model written by :meth:`save` (or by ShapeWorks).

        Raises:
            FileNotFoundError: A file of the layout is missing.
            DataError: Inconsistent sizes between the files.
        """
        folder = Path(folder)
        mean = _read_rows(folder / 'mean.particles', 3)
        eig = np.atleast_1d(np.loadtxt(_existing(folder / 'eigenvalues.txt'), ndmin=1))
        scores = _read_rows(folder / 'original_PCA_scores.particles', None)
        num = scores.shape[1]
        modes = []
        for i in range(len(eig)):
            path = folder / f'pcamode{i}.particles'
            if not path.is_file():
                break
            modes.append(_read_rows(path, 3).ravel())
        if len(modes) < num:
            raise DataError(f'"{folder}" holds {len(modes)} pcamode files but the scores have {num} columns.')
        modes = np.array(modes)
        if modes.shape[1] != mean.size:
            raise DataError(
                f'"{folder}": the modes have {modes.shape[1] // 3} particles; mean.particles has {len(mean)}.'
            )
        total = float(eig.sum())
        pca = cls(num, percent_variability=1.0)
        pca._set(mean, modes, eig[: len(modes)], total, num, scores)
        return pca


def _check_shapes(particles: np.ndarray, names: list[str] | None) -> np.ndarray:
    x = np.asarray(particles, dtype=float)
    if x.ndim != 3 or x.shape[-1] != 3:
        raise DataError(f'particles must have shape (N, M, 3); got {x.shape}.')
    if x.shape[0] < 2:
        what = f' ({names[0]})' if names else ''
        raise DataError(f'PCA needs at least 2 training shapes; got {x.shape[0]}{what}.')
    bad = np.flatnonzero(~np.isfinite(x).all(axis=(1, 2)))
    if len(bad):
        labels = [names[i] if names else f'shape {i}' for i in bad]
        raise DataError([f'{lab}: contains NaN or infinite coordinates.' for lab in labels])
    return x


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f'File not found: "{path}"')
    return path


def _write_rows(path: Path, rows: np.ndarray) -> None:
    atomic_write_text(path, ''.join(' '.join(f'{v!r}' for v in row) + '\n' for row in np.asarray(rows).tolist()))


def _read_rows(path: Path, columns: int | None) -> np.ndarray:
    try:
        arr = np.loadtxt(_existing(path), ndmin=2)
    except ValueError as e:
        raise DataError(f'"{path}" is not a table of numbers: {e}') from None
    if columns is not None and arr.shape[1] != columns:
        raise DataError(f'"{path}" has {arr.shape[1]} columns; expected {columns}.')
    return arr
