"""Images of new shapes: a real training scan warped onto a sampled shape, with an optional pose jitter.

A generated training sample is a shape ``q`` (M particles, world frame) drawn from the shape model, and an image of
it: the scan of a real training subject (its *base*, with particles ``p``) warped by a thin-plate spline ``f`` with
``f(q_i) = p_i``, so that the base's femur takes the new shape (:mod:`deepssm_nb.tps`).

Where the warp reads the base (``AugmentConfig.warp_from``):

* ``'original'``: output voxel ``x`` of the reference grid reads the base's **original** scan at
  ``inv(T) f(x)``, with ``T`` the base's grooming transform (original -> world). This is the chain that made the
  real groomed images (one linear interpolation of the original scan), with the spline inserted, so a generated
  image is as sharp and as noisy as a real one.
* ``'groomed'`` (default): ``x`` reads the base's groomed image at ``f(x)``, as ShapeWorks does. The groomed image was
  already interpolated once, so the sample is interpolated twice: measurably smoother than the real images
  (about 30 % less high-frequency energy on the workshop femurs), which a network can learn to tell apart.

**Pose jitter.** A small rigid map ``J`` (random rotation about the shape's centroid, random translation) moves the
sample's particles to ``J(q)`` and the spline is fitted from ``J(q)`` to ``p``: the image then shows the same shape
moved by ``J``, the particles move with it, and no extra interpolation is needed. Training with it teaches the
network to read the pose that image registration leaves behind (about 1.4 mm on the femurs) instead of assuming the
mean pose.

Example:
    >>> grid = ImageGrid.from_file(groomed.reference_image)                                  # doctest: +SKIP
    >>> bases = [base_scan(s.id, read_particles(s.particles), grid, source=s.source, to_world=s.transform)
    ...          for s in train_subjects]                                                       # doctest: +SKIP
    >>> synth = SampleSynthesizer(bases, grid)                                                 # doctest: +SKIP
    >>> image = synth.warp(0, new_particles)                                  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ._validation import DataError, check_array, check_in_range, look_up_option
from .imageops import ImageGrid
from .tps import INTERPOLATIONS, ThinPlateSpline, warp_field

__all__ = ['BaseScan', 'SampleSynthesizer', 'base_scan', 'random_pose']
_CROP_MARGIN_MM = 16.0  # how far outside the reference box (preimage) a warp may read the original scan


@dataclass
class BaseScan:
    """A real training subject as a warp source.

    Attributes:
        id: Subject id.
        array: (Z, Y, X) float32 voxels.
        grid: Geometry of ``array``.
        to_world: (4, 4) map from ``array``'s physical space to the world (reference) frame.
        particles: (M, 3) the subject's particles in the world frame, mm.
        background: Value outside the scan (its minimum: air in CT); None repeats the edge voxels instead.
    """

    id: str
    array: np.ndarray
    grid: ImageGrid
    to_world: np.ndarray
    particles: np.ndarray
    background: float | None = None
    dtype: np.dtype = np.dtype(np.float32)


def _read(path: Path, what: str) -> tuple[np.ndarray, ImageGrid, np.dtype]:
    import SimpleITK as sitk

    from .io import read_image

    image = read_image(path, name=what)
    view = sitk.GetArrayViewFromImage(image)
    return view.astype(np.float32), ImageGrid.from_image(image), view.dtype


def base_scan(
    subject_id: str,
    particles: np.ndarray,
    reference: ImageGrid,
    *,
    groomed_image: str | Path | None = None,
    source: str | Path | None = None,
    to_world: np.ndarray | None = None,
) -> BaseScan:
    """One warp source: the subject's original scan (``source`` and ``to_world``) or its groomed image.

    Args:
        subject_id: The subject.
        particles: (M, 3) its world-frame particles.
        reference: The reference grid (an original scan is cropped to what the grid can reach).
        groomed_image: Its groomed image file (used when ``source`` is None).
        source: Its original scan file.
        to_world: (4, 4) the grooming transform of ``source`` (original -> world).
    """
    if source is None:
        if groomed_image is None:
            raise DataError(f'subject {subject_id!r}: give its groomed image or its original scan and transform.')
        array, grid, dtype = _read(Path(groomed_image), f'groomed image of {subject_id}')
        return BaseScan(subject_id, array, grid, np.eye(4), np.asarray(particles, float), None, dtype)
    if to_world is None:
        raise DataError(f'subject {subject_id!r}: an original scan needs its grooming transform (to_world).')
    array, grid, dtype = _read(Path(source), f'original scan of {subject_id}')
    to_world = np.asarray(to_world, float)
    array, grid = _crop(array, grid, to_world, reference)
    return BaseScan(subject_id, array, grid, to_world, np.asarray(particles, float), float(array.min()), dtype)


def _crop(
    array: np.ndarray, grid: ImageGrid, to_world: np.ndarray, reference: ImageGrid
) -> tuple[np.ndarray, ImageGrid]:
    """The part of ``array`` that the reference grid (plus a margin) can map onto."""
    corners = np.array(
        [
            [z, y, x]
            for z in (0, reference.shape[0] - 1)
            for y in (0, reference.shape[1] - 1)
            for x in (0, reference.shape[2] - 1)
        ],
        float,
    )
    world = reference.index_to_physical(corners)
    lo_w, hi_w = world.min(0) - _CROP_MARGIN_MM, world.max(0) + _CROP_MARGIN_MM
    box = np.array([[a, b, c] for a in (lo_w[0], hi_w[0]) for b in (lo_w[1], hi_w[1]) for c in (lo_w[2], hi_w[2])])
    back = np.linalg.inv(to_world)
    index = grid.physical_to_index(box @ back[:3, :3].T + back[:3, 3])
    lo = np.clip(np.floor(index.min(0)).astype(int) - 1, 0, None)
    hi = np.minimum(np.ceil(index.max(0)).astype(int) + 2, array.shape)
    if np.any(hi <= lo):
        raise DataError('the reference grid does not overlap the base scan at all; check its grooming transform.')
    crop = np.ascontiguousarray(array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
    origin = grid.index_to_physical(lo.astype(float))
    return crop, ImageGrid(tuple(int(s) for s in crop.shape), origin, grid.spacing, grid.direction)


def random_pose(
    rng: np.random.Generator, *, translation_mm: float, rotation_deg: float, center: np.ndarray
) -> np.ndarray:
    """A random rigid map: rotation about ``center`` (random axis, angle ~ N(0, rotation_deg)) and translation.

    Args:
        rng: The random generator (always 7 normal draws, so streams stay aligned).
        translation_mm: Standard deviation of the translation along each axis, mm.
        rotation_deg: Standard deviation of the rotation angle, degrees.
        center: (3,) point the rotation keeps fixed.

    Returns:
        (4, 4) matrix ``J``; a point ``x`` moves to ``J[:3, :3] @ x + J[:3, 3]``.
    """
    draws = rng.standard_normal(7)
    axis = draws[:3] / max(float(np.linalg.norm(draws[:3])), 1e-12)
    angle = np.deg2rad(rotation_deg) * draws[3]
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)
    c = np.asarray(center, float)
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = c - rot @ c + translation_mm * draws[4:]
    return out


class SampleSynthesizer:
    """Warps base scans onto new shapes, on the reference grid (see the module notes).

    Args:
        bases: The warp sources (:func:`base_scan`).
        grid: The reference grid (the output geometry).
        landmark_step: Every k-th particle is a control point of the spline.
        grid_step, interpolation, kink_radius: How the spline is evaluated (:func:`deepssm_nb.tps.warp_field`).

    Raises:
        DataError: No bases, or bases with different particle counts.
        ConfigError: A parameter out of range.
    """

    def __init__(
        self,
        bases: Sequence[BaseScan],
        grid: ImageGrid,
        *,
        landmark_step: int = 2,
        grid_step: float = 4.0,
        interpolation: str = 'cubic',
        kink_radius: float = 2.0,
    ):
        if not bases:
            raise DataError('SampleSynthesizer needs at least one base scan; got none.')
        counts = {len(b.particles) for b in bases}
        if len(counts) != 1:
            raise DataError(f'the base scans hold different particle counts {sorted(counts)}; expected one count.')
        self.bases = list(bases)
        self.grid = grid
        self.landmark_step = int(check_in_range(landmark_step, name='landmark_step', low=1, integer=True))
        self.grid_step = float(grid_step)
        self.interpolation = look_up_option(interpolation, INTERPOLATIONS, name='interpolation')
        self.kink_radius = float(kink_radius)
        self._maps = [self._index_map(b) for b in self.bases]

    @property
    def num_particles(self) -> int:
        return len(self.bases[0].particles)

    def _index_map(self, base: BaseScan) -> np.ndarray:
        """(4, 4) map from a (z, y, x) index of the reference grid to a (z, y, x) index of the base array."""
        flip = np.eye(4)[[2, 1, 0, 3]]  # (z, y, x, 1) <-> (x, y, z, 1)
        ref = np.eye(4)
        ref[:3, :3], ref[:3, 3] = self.grid.matrix, self.grid.origin
        scan = np.eye(4)
        scan[:3, :3], scan[:3, 3] = base.grid.matrix, base.grid.origin
        return flip @ np.linalg.inv(scan) @ np.linalg.inv(base.to_world) @ ref @ flip

    def warp(self, base: int, particles: np.ndarray) -> np.ndarray:
        """The base scan warped so that its particles move to ``particles``.

        Args:
            base: Index into ``bases``.
            particles: (M, 3) target shape, world frame, mm.

        Returns:
            (Z, Y, X) float32 image on the reference grid.
        """
        b = self.bases[base]
        target = check_array(particles, name='particles', ndim=2, shape=(self.num_particles, 3))
        step = self.landmark_step
        tps = ThinPlateSpline.fit(target[::step], b.particles[::step])
        field = warp_field(
            tps, self.grid, grid_step=self.grid_step, interpolation=self.interpolation, kink_radius=self.kink_radius
        )
        m = self._maps[base].astype(np.float32)
        shape = field.shape[1:]
        out = np.empty(shape, np.float32)
        yy = np.arange(shape[1], dtype=np.float32)[:, None]
        xx = np.arange(shape[2], dtype=np.float32)[None, :]
        mode, cval = ('nearest', 0.0) if b.background is None else ('constant', b.background)
        for z0 in range(0, shape[0], 16):
            f = field[:, z0 : z0 + 16]
            zz = np.arange(z0, z0 + f.shape[1], dtype=np.float32)[:, None, None]
            idx = (f[0] + zz, f[1] + yy, f[2] + xx)
            coords = np.stack([m[a, 0] * idx[0] + m[a, 1] * idx[1] + m[a, 2] * idx[2] + m[a, 3] for a in range(3)])
            out[z0 : z0 + f.shape[1]] = ndimage.map_coordinates(
                b.array, coords, order=1, mode=mode, cval=cval, output=np.float32
            )
        return out
