"""Harder test images, for the out-of-distribution check of Uncertain-DeepSSM, and scores of how well it works.

Uncertain-DeepSSM (Adams, Bhalodia and Elhabian 2020) is worth its extra outputs only if its uncertainty is larger
where its prediction deserves less trust. The check: take test images, make them unlike the training images in a
known way, predict both, and ask how well the predicted uncertainty tells the changed images from the clean ones
(:func:`ood_auroc`); then fix a level above which a prediction is flagged (:func:`fit_threshold`, on validation
images). The corruptions act on the **whitened** volumes the network reads (mean 0, standard deviation 1 over the
training images, so 0 is the mean intensity):

* ``noise``: Gaussian noise of standard deviation ``strength`` is added. The bone edge drowns in it, so the image
  itself leaves the shape more open (aleatoric) and its texture is unlike any training image (epistemic).
* ``blur``: a Gaussian blur of ``2 * strength`` voxels. The cortical edge smears over several voxels, so the surface
  position is less defined (aleatoric), and no training scan was that soft (epistemic).
* ``shift``: the volume moves by 15 % of its size (times ``strength``) along each axis, the gap filled with 0. The
  femur leaves the place where every groomed training femur lies, and part of it may leave the field of view.
* ``invert``: ``-image``, bright bone becomes dark. The edges are where they were but of the wrong sign, which the
  filters learned on the training images never saw (epistemic).
* ``no_femur``: the femur is painted over with the tissue around it (the median of a ring just outside the femur,
  plus noise of the ring's spread). There is no shape left to read, so any confident answer would be wrong.

Each corruption keeps the type of its input (numpy in, numpy out; torch in, torch out, same dtype and device), the
shape (``(D, H, W)``, ``(1, D, H, W)`` or ``(B, 1, D, H, W)``) and never changes the input. The random ones draw from
``numpy.random.default_rng(seed)``, so numpy and torch inputs with the same seed give the same image.

Example:
    >>> import numpy as np
    >>> x = np.zeros((8, 8, 8), np.float32)
    >>> y = corrupt(x, 'noise', seed=0, strength=0.5)
    >>> y.shape, y.dtype, float(np.abs(corrupt(x, 'invert')).max())
    ((8, 8, 8), dtype('float32'), 0.0)
    >>> ood_auroc([0.1, 0.2, 0.3], [0.25, 0.4])
    0.8333333333333334
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from scipy import ndimage, stats

from ._validation import DataError, check_array, check_in_range, look_up_option

__all__ = ['CORRUPTIONS', 'corrupt', 'corrupt_all', 'fit_threshold', 'ood_auroc']

CORRUPTIONS = ('noise', 'blur', 'shift', 'invert', 'no_femur')

NOISE_STD = 1.0  # whitened units, times strength
BLUR_SIGMA = 2.0  # voxels along each spatial axis, times strength
SHIFT_FRACTION = 0.15  # of the size along each spatial axis, times strength
RING_WIDTH = 3.0  # voxels: the ring around the femur that gives the fill of no_femur


def _as_tensor(x: Any) -> bool:
    """Whether ``x`` is a torch tensor (without importing torch when the caller has not)."""
    torch = sys.modules.get('torch')
    return torch is not None and isinstance(x, torch.Tensor)


def _to_numpy(x: Any) -> np.ndarray:
    """Array-like or tensor -> numpy array (a tensor is detached and copied to the CPU first)."""
    if _as_tensor(x):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.double()  # numpy has no bfloat16
        return x.numpy()
    return np.asarray(x)


def _check_images(images: Any) -> tuple[np.ndarray, tuple[int, ...]]:
    """Validate ``images`` and view it as ``(N, D, H, W)`` float64.

    Returns:
        The ``(N, D, H, W)`` copy and the original shape.

    Raises:
        DataError: Not ``(D, H, W)``, ``(1, D, H, W)`` or ``(B, 1, D, H, W)``, empty, or non-finite voxels.
    """
    raw = _to_numpy(images)
    shape = tuple(raw.shape)
    one_channel = (len(shape) == 3) or (len(shape) == 4 and shape[0] == 1) or (len(shape) == 5 and shape[1] == 1)
    if not one_channel:
        raise DataError(
            f'images must be a one-channel volume of shape (D, H, W), (1, D, H, W) or (B, 1, D, H, W); '
            f'got a {len(shape)}D array of shape {shape}.'
        )
    if raw.size == 0:
        raise DataError(f'images must not be empty; got shape {shape}.')
    arr = check_array(raw, name='images')  # float64 copy, finite
    return np.array(arr.reshape(-1, *shape[-3:]), dtype=np.float64), shape


def _check_mask(femur_mask: Any, spatial: tuple[int, ...]) -> np.ndarray:
    """Validate ``femur_mask`` against the spatial shape of the images; return it as a bool array."""
    if femur_mask is None:
        raise DataError(
            "femur_mask is required for kind 'no_femur': a (D, H, W) array, nonzero on the femur; got None."
        )
    arr = check_array(_to_numpy(femur_mask), name='femur_mask')
    if arr.shape != spatial:
        raise DataError(
            f'femur_mask must have the spatial shape (D, H, W) = {spatial} of images; got shape {arr.shape}.'
        )
    mask = arr != 0
    if not mask.any():
        raise DataError(f'femur_mask must have at least one nonzero voxel; got all {mask.size} voxels zero.')
    return mask


def _shift(x: np.ndarray, seed: int, strength: float) -> np.ndarray:
    """Translate the ``(N, D, H, W)`` volumes along D, H and W (signs from ``seed``), filling with 0."""
    signs = np.random.default_rng(seed).integers(0, 2, size=3) * 2 - 1
    out = np.zeros_like(x)
    dst, src = [slice(None)], [slice(None)]
    for sign, n in zip(signs, x.shape[1:]):
        k = min(round(SHIFT_FRACTION * strength * n), n)
        if k == n:
            return out  # moved out of the field of view entirely
        if sign > 0:
            dst.append(slice(k, n))
            src.append(slice(0, n - k))
        else:
            dst.append(slice(0, n - k))
            src.append(slice(k, n))
    out[tuple(dst)] = x[tuple(src)]
    return out


def _no_femur(x: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
    """Replace the ``mask`` voxels of each ``(N, D, H, W)`` volume by the ring's median plus noise of its std."""
    ring = ~mask & (ndimage.distance_transform_edt(~mask) <= RING_WIDTH)
    if not ring.any():
        raise DataError(
            f'femur_mask covers all {mask.size} voxels of the image; no tissue is left around it to fill from.'
        )
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((x.shape[0], int(mask.sum())))
    out = x.copy()
    for i, volume in enumerate(out):
        values = volume[ring]
        volume[mask] = np.median(values) + np.std(values) * noise[i]
    return out


def corrupt(images: Any, kind: str, *, seed: int = 0, strength: float = 1.0, femur_mask: Any = None) -> Any:
    """One corruption of whitened images (see the module notes for each kind).

    Args:
        images: ``(D, H, W)``, ``(1, D, H, W)`` or ``(B, 1, D, H, W)`` whitened volumes, numpy or torch.
        kind: One of :data:`CORRUPTIONS`.
        seed: Integer >= 0 for the random draws of ``noise``, ``shift`` (the signs) and ``no_femur`` (the noise).
        strength: > 0; scales the amount (noise std ``1.0 * strength``, blur sigma ``2.0 * strength`` voxels,
            shift ``round(0.15 * strength * size)`` voxels). ``invert`` and ``no_femur`` ignore it.
        femur_mask: ``(D, H, W)`` array (bool or 0/1), nonzero on the femur; required by ``no_femur`` (the same mask
            for every image of a batch), ignored by the other kinds.

    Returns:
        The corrupted images, of the shape and type of ``images``: a numpy array of the same dtype (float32 for a
        non-float input), or a tensor of the same dtype and device (detached). ``images`` is not changed.

    Raises:
        ConfigError: Unknown ``kind`` (the message lists the options and the nearest spelling), ``strength`` <= 0
            or not finite, ``seed`` not an integer >= 0.
        DataError: ``images`` of the wrong shape, empty or with non-finite voxels; ``femur_mask`` missing, of the
            wrong shape, all zero or covering the whole image (``no_femur``).
    """
    kind = look_up_option(kind, CORRUPTIONS, name='kind')
    seed = int(check_in_range(seed, name='seed', low=0, integer=True))
    strength = float(check_in_range(strength, name='strength', low=0.0, low_inclusive=False))
    x, shape = _check_images(images)
    if kind == 'noise':
        out = x + np.random.default_rng(seed).standard_normal(x.shape) * (NOISE_STD * strength)
    elif kind == 'blur':
        sigma = BLUR_SIGMA * strength
        out = ndimage.gaussian_filter(x, (0.0, sigma, sigma, sigma), mode='nearest')
    elif kind == 'shift':
        out = _shift(x, seed, strength)
    elif kind == 'invert':
        out = -x
    else:
        mask = _check_mask(femur_mask, shape[-3:])
        out = _no_femur(x, mask, seed)
    out = out.reshape(shape)
    if _as_tensor(images):
        torch = sys.modules['torch']
        return torch.from_numpy(out).to(device=images.device, dtype=images.dtype)
    dtype = np.asarray(images).dtype
    return out.astype(dtype if np.issubdtype(dtype, np.floating) else np.float32)


def corrupt_all(images: Any, *, seed: int = 0, strength: float = 1.0, femur_mask: Any = None) -> dict[str, Any]:
    """Every kind of :data:`CORRUPTIONS` of the same images.

    Args:
        images: ``(D, H, W)``, ``(1, D, H, W)`` or ``(B, 1, D, H, W)`` whitened volumes, numpy or torch.
        seed: Integer >= 0; kind ``i`` of :data:`CORRUPTIONS` gets the seed drawn from
            ``numpy.random.SeedSequence([seed, i])``, so the kinds use independent streams.
        strength: > 0, as in :func:`corrupt`.
        femur_mask: ``(D, H, W)``, for ``no_femur``; None skips that kind.

    Returns:
        Kind -> corrupted images (as :func:`corrupt` returns them), in the order of :data:`CORRUPTIONS`.

    Raises:
        ConfigError, DataError: As :func:`corrupt`.
    """
    seed = int(check_in_range(seed, name='seed', low=0, integer=True))
    out = {}
    for i, kind in enumerate(CORRUPTIONS):
        if kind == 'no_femur' and femur_mask is None:
            continue
        kind_seed = int(np.random.SeedSequence([seed, i]).generate_state(1, np.uint64)[0])
        out[kind] = corrupt(images, kind, seed=kind_seed, strength=strength, femur_mask=femur_mask)
    return out


def _check_scores(values: Any, name: str) -> np.ndarray:
    """1-D, finite, non-empty float64 array."""
    arr = check_array(_to_numpy(values), name=name, ndim=1)
    if arr.size == 0:
        raise DataError(f'{name} must be a non-empty 1D array; got an empty array of shape {arr.shape}.')
    return arr


def ood_auroc(clean: Any, corrupted: Any) -> float:
    """Area under the ROC curve of a score separating corrupted (positive) from clean (negative) images.

    The Mann-Whitney statistic: the fraction of (corrupted, clean) pairs in which the corrupted image scores higher,
    a tie counting 1/2.

    Args:
        clean: ``(N0,)`` scores (higher = more uncertain) of the clean images.
        corrupted: ``(N1,)`` scores of the corrupted images.

    Returns:
        In [0, 1]: 1.0 when every corrupted image scores above every clean one, 0.5 for chance, 0.0 when reversed.

    Raises:
        DataError: Either input not 1-D, empty or with non-finite values.
    """
    neg = _check_scores(clean, 'clean')
    pos = _check_scores(corrupted, 'corrupted')
    ranks = stats.rankdata(np.concatenate([pos, neg]))  # average ranks: a tie counts 1/2
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def fit_threshold(values: Any, quantile: float = 0.95) -> float:
    """Level above which a prediction is flagged as uncertain: the ``quantile`` of the validation values.

    Args:
        values: ``(N,)`` mean uncertainty of each validation prediction.
        quantile: In (0, 1); the fraction of (in-distribution) validation predictions that fall below the level.

    Returns:
        ``numpy.quantile(values, quantile)`` (linear interpolation).

    Raises:
        ConfigError: ``quantile`` not in (0, 1).
        DataError: ``values`` not 1-D, empty or with non-finite values.
    """
    q = float(check_in_range(quantile, name='quantile', low=0.0, high=1.0, low_inclusive=False, high_inclusive=False))
    return float(np.quantile(_check_scores(values, 'values'), q))
