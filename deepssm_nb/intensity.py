"""Random intensity changes of training images, so that a network reads the shape and not a scan's look.

With a few dozen subjects, every generated image is a warp of one of a handful of real scans, and each scan has its
own contrast, noise pattern, blur and intensity drift. A network can learn to tell those scans apart and answer with
the shapes it has seen, instead of reading the bone. Drawing new intensity settings each time an image is used takes
that shortcut away (ShapeWorks Studio offers the same kinds of change; TorchIO provides them as transforms).

As in TorchIO, a *random* transform draws its parameters and a *deterministic* function applies them:

* :class:`RandomIntensity` draws an :class:`IntensityParams` from a ``numpy.random.Generator``
  (:meth:`RandomIntensity.sample`);
* :func:`adjust_intensity` applies one, so any augmented image can be rebuilt from its parameters.

The changes, in this order, on a whitened image ``x`` (zero mean, unit standard deviation over the training set):

1. **blur**: a Gaussian of ``blur_sigma_mm`` (the point spread function of another scanner);
2. **gamma**: ``x`` rescaled to [0, 1] by its own range, raised to ``gamma``, mapped back;
3. **bias**: a smooth additive field (products of Legendre polynomials up to degree 2 along each axis);
4. **contrast**: ``x * scale + shift``;
5. **noise**: Gaussian noise of standard deviation ``noise_std``.

Measured cost: 5.8 ms per workshop-size image (68 x 48 x 52 voxels, default amounts, one thread of a 2-core AMD
EPYC), against 27 ms for the warp of a fresh sample from its original scan (20 ms from the groomed image) on the
same machine (``bench/results/accuracy_ablation_partial.json``).

Example:
    >>> import numpy as np
    >>> aug = RandomIntensity(noise=0.1)
    >>> x = np.zeros((8, 8, 8), np.float32)
    >>> y = aug(x, np.random.default_rng(0), spacing=(2.0, 2.0, 2.0))
    >>> y.shape, y.dtype
    ((8, 8, 8), dtype('float32'))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from ._validation import DataError, check_in_range

__all__ = ['IntensityParams', 'RandomIntensity', 'adjust_intensity', 'bias_field']

BIAS_DEGREE = 2


@dataclass(frozen=True)
class IntensityParams:
    """One draw of :class:`RandomIntensity`; :func:`adjust_intensity` applies it.

    Attributes:
        blur_sigma_mm: Gaussian blur, mm (0: none).
        gamma: Exponent on the image rescaled to [0, 1] (1: none).
        bias: (3, 3, 3) Legendre coefficients of the additive field, indexed [z, y, x] degree.
        scale: Contrast factor (1: none).
        shift: Offset (0: none).
        noise_std: Standard deviation of the Gaussian noise (0: none).
        noise_seed: Seed of the noise.
    """

    blur_sigma_mm: float = 0.0
    gamma: float = 1.0
    bias: np.ndarray = field(default_factory=lambda: np.zeros((BIAS_DEGREE + 1,) * 3))
    scale: float = 1.0
    shift: float = 0.0
    noise_std: float = 0.0
    noise_seed: int = 0


def _legendre(n: int) -> np.ndarray:
    """(BIAS_DEGREE + 1, n) Legendre polynomials of degree 0..2 on n points spanning [-1, 1]."""
    t = np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)
    return np.stack([np.ones_like(t), t, 0.5 * (3 * t * t - 1)])


def bias_field(coefficients: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The smooth field ``sum_ijk c_ijk P_i(z) P_j(y) P_k(x)`` on a grid.

    Args:
        coefficients: (3, 3, 3) Legendre coefficients, [z, y, x] degree.
        shape: ``(Z, Y, X)``.

    Returns:
        (Z, Y, X) float32 field.
    """
    c = np.asarray(coefficients, dtype=np.float64)
    pz, py, px = (_legendre(int(n)) for n in shape)
    return np.einsum('ijk,iz,jy,kx->zyx', c, pz, py, px, optimize=True).astype(np.float32)


def adjust_intensity(image: np.ndarray, params: IntensityParams, *, spacing: Sequence[float]) -> np.ndarray:
    """Apply one set of intensity changes (deterministic).

    Args:
        image: (Z, Y, X) whitened image.
        params: What to apply (see :class:`IntensityParams`).
        spacing: Voxel size along x, y, z, mm (as SimpleITK gives it).

    Returns:
        (Z, Y, X) float32 new image (the input is not changed).
    """
    x = np.array(image, dtype=np.float32)
    if x.ndim != 3:
        raise DataError(f'image must be a 3D (Z, Y, X) array; got shape {x.shape}.')
    if params.blur_sigma_mm > 0:
        sigma = [params.blur_sigma_mm / float(s) for s in reversed(tuple(spacing))]  # (z, y, x) voxels
        x = ndimage.gaussian_filter(x, sigma, mode='nearest', truncate=3.0)
    if params.gamma != 1.0:
        lo, hi = float(x.min()), float(x.max())
        if hi > lo:
            u = (x - lo) / (hi - lo)
            np.power(u, np.float32(params.gamma), out=u)
            x = u * np.float32(hi - lo) + np.float32(lo)
    if np.any(params.bias):
        x += bias_field(params.bias, x.shape)
    if params.scale != 1.0 or params.shift != 0.0:
        x = x * np.float32(params.scale) + np.float32(params.shift)
    if params.noise_std > 0:
        noise = np.random.default_rng(params.noise_seed).standard_normal(x.shape, dtype=np.float32)
        x += noise * np.float32(params.noise_std)
    return x


class RandomIntensity:
    """Random blur, gamma, smooth bias, contrast and noise (see the module notes).

    Args:
        scale: The contrast factor is drawn log-uniformly in ``[1 / (1 + scale), 1 + scale]``.
        shift: The offset is drawn uniformly in ``[-shift, shift]``.
        gamma: The exponent is ``exp(U(-gamma, gamma))``.
        noise: The noise standard deviation is drawn uniformly in ``[0, noise]``.
        blur_mm: The blur sigma is drawn uniformly in ``[0, blur_mm]`` mm.
        bias: The field's amplitude is drawn uniformly in ``[0, bias]``; its shape (the non-constant Legendre
            coefficients) is a random direction scaled so that the field never exceeds the amplitude.

    Raises:
        ConfigError: A negative amount, or one beyond its range (e.g. ``scale`` above 0.9).
    """

    def __init__(
        self,
        *,
        scale: float = 0.15,
        shift: float = 0.2,
        gamma: float = 0.3,
        noise: float = 0.15,
        blur_mm: float = 1.0,
        bias: float = 0.2,
    ):
        self.scale = check_in_range(scale, name='intensity.scale', low=0.0, high=0.9)
        self.shift = check_in_range(shift, name='intensity.shift', low=0.0, high=5.0)
        self.gamma = check_in_range(gamma, name='intensity.gamma', low=0.0, high=2.0)
        self.noise = check_in_range(noise, name='intensity.noise', low=0.0, high=2.0)
        self.blur_mm = check_in_range(blur_mm, name='intensity.blur_mm', low=0.0, high=10.0)
        self.bias = check_in_range(bias, name='intensity.bias', low=0.0, high=2.0)

    @classmethod
    def from_config(cls, cfg: Any) -> RandomIntensity | None:
        """From an :class:`~deepssm_nb.config.IntensityConfig`; None when it is disabled."""
        if not cfg.enabled:
            return None
        return cls(
            scale=cfg.scale, shift=cfg.shift, gamma=cfg.gamma, noise=cfg.noise, blur_mm=cfg.blur_mm, bias=cfg.bias
        )

    def sample(self, rng: np.random.Generator) -> IntensityParams:
        """Draw one set of parameters (always the same number of draws, so streams stay aligned)."""
        u = rng.uniform(size=6)
        direction = rng.standard_normal((BIAS_DEGREE + 1,) * 3)
        direction[0, 0, 0] = 0.0  # the constant term is the shift's job
        norm = float(np.abs(direction).sum())
        bias = direction * (self.bias * u[5] / norm) if norm > 0 else np.zeros_like(direction)
        return IntensityParams(
            blur_sigma_mm=float(self.blur_mm * u[0]),
            gamma=float(np.exp(self.gamma * (2 * u[1] - 1))),
            bias=bias,
            scale=float(np.exp(np.log1p(self.scale) * (2 * u[2] - 1))),
            shift=float(self.shift * (2 * u[3] - 1)),
            noise_std=float(self.noise * u[4]),
            noise_seed=int(rng.integers(2**63)),
        )

    def __call__(self, image: np.ndarray, rng: np.random.Generator, *, spacing: Sequence[float]) -> np.ndarray:
        """Draw parameters from ``rng`` and apply them to ``image`` (Z, Y, X)."""
        return adjust_intensity(image, self.sample(rng), spacing=spacing)

    def __repr__(self) -> str:
        return (
            f'RandomIntensity(scale={self.scale}, shift={self.shift}, gamma={self.gamma}, noise={self.noise}, '
            f'blur_mm={self.blur_mm}, bias={self.bias})'
        )
