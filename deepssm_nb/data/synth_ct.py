"""Synthetic CT-like volumes from bone surfaces: a ray-parity voxelizer and a simple CT appearance model.

The voxelizer casts one ray per (x, y) voxel column along +z and counts how often it crosses the surface below
each voxel centre; an odd count means inside. It needs only numpy, handles surfaces that leave the grid, and treats
several disjoint closed surfaces (e.g. two hemipelves) correctly.

The appearance model follows a few rules of thumb of clinical CT (Hounsfield units, HU): air -1000, fat -100,
muscle 40-50, trabecular bone 150-350, cortical bone 1200-1700, fatty marrow near 0. Bone is a cortical shell whose
thickness grows from the epiphysis to the shaft around a textured trabecular interior; the scan adds blur (the point
spread function), a smooth intensity bias, a per-scan intensity scale and offset, and Gaussian noise.

Grids are axis aligned (identity direction). Arrays are indexed ``[z, y, x]`` as ``SimpleITK.GetArrayFromImage``
returns them; points are physical ``(x, y, z)`` in mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    'BoneAppearance',
    'CTAppearance',
    'Grid',
    'bone_intensity',
    'finish_scan',
    'project',
    'soft_tissue',
    'voxelize',
]

# A tiny irrational shift keeps rays off mesh edges and vertices (in voxel units).
_RAY_SHIFT = np.array([np.sqrt(2.0), np.sqrt(3.0)]) * 1e-6


@dataclass(frozen=True)
class Grid:
    """An axis-aligned voxel grid.

    Attributes:
        origin: (3,) physical position (x, y, z) of the centre of voxel [0, 0, 0], mm.
        spacing: Voxel size, mm (isotropic).
        shape: (nz, ny, nx) array shape.
    """

    origin: np.ndarray
    spacing: float
    shape: tuple[int, int, int]

    def to_index(self, points: np.ndarray) -> np.ndarray:
        """Continuous (x, y, z) voxel coordinates of physical points, (N, 3)."""
        return (np.asarray(points) - self.origin) / self.spacing

    def axis_coords(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Physical coordinates of the voxel centres along x, y and z (1D arrays)."""
        nz, ny, nx = self.shape
        o, s = self.origin, self.spacing
        return o[0] + s * np.arange(nx), o[1] + s * np.arange(ny), o[2] + s * np.arange(nz)


def voxelize(vertices: np.ndarray, faces: np.ndarray, grid: Grid) -> np.ndarray:
    """Inside mask of closed surface(s) on a grid, by ray parity along z.

    Args:
        vertices: (V, 3) physical points, mm.
        faces: (F, 3) triangles; several disjoint closed surfaces are allowed. Winding does not matter.
        grid: The voxel grid. The surface may extend beyond it.

    Returns:
        (nz, ny, nx) bool mask: voxel centres inside the surface.
    """
    nz, ny, nx = grid.shape
    v = grid.to_index(vertices)
    v[:, :2] += _RAY_SHIFT
    tri = v[faces]  # (F, 3 corners, xyz)
    lo, hi = tri.min(axis=1), tri.max(axis=1)
    x0 = np.maximum(np.ceil(lo[:, 0]), 0).astype(np.int64)
    x1 = np.minimum(np.floor(hi[:, 0]), nx - 1).astype(np.int64)
    y0 = np.maximum(np.ceil(lo[:, 1]), 0).astype(np.int64)
    y1 = np.minimum(np.floor(hi[:, 1]), ny - 1).astype(np.int64)
    keep = (x1 >= x0) & (y1 >= y0) & (lo[:, 2] < nz - 1)  # crossings above the grid do not matter
    tri, x0, x1, y0, y1 = tri[keep], x0[keep], x1[keep], y0[keep], y1[keep]
    wx, wy = x1 - x0 + 1, y1 - y0 + 1
    counts = wx * wy
    owner = np.repeat(np.arange(len(tri)), counts)
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    cx = x0[owner] + local % wx[owner]
    cy = y0[owner] + local // wx[owner]
    t = tri[owner]
    # 2D barycentric coordinates of the column (cx, cy) in the projected triangle.
    ax, ay = t[:, 0, 0], t[:, 0, 1]
    bx, by = t[:, 1, 0] - ax, t[:, 1, 1] - ay
    qx, qy = t[:, 2, 0] - ax, t[:, 2, 1] - ay
    px, py = cx - ax, cy - ay
    det = bx * qy - by * qx
    safe = np.where(det == 0, 1.0, det)  # edge-on triangles: no crossing
    u = (px * qy - py * qx) / safe
    w = (bx * py - by * px) / safe
    inside = (det != 0) & (u >= 0) & (w >= 0) & (u + w <= 1)
    z = (t[:, 0, 2] + u * (t[:, 1, 2] - t[:, 0, 2]) + w * (t[:, 2, 2] - t[:, 0, 2]))[inside]
    first = np.clip(np.floor(z).astype(np.int64) + 1, 0, nz)  # first voxel centre above the crossing
    flat = (first * ny + cy[inside]) * nx + cx[inside]
    hits = np.bincount(flat, minlength=(nz + 1) * ny * nx)[: nz * ny * nx].astype(np.uint8)
    return (np.cumsum(hits.reshape(nz, ny, nx), axis=0, dtype=np.uint8) & 1).astype(bool)


@dataclass(frozen=True)
class BoneAppearance:
    """Intensities of one bone, HU.

    Attributes:
        cortical: Cortical bone.
        trabecular: Cancellous bone of the ends.
        marrow: Fatty marrow of the shaft.
        texture: SD of the smooth trabecular texture.
    """

    cortical: float
    trabecular: float
    marrow: float
    texture: float = 60.0


@dataclass(frozen=True)
class CTAppearance:
    """Acquisition of one scan.

    Attributes:
        blur_mm: SD of the Gaussian point spread function, mm.
        noise_hu: SD of the additive noise, HU.
        scale: Multiplicative intensity factor of the scanner.
        offset_hu: Additive intensity offset, HU.
        bias_hu: Amplitude of a linear intensity ramp across the field of view, HU.
        bias_direction: (3,) unit direction of that ramp.
    """

    blur_mm: float
    noise_hu: float
    scale: float
    offset_hu: float
    bias_hu: float
    bias_direction: tuple[float, float, float]


def project(grid: Grid, origin: np.ndarray, axes: np.ndarray) -> list[np.ndarray]:
    """Coordinates ``(p - origin) @ axis`` of every voxel centre ``p``, one broadcastable array per row of ``axes``.

    Args:
        grid: The voxel grid.
        origin: (3,) physical point.
        axes: (K, 3) directions.

    Returns:
        K arrays broadcastable to the grid shape (nz, ny, nx).
    """
    gx, gy, gz = grid.axis_coords()
    out = []
    for axis in axes:
        out.append(
            ((gz - origin[2]) * axis[2])[:, None, None]
            + ((gy - origin[1]) * axis[1])[None, :, None]
            + ((gx - origin[0]) * axis[0])[None, None, :]
        )
    return out


def soft_tissue(
    grid: Grid,
    centre: np.ndarray,
    axes: np.ndarray,
    semi_axes: tuple[float, float],
    *,
    fat_mm: float,
    muscle_hu: float = 45.0,
    fat_hu: float = -100.0,
    air_hu: float = -1000.0,
) -> np.ndarray:
    """Body outline as an elliptic cylinder: muscle inside a fat rim, air outside.

    Args:
        grid: The voxel grid.
        centre: (3,) a point on the cylinder axis, mm.
        axes: (2, 3) unit directions of the two semi-axes (perpendicular to the cylinder axis).
        semi_axes: Lengths of the semi-axes, mm.
        fat_mm: Thickness of the subcutaneous fat, mm.
        muscle_hu, fat_hu, air_hu: Intensities.

    Returns:
        (nz, ny, nx) float32 intensities.
    """
    u, v = project(grid, centre, axes)
    r = np.sqrt((u / semi_axes[0]) ** 2 + (v / semi_axes[1]) ** 2).astype(np.float32)
    depth = (1.0 - r) * (0.5 * (semi_axes[0] + semi_axes[1]))
    out = np.where(depth > fat_mm, np.float32(muscle_hu), np.float32(fat_hu))
    return np.where(r < 1.0, out, np.float32(air_hu)).astype(np.float32)


def bone_intensity(
    mask: np.ndarray,
    grid: Grid,
    appearance: BoneAppearance,
    rng: np.random.Generator,
    *,
    cortex_mm: np.ndarray | float,
    marrow_weight: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Intensities inside one bone: cortical shell, textured trabecular interior, marrow.

    Args:
        mask: (nz, ny, nx) bool bone mask (or a crop of it, with ``cortex_mm``/``marrow_weight`` the same crop).
        grid: The grid of ``mask`` (for the spacing).
        appearance: HU values of the bone.
        rng: Random generator for the texture.
        cortex_mm: Cortical thickness, a scalar or an array broadcastable to ``mask``.
        marrow_weight: 0 (trabecular) to 1 (fatty marrow), scalar or broadcastable array.

    Returns:
        float32 array like ``mask``; meaningful only inside it.
    """
    depth = ndimage.distance_transform_edt(mask, sampling=grid.spacing).astype(np.float32)
    sigma = 1.5 / grid.spacing
    texture = ndimage.gaussian_filter(rng.standard_normal(mask.shape, dtype=np.float32), sigma)
    texture *= np.float32(appearance.texture / max(float(texture.std()), 1e-6))
    interior = (appearance.trabecular + texture) * (1.0 - marrow_weight) + appearance.marrow * marrow_weight
    cortical = depth - 0.5 * grid.spacing <= cortex_mm
    return np.where(cortical, np.float32(appearance.cortical), interior).astype(np.float32)


def finish_scan(image: np.ndarray, grid: Grid, scan: CTAppearance, rng: np.random.Generator) -> np.ndarray:
    """Blur, intensity scale/offset/bias, noise, clipping and int16 conversion.

    Args:
        image: (nz, ny, nx) float32 ideal intensities, HU.
        grid: The grid of ``image``.
        scan: Acquisition parameters.
        rng: Random generator for the noise.

    Returns:
        (nz, ny, nx) int16 CT values.
    """
    out = ndimage.gaussian_filter(image, scan.blur_mm / grid.spacing, mode='nearest')
    centre = grid.origin + 0.5 * grid.spacing * (np.array(grid.shape[::-1]) - 1)
    half = 0.5 * grid.spacing * max(grid.shape)
    (ramp,) = project(grid, centre, np.asarray([scan.bias_direction]))
    out = out * np.float32(scan.scale) + np.float32(scan.offset_hu) + (ramp * (scan.bias_hu / half)).astype(np.float32)
    out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(scan.noise_hu)
    return np.clip(np.rint(out), -1024, 3071).astype(np.int16)
