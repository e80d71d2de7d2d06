"""Triangle-mesh geometry in plain numpy: areas, volumes, sampling, sphere fits, rays and a capped plane cut.

A mesh is a pair ``(vertices (V, 3) float, faces (F, 3) int)``. Points on a mesh are given as ``(face, barycentric)``
pairs, which stay meaningful on every mesh that shares the face array: that is how correspondence is carried from
the mean shape to each subject.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    'barycentric_points',
    'clip_and_cap',
    'edge_counts',
    'face_areas',
    'farthest_point_sampling',
    'fit_sphere',
    'intersect_ray',
    'is_closed',
    'sample_surface',
    'signed_volume',
]


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Areas of the triangles, (F,)."""
    tri = vertices[faces]
    return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Enclosed volume of a closed mesh; positive when the faces are wound outwards."""
    tri = vertices[faces]
    return float(np.einsum('ij,ij->i', tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)


def edge_counts(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undirected edges (E, 2) and how many faces use each, (E,)."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1).astype(np.int64)
    n = int(edges.max()) + 1
    keys, counts = np.unique(edges[:, 0] * n + edges[:, 1], return_counts=True)
    return np.stack([keys // n, keys % n], axis=1), counts


def is_closed(faces: np.ndarray) -> bool:
    """True when every edge is shared by exactly two faces with opposite directions (watertight, oriented)."""
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).astype(np.int64)
    n = int(directed.max()) + 1
    _, dir_counts = np.unique(directed[:, 0] * n + directed[:, 1], return_counts=True)
    _, counts = edge_counts(faces)
    return bool(np.all(counts == 2) and np.all(dir_counts == 1))


def barycentric_points(vertices: np.ndarray, faces: np.ndarray, face_index: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Points given as (face, barycentric) pairs on a mesh.

    Args:
        vertices: (V, 3) or (N, V, 3) for N meshes sharing ``faces``.
        faces: (F, 3).
        face_index: (M,) face of each point.
        bary: (M, 3) barycentric weights (rows sum to 1).

    Returns:
        (M, 3), or (N, M, 3) for stacked meshes.
    """
    tri = vertices[..., faces[face_index], :]  # (..., M, 3, 3)
    return np.einsum('...mkd,mk->...md', tri, bary)


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator, *, face_subset: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform random points on (a subset of) the faces.

    Args:
        vertices: (V, 3).
        faces: (F, 3).
        n: Number of points.
        rng: Random generator.
        face_subset: Indices of the faces to sample from (default: all).

    Returns:
        ``(face_index (n,), bary (n, 3))``.
    """
    subset = np.arange(len(faces)) if face_subset is None else np.asarray(face_subset)
    areas = face_areas(vertices, faces[subset])
    cdf = np.cumsum(areas)
    picks = np.searchsorted(cdf, rng.uniform(0.0, cdf[-1], n), side='right')
    face_index = subset[np.minimum(picks, len(subset) - 1)]
    r1, r2 = rng.uniform(size=(2, n))
    s = np.sqrt(r1)
    bary = np.stack([1.0 - s, s * (1.0 - r2), s * r2], axis=1)
    return face_index, bary


def farthest_point_sampling(points: np.ndarray, m: int, *, start: int = 0) -> np.ndarray:
    """Indices of ``m`` points chosen greedily, each the farthest from those already chosen.

    Args:
        points: (N, 3).
        m: Number of points to keep (``m <= N``).
        start: Index of the first point.

    Returns:
        (m,) int indices into ``points``.
    """
    if m > len(points):
        raise ValueError(f'm must be <= the number of points ({len(points)}); got {m}.')
    x, y, z = (np.ascontiguousarray(points[:, k]) for k in range(3))
    chosen = np.empty(m, dtype=np.int64)
    chosen[0] = start
    dist = np.full(len(points), np.inf)
    for k in range(m):
        if k:
            chosen[k] = int(np.argmax(dist))
        i = chosen[k]
        np.minimum(dist, (x - x[i]) ** 2 + (y - y[i]) ** 2 + (z - z[i]) ** 2, out=dist)
    return chosen


def fit_sphere(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares sphere through (N, 3) points; returns ``(centre (3,), radius)``."""
    a = np.column_stack([2.0 * points, np.ones(len(points))])
    b = np.sum(points**2, axis=1)
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    centre = sol[:3]
    return centre, float(np.sqrt(sol[3] + centre @ centre))


def intersect_ray(
    vertices: np.ndarray, faces: np.ndarray, origin: np.ndarray, direction: np.ndarray
) -> tuple[int, np.ndarray, float]:
    """Nearest hit of a ray with a mesh (Moeller-Trumbore on all faces at once).

    Returns:
        ``(face, bary (3,), distance)`` of the nearest intersection in front of ``origin``.

    Raises:
        ValueError: The ray misses the mesh.
    """
    tri = vertices[faces]
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    pvec = np.cross(direction, e2)
    det = np.einsum('ij,ij->i', e1, pvec)
    ok = np.abs(det) > 1e-12
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    tvec = origin - tri[:, 0]
    u = np.einsum('ij,ij->i', tvec, pvec) * inv
    qvec = np.cross(tvec, e1)
    v = (qvec @ direction) * inv
    t = np.einsum('ij,ij->i', e2, qvec) * inv
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    if not np.any(hit):
        raise ValueError(
            f'the ray from {origin.round(2).tolist()} along {direction.round(3).tolist()} misses the mesh.'
        )
    idx = np.flatnonzero(hit)
    best = idx[np.argmin(t[idx])]
    return int(best), np.array([1.0 - u[best] - v[best], u[best], v[best]]), float(t[best])


def clip_and_cap(
    vertices: np.ndarray, faces: np.ndarray, point: np.ndarray, normal: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep the part of a closed mesh on the side of ``normal`` and close the cut with a flat cap.

    Faces entirely on the kept side are kept unchanged (same vertices, so points given as (face, barycentric) on
    them stay exact); faces crossing the plane are split; the cut loop is closed by a fan of triangles around its
    centroid, wound so that the cap's normal is ``-normal`` (outwards).

    Args:
        vertices: (V, 3).
        faces: (F, 3), closed and wound outwards.
        point: (3,) a point of the plane.
        normal: (3,) unit normal; the kept side is ``(x - point) @ normal > 0``.

    Returns:
        ``(new_vertices (V', 3), new_faces (F', 3), kept_faces (K,))`` where ``kept_faces`` are the indices of the
        input faces kept unchanged; they are the first K rows of ``new_faces`` (re-indexed).

    Raises:
        ValueError: The cut is not one loop around a star-shaped section (the cap would be invalid).
    """
    d = (vertices - point) @ normal
    d = np.where(d == 0.0, 1e-9, d)
    above = d > 0
    n_above = above[faces].sum(axis=1)
    kept = np.flatnonzero(n_above == 3)
    cross = np.flatnonzero((n_above == 1) | (n_above == 2))
    if len(cross) == 0:
        raise ValueError('the plane does not cut the mesh.')

    # Rotate each crossing face (keeping its winding) so its odd vertex comes first.
    cf = faces[cross]
    ca = above[cf]
    odd = np.where(n_above[cross][:, None] == 1, ca, ~ca)
    shift = np.argmax(odd, axis=1)
    order = (shift[:, None] + np.arange(3)) % 3
    cf = np.take_along_axis(cf, order, axis=1)
    one_above = n_above[cross] == 1
    a, b, c = cf[:, 0], cf[:, 1], cf[:, 2]

    # New vertices on the cut edges (a-b and c-a), shared between neighbouring faces.
    edges = np.concatenate([np.stack([a, b], 1), np.stack([c, a], 1)])
    keys = np.sort(edges, axis=1).astype(np.int64)
    uniq, inverse = np.unique(keys[:, 0] * len(vertices) + keys[:, 1], return_inverse=True)
    inverse = inverse.reshape(-1)
    p, q = uniq // len(vertices), uniq % len(vertices)
    w = (d[p] / (d[p] - d[q]))[:, None]
    cut_points = vertices[p] + w * (vertices[q] - vertices[p])
    base = len(vertices)
    e_ab = base + inverse[: len(cross)]
    e_ca = base + inverse[len(cross) :]

    tris = [np.stack([a, e_ab, e_ca], 1)[one_above]]  # odd vertex above: one triangle
    two = ~one_above  # odd vertex below: a quad (b, c, e_ca, e_ab)
    tris += [np.stack([b, c, e_ca], 1)[two], np.stack([b, e_ca, e_ab], 1)[two]]
    # Directed boundary edges of the clipped surface; the cap uses them reversed.
    boundary = np.concatenate([np.stack([e_ab, e_ca], 1)[one_above], np.stack([e_ca, e_ab], 1)[two]])

    all_vertices = np.concatenate([vertices, cut_points])
    loop = all_vertices[boundary[:, 0]]
    centroid = loop.mean(axis=0)
    centre_index = len(all_vertices)
    all_vertices = np.concatenate([all_vertices, centroid[None]])
    cap = np.stack([np.full(len(boundary), centre_index), boundary[:, 1], boundary[:, 0]], 1)
    cap_tri = all_vertices[cap]
    cap_normals = np.cross(cap_tri[:, 1] - cap_tri[:, 0], cap_tri[:, 2] - cap_tri[:, 0])
    if np.any(cap_normals @ normal >= 0) or len(np.unique(boundary[:, 0])) != len(boundary):
        raise ValueError('the cut is not a single loop around a star-shaped section; move the plane.')

    new_faces = np.concatenate([faces[kept]] + tris + [cap])
    used = np.unique(new_faces)
    remap = np.full(len(all_vertices), -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    new_faces = remap[new_faces]
    if not is_closed(new_faces):
        raise ValueError('the capped surface is not closed; the cut crosses the surface more than once.')
    return all_vertices[used], new_faces.astype(np.int64), kept
