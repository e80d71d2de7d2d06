"""Image grids and the operations on them: one place for each.

* :class:`ImageGrid`: an image's voxel grid (numpy shape and physical geometry), and :func:`grid_record`, the same
  geometry as plain lists for JSON files;
* :func:`reference_grid`: the empty image that defines the groomed cohort's reference grid;
* :func:`resample_to_reference`: an image resampled onto a reference grid through a (4, 4) matrix, with
  :func:`sitk_from_matrix` and :func:`matrix_from_sitk` converting between matrices and SimpleITK transforms;
* :func:`downsample_image`: anti-aliased downsampling by a factor of the size (the network's input), and
  :func:`coarsen_to_spacing`, a cheaper smoothing to about a given spacing (the moving image of a registration);
  the two smooth differently (a discrete Gaussian for the network input, a recursive one for registration) and
  both sample the coarser grid with :func:`_resample_coarser`;
* :func:`cast_like`: a float array back to an image's voxel type without wrapping.

Every matrix ``T`` maps a point of an ORIGINAL image to the world frame (``p_world = T @ [p_orig, 1]``);
SimpleITK resampling maps output points to input points, so it gets ``inv(T)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._validation import DataError, check_array, check_in_range, look_up_option

__all__ = [
    'MIN_SIZE',
    'ImageGrid',
    'cast_like',
    'coarsen_to_spacing',
    'downsample_image',
    'grid_record',
    'matrix_from_sitk',
    'reference_grid',
    'resample_to_reference',
    'sitk_from_matrix',
]

MIN_SIZE = 8  # the fewest voxels per axis the network accepts


@dataclass(frozen=True)
class ImageGrid:
    """The voxel grid of a 3D image: numpy shape and physical geometry.

    Attributes:
        shape: ``(Z, Y, X)``, the numpy array shape (``sitk.GetArrayFromImage``).
        origin: (3,) physical position (x, y, z) of voxel ``[0, 0, 0]``, mm.
        spacing: (3,) voxel size along x, y, z, mm.
        direction: (3, 3) orthonormal direction cosines (columns = image axes).
    """

    shape: tuple[int, int, int]
    origin: np.ndarray
    spacing: np.ndarray
    direction: np.ndarray

    @classmethod
    def from_image(cls, image) -> ImageGrid:
        """The grid of a ``SimpleITK.Image``."""
        size = image.GetSize()
        return cls(
            (size[2], size[1], size[0]),
            np.array(image.GetOrigin(), float),
            np.array(image.GetSpacing(), float),
            np.array(image.GetDirection(), float).reshape(3, 3),
        )

    def to_image(self, array: np.ndarray):
        """A ``SimpleITK.Image`` of ``array`` ``(Z, Y, X)`` (this grid's shape) with this grid's geometry."""
        import SimpleITK as sitk

        if tuple(array.shape) != tuple(self.shape):
            raise ValueError(f'array must have the grid shape {tuple(self.shape)} (z, y, x); got {array.shape}.')
        img = sitk.GetImageFromArray(array)
        img.SetOrigin(tuple(float(v) for v in self.origin))
        img.SetSpacing(tuple(float(v) for v in self.spacing))
        img.SetDirection(tuple(float(v) for v in np.asarray(self.direction).ravel()))
        return img

    @classmethod
    def from_file(cls, path, *, name: str = 'image') -> ImageGrid:
        """The grid of an image file, read from its header only (no voxels are loaded).

        Raises:
            FileNotFoundError: ``path`` does not exist (the message names it as ``name``).
        """
        import SimpleITK as sitk

        if not Path(path).is_file():
            raise FileNotFoundError(f'{name.capitalize()} not found: "{path}"')
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        size = reader.GetSize()
        return cls(
            (size[2], size[1], size[0]),
            np.array(reader.GetOrigin(), float),
            np.array(reader.GetSpacing(), float),
            np.array(reader.GetDirection(), float).reshape(3, 3),
        )

    @property
    def matrix(self) -> np.ndarray:
        """(3, 3) map from an (x, y, z) index step to a physical step: ``direction @ diag(spacing)``."""
        return self.direction * self.spacing[None, :]

    def index_to_physical(self, index: np.ndarray) -> np.ndarray:
        """Continuous ``(..., 3)`` indices in numpy order (z, y, x) to ``(..., 3)`` physical (x, y, z)."""
        return np.asarray(index, float)[..., ::-1] @ self.matrix.T + self.origin

    def physical_to_index(self, points: np.ndarray) -> np.ndarray:
        """``(..., 3)`` physical points (x, y, z) to continuous indices in numpy order (z, y, x)."""
        return ((np.asarray(points, float) - self.origin) @ np.linalg.inv(self.matrix).T)[..., ::-1]


def grid_record(image) -> dict[str, list[float]]:
    """The geometry of a SimpleITK image as plain lists (for JSON): ``spacing``, ``origin``, ``direction``."""
    return {
        'spacing': list(image.GetSpacing()),
        'origin': list(image.GetOrigin()),
        'direction': list(image.GetDirection()),
    }


def sitk_from_matrix(T: np.ndarray):
    """A ``sitk.AffineTransform`` that maps points exactly as the (4, 4) matrix ``T``."""
    import SimpleITK as sitk

    T = np.asarray(T, dtype=float)
    tx = sitk.AffineTransform(3)
    tx.SetMatrix(T[:3, :3].ravel().tolist())
    tx.SetTranslation(T[:3, 3].tolist())
    return tx


def matrix_from_sitk(transform) -> np.ndarray:
    """The (4, 4) matrix of an affine-like SimpleITK transform (any center convention).

    The matrix is read off the images of the origin and the unit vectors, so
    composite, centred and translation-only transforms are handled alike.
    """
    p0 = np.asarray(transform.TransformPoint((0.0, 0.0, 0.0)))
    T = np.eye(4)
    for i in range(3):
        e = np.zeros(3)
        e[i] = 1.0
        T[:3, i] = np.asarray(transform.TransformPoint(tuple(e))) - p0
    T[:3, 3] = p0
    return T


def resample_to_reference(
    image, reference, T: np.ndarray, *, interpolator: str = 'linear', default_value: float | None = None
):
    """Resample ``image`` onto the grid of ``reference`` through ``T``.

    Args:
        image: ``sitk.Image`` in its original space.
        reference: ``sitk.Image`` whose origin, size, spacing and direction
            define the output grid (its voxels are not used).
        T: (4, 4) matrix mapping original points to world (reference) points.
        interpolator: ``'linear'`` or ``'nearest'`` (use nearest for labels).
        default_value: Value outside the image; default: the image minimum
            (air in CT), not 0.

    Returns:
        ``sitk.Image`` on the reference grid, with the pixel type of ``image``.
    """
    import SimpleITK as sitk

    kind = look_up_option(interpolator, ('linear', 'nearest'), name='interpolator')
    interp = sitk.sitkLinear if kind == 'linear' else sitk.sitkNearestNeighbor
    if default_value is None:
        default_value = float(sitk.GetArrayViewFromImage(image).min())
    inverse = sitk_from_matrix(np.linalg.inv(np.asarray(T, dtype=float)))  # world -> original
    return sitk.Resample(image, reference, inverse, interp, float(default_value), image.GetPixelID())


def reference_grid(points: np.ndarray, *, spacing: float, padding: float):
    """An empty image defining the reference grid around ``points``.

    Args:
        points: (K, 3) world points (aligned particles or mesh vertices).
        spacing: Isotropic voxel size, mm.
        padding: Margin added on every side of the points' bounding box, mm.

    Returns:
        ``sitk.Image`` (uint8, all 0) with identity direction whose voxel
        centres cover ``[min - padding, max + padding]`` of the points.
    """
    import SimpleITK as sitk

    pts = check_array(points, name='points', shape=(None, 3)).reshape(-1, 3)
    check_in_range(spacing, name='spacing', low=0.0, low_inclusive=False)
    check_in_range(padding, name='padding', low=0.0)
    if len(pts) == 0:
        raise DataError('points must hold at least one point to define a grid.')
    lo = pts.min(axis=0) - padding
    size = np.ceil((pts.max(axis=0) + padding - lo) / spacing - 1e-9).astype(int) + 1
    grid = sitk.Image([int(n) for n in size], sitk.sitkUInt8)
    grid.SetSpacing([float(spacing)] * 3)
    grid.SetOrigin(lo.tolist())
    return grid


def downsample_image(image, factor: float | Sequence[float], *, name: str = 'image'):
    """Anti-aliased downsampling of a SimpleITK image, keeping its physical extent.

    The image is smoothed with a Gaussian whose width grows with the spacing
    change, then resampled linearly on a coarser grid that covers the same
    field of view (same direction, first voxel centre moved by half the new
    voxel). A factor of 1 only casts to float32.

    Args:
        image: 3D ``SimpleITK.Image``.
        factor: New size / old size, in (0, 1]; one number, or one per axis (x, y, z).
        name: What the image is (named in errors).

    Returns:
        float32 ``SimpleITK.Image`` of size ``round(size * factor)``.

    Raises:
        ConfigError: A factor outside (0, 1].
        DataError: The result would have fewer than 8 voxels along an axis.
    """
    import SimpleITK as sitk

    factors = np.broadcast_to(np.asarray(factor, dtype=object), (3,))
    for f in factors:
        check_in_range(f, name='down_factor', low=0.0, high=1.0, low_inclusive=False)
    size = np.array(image.GetSize(), dtype=float)
    new_size = np.maximum(1, np.round(size * factors.astype(float))).astype(int)
    if np.any(new_size < MIN_SIZE):
        how = f' after downsampling by {factor}' if np.any(factors.astype(float) < 1) else ''
        raise DataError(
            f'{name} would be {tuple(int(s) for s in new_size)} voxels (x, y, z){how}; the network needs '
            f'at least {MIN_SIZE} per axis. Use a larger down_factor or a finer grooming spacing.'
        )
    img = sitk.Cast(image, sitk.sitkFloat32)
    if np.all(new_size == size):
        return img
    spacing = np.array(image.GetSpacing())
    new_spacing = spacing * size / new_size
    sigma = 0.5 * np.sqrt(np.maximum(new_spacing**2 - spacing**2, 0.0))
    img = sitk.DiscreteGaussian(img, (sigma**2).tolist(), 32, 0.01, True)
    return _resample_coarser(img, image, new_size, new_spacing, 0.0)


def coarsen_to_spacing(image, spacing: float):
    """``image`` smoothed and resampled (in its own frame) to about ``spacing`` mm if it is much finer.

    Registration smooths and differentiates the whole moving image at every
    level; at the reference's resolution this is several times cheaper and
    loses nothing the reference could match.
    """
    import SimpleITK as sitk

    old = np.asarray(image.GetSpacing(), dtype=float)
    if np.all(old > 0.75 * spacing):
        return image
    new = np.maximum(old, spacing)
    sigma = np.sqrt(np.maximum(new**2 - old**2, 0.0)) / 2.0
    smooth = sitk.SmoothingRecursiveGaussian(image, sigma.tolist())
    size = np.maximum(np.round(np.asarray(image.GetSize()) * old / new).astype(int), 1)
    return _resample_coarser(smooth, image, size, new, float(sitk.GetArrayViewFromImage(image).min()))


def _resample_coarser(smoothed, image, size, spacing, default: float):
    """``smoothed`` sampled linearly on the coarser grid of ``size`` voxels of ``spacing`` over ``image``'s extent.

    The grid keeps ``image``'s direction; its first voxel centre moves by half the change of spacing, so the field
    of view stays where it was.
    """
    import SimpleITK as sitk

    old = np.asarray(image.GetSpacing(), dtype=float)
    origin = np.asarray(image.GetOrigin()) + np.asarray(image.GetDirection()).reshape(3, 3) @ ((spacing - old) / 2)
    return sitk.Resample(
        smoothed,
        [int(n) for n in size],
        sitk.Transform(),
        sitk.sitkLinear,
        origin.tolist(),
        np.asarray(spacing, dtype=float).tolist(),
        image.GetDirection(),
        float(default),
        sitk.sitkFloat32,
    )


def cast_like(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``x`` as ``dtype``; to an integer type it is rounded and clipped to the type's range, so nothing wraps."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(x), info.min, info.max).astype(dtype)
    return x.astype(dtype)
