"""How unlike the training images an image looks to the network: a distance in the encoder's feature space.

The predicted uncertainty of Uncertain-DeepSSM is learnt on training images, so nothing makes it grow on an image
unlike all of them: on corrupted test femurs it barely moves (``bench/results/uncertainty_workshop.json``). A
second, simpler question catches those images: do the encoder's features of this image lie where the training
images' features lie? :class:`FeatureDistance` fits a Gaussian to the features of the training images (the 96
outputs of the encoder's fully connected layers, in eval mode) and scores an image by its Mahalanobis distance from
it, the feature-density idea of Lee et al. (2018) and Mukhoti et al. (2023, "deterministic uncertainty"). The
covariance is shrunk towards a scaled identity (Ledoit and Wolf 2004), because a cohort gives a few hundred
training images for 96 features.

Prediction flags an image ``uncertain`` when its mean total uncertainty or its feature distance is above the level
fitted on the validation images (:func:`deepssm_nb.predict.fit_uncertainty_threshold`).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> fd = FeatureDistance().fit(rng.normal(size=(200, 4)))
    >>> near, far = fd.score(np.zeros((1, 4))), fd.score(np.full((1, 4), 5.0))
    >>> bool(near[0] < 1.0 < far[0])
    True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ._validation import NotFittedError
from .io import atomic_path

__all__ = ['FeatureDistance', 'encoder_features', 'fit_feature_distance']


class FeatureDistance:
    """Mahalanobis distance from the training features, with a Ledoit-Wolf shrunk covariance.

    Attributes (after :meth:`fit`):
        location_: ``(F,)`` mean training feature vector.
        precision_: ``(F, F)`` inverse of the shrunk covariance.
        shrinkage_: The Ledoit-Wolf shrinkage, in [0, 1].
        n_samples_: Number of training vectors fitted.
    """

    def fit(self, features: Any) -> FeatureDistance:
        """Fit the mean and the shrunk covariance of ``features`` ``(N, F)``, N >= 2.

        Raises:
            ValueError: Not a 2-D array, fewer than 2 rows, or non-finite values.
        """
        from sklearn.covariance import LedoitWolf

        x = self._check(features, 'features')
        if x.shape[0] < 2:
            raise ValueError(f'FeatureDistance.fit needs at least 2 feature vectors; got {x.shape[0]}.')
        lw = LedoitWolf().fit(x)
        self.location_ = lw.location_.astype(np.float64)
        self.precision_ = lw.precision_.astype(np.float64)
        self.shrinkage_ = float(lw.shrinkage_)
        self.n_samples_ = int(x.shape[0])
        return self

    def score(self, features: Any) -> np.ndarray:
        """Mahalanobis distances ``(B,)`` of ``features`` ``(B, F)`` from the training mean (1 = one standard
        deviation along a direction the training features vary in)."""
        if not hasattr(self, 'precision_'):
            raise NotFittedError('This FeatureDistance is not fitted yet. Call `fit(features)` or `load(path)` first.')
        x = self._check(features, 'features', dim=self.location_.shape[0])
        d = x - self.location_
        return np.sqrt(np.maximum(np.einsum('bi,ij,bj->b', d, self.precision_, d), 0.0))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted statistics to ``path`` (``.npz``, atomically)."""
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, 'wb') as fh:
            np.savez(
                fh,
                location=self.location_,
                precision=self.precision_,
                shrinkage=self.shrinkage_,
                n_samples=self.n_samples_,
            )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureDistance:
        """Read statistics written by :meth:`save`.

        Raises:
            FileNotFoundError: No such file.
            ValueError: The file lacks one of the arrays or they disagree in size.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f'File not found: "{path}"')
        with np.load(path) as z:
            missing = {'location', 'precision', 'shrinkage', 'n_samples'} - set(z.files)
            if missing:
                raise ValueError(f'"{path}" is not a FeatureDistance file: it lacks {sorted(missing)}.')
            fd = cls()
            fd.location_ = z['location'].astype(np.float64)
            fd.precision_ = z['precision'].astype(np.float64)
            fd.shrinkage_ = float(z['shrinkage'])
            fd.n_samples_ = int(z['n_samples'])
        f = fd.location_.shape
        if len(f) != 1 or fd.precision_.shape != (f[0], f[0]):
            raise ValueError(
                f'"{path}": location has shape {f} and precision {fd.precision_.shape}; expected (F,) and (F, F).'
            )
        return fd

    @staticmethod
    def _check(features: Any, name: str, dim: int | None = None) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
            want = '(N, F)' if dim is None else f'(B, {dim})'
            raise ValueError(f'{name} must have shape {want}; got {x.shape}.')
        if not np.all(np.isfinite(x)):
            raise ValueError(f'{name} holds NaN or infinite values.')
        return x


def encoder_features(net: Any, images: Any) -> np.ndarray:
    """The image encoder's features ``(B, F)`` of whitened ``images`` ``(B, 1, D, H, W)``, eval mode, no dropout.

    For Base-DeepSSM and TL-DeepSSM alike: the input mask, the convolutions and the fully connected layers before
    the latent head.
    """
    import torch

    enc = net.encoder if hasattr(net, 'encoder') else net.image_encoder
    modes = {m: m.training for m in enc.modules()}
    enc.eval()
    try:
        with torch.no_grad():
            x = enc.input_mask(images) if hasattr(enc, 'input_mask') else images
            return enc.backbone(x).double().cpu().numpy()
    finally:
        for m, mode in modes.items():
            m.train(mode)


def fit_feature_distance(net: Any, dataset: Any, *, device: Any = 'cpu', batch_size: int = 8) -> FeatureDistance:
    """Fit a :class:`FeatureDistance` to the encoder features of every image of ``dataset`` (items with an
    ``'image'`` ``(1, D, H, W)``), in order, without augmentation."""
    from torch.utils.data import DataLoader

    feats = [encoder_features(net, b['image'].to(device)) for b in DataLoader(dataset, batch_size=batch_size)]
    return FeatureDistance().fit(np.concatenate(feats))
