"""Whitening: the image and score normalizers fitted on the training split, and one image prepared as they do.

The network reads whitened images, ``(x - mean) / std`` with one mean and std over every training voxel, and
regresses whitened PCA scores, ``(s - mean_l) / std_l`` per mode. Both are fitted on the TRAINING split only and
saved in ``normalization.json`` (keys ``image_mean``, ``image_std``, ``score_mean``, ``score_std``), so the
validation and test images, and any new image at prediction time, are whitened with the same numbers.

Example:
    >>> import numpy as np
    >>> scores = np.array([[1.0, 10.0], [3.0, 30.0]])
    >>> ScoreNormalizer().fit(scores).transform(scores).tolist()
    [[-1.0, -1.0], [1.0, 1.0]]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._validation import DataError, NotFittedError
from .imageops import downsample_image
from .io import read_json

__all__ = ['ImageNormalizer', 'ScoreNormalizer', 'load_normalization', 'prepare_image']

_TINY = 1e-12  # a standard deviation below this is taken as 1 (a constant input is not scaled up)


class ImageNormalizer:
    """One mean and standard deviation over every voxel of the training images, fitted as they stream past.

    Attributes:
        mean_: The voxel mean.
        std_: The voxel standard deviation (1 where it is below 1e-12).
        n_voxels_: Voxels seen.
    """

    def __init__(self) -> None:
        self._mean, self._m2, self.n_voxels_ = 0.0, 0.0, 0
        self._saved: tuple[float, float] | None = None  # (mean, std) read from a record

    def partial_fit(self, volume: np.ndarray) -> ImageNormalizer:
        """Add the voxels of one image (any shape) to the running mean and variance (Chan et al.'s merge)."""
        if self._saved is not None:
            raise ValueError('This ImageNormalizer was read from a record (no voxel count); fit a new one.')
        v = np.ascontiguousarray(volume, dtype=np.float32)
        n, m = v.size, float(v.mean(dtype=np.float64))
        s2 = float(((v - m) ** 2).sum(dtype=np.float64))
        delta, tot = m - self._mean, self.n_voxels_ + n
        self._mean, self._m2 = self._mean + delta * n / tot, self._m2 + s2 + delta**2 * self.n_voxels_ * n / tot
        self.n_voxels_ = tot
        return self

    def fit(self, volumes) -> ImageNormalizer:
        """Fit on an iterable of images (each any shape), from scratch."""
        self.__init__()
        for volume in volumes:
            self.partial_fit(volume)
        return self

    @property
    def mean_(self) -> float:
        self._check()
        return self._saved[0] if self._saved else self._mean

    @property
    def std_(self) -> float:
        self._check()
        if self._saved:
            return self._saved[1]
        std = float(np.sqrt(self._m2 / self.n_voxels_))
        return std if std > _TINY else 1.0

    def transform(self, volume: np.ndarray) -> np.ndarray:
        """``(volume - mean_) / std_`` in float32, any shape."""
        return (volume - np.float32(self.mean_)) / np.float32(self.std_)

    def inverse_transform(self, volume: np.ndarray) -> np.ndarray:
        """Raw intensities back from whitened ones."""
        return np.asarray(volume) * float(self.std_) + float(self.mean_)

    def to_record(self) -> dict[str, float]:
        """``{'image_mean', 'image_std'}``, as ``normalization.json`` holds them."""
        return {'image_mean': self.mean_, 'image_std': self.std_}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ImageNormalizer:
        """The normalizer saved in a ``normalization.json`` dict (its voxel count is not kept)."""
        out = cls()
        out._saved = (float(record['image_mean']), float(record['image_std']))
        return out

    def _check(self) -> None:
        if not self.n_voxels_ and self._saved is None:
            raise NotFittedError('This ImageNormalizer has seen no image yet; call partial_fit or fit first.')


class ScoreNormalizer:
    """Per-mode mean and standard deviation of the training PCA scores.

    Attributes:
        mean_: (L,) mean score of each mode.
        std_: (L,) standard deviation of each mode (1 where it is below 1e-12).
    """

    def fit(self, scores: np.ndarray) -> ScoreNormalizer:
        """Fit on (S, L) raw scores."""
        s = np.asarray(scores, dtype=np.float64)
        if s.ndim != 2 or len(s) == 0:
            raise DataError(f'scores: expected an (S, L) array with S >= 1; got shape {s.shape}.')
        std = s.std(axis=0)
        self.mean_, self.std_ = s.mean(axis=0), np.where(std > _TINY, std, 1.0)
        return self

    def transform(self, scores: np.ndarray) -> np.ndarray:
        """``(scores - mean_) / std_``, with the statistics in float32; (..., L)."""
        self._check()
        return (scores - self.mean_.astype(np.float32)) / self.std_.astype(np.float32)

    def inverse_transform(self, whitened: np.ndarray) -> np.ndarray:
        """Raw scores back from whitened ones; (..., L)."""
        self._check()
        return np.asarray(whitened) * self.std_ + self.mean_

    def to_record(self) -> dict[str, list[float]]:
        """``{'score_mean', 'score_std'}``, as ``normalization.json`` holds them."""
        self._check()
        return {'score_mean': self.mean_.tolist(), 'score_std': self.std_.tolist()}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ScoreNormalizer:
        """The normalizer saved in a ``normalization.json`` dict."""
        out = cls()
        out.mean_ = np.asarray(record['score_mean'], dtype=np.float64)
        out.std_ = np.asarray(record['score_std'], dtype=np.float64)
        return out

    def _check(self) -> None:
        if not hasattr(self, 'mean_'):
            raise NotFittedError('This ScoreNormalizer is not fitted yet; call fit(scores) first.')


def load_normalization(loader_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``normalization.json`` (training statistics) from ``loader_dir``.

    Raises:
        FileNotFoundError: The training loaders were never built there.
    """
    path = Path(loader_dir) / 'normalization.json'
    if not path.is_file():
        raise FileNotFoundError(
            f'Normalization file not found: "{path}". Build the training loaders first '
            f'(get_train_val_loaders or build_loaders) so images are whitened with training '
            f'statistics.'
        )
    return read_json(path)


def prepare_image(image, normalization: dict[str, Any], *, name: str = 'image') -> torch.Tensor:
    """Downsample and whiten one groomed image exactly as the loaders do.

    Args:
        image: ``SimpleITK.Image`` on the training grid.
        normalization: The dict of ``normalization.json``.
        name: What the image is (named in errors).

    Returns:
        (1, 1, D, H, W) float32 tensor.

    Raises:
        DataError: The image does not match the training image shape.
    """
    import SimpleITK as sitk

    img = downsample_image(image, float(normalization['down_factor']), name=name)
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    if list(arr.shape) != list(normalization['image_shape']):
        raise DataError(
            f'{name} has shape {arr.shape} (z, y, x) after downsampling; the network expects '
            f'{tuple(normalization["image_shape"])}. Register it to the reference image first.'
        )
    arr = ImageNormalizer.from_record(normalization).transform(arr)
    return torch.from_numpy(arr[None, None])
