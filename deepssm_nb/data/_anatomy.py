"""Femur anatomy found from the data: axes, femoral head, shaft, cut landmarks and particle positions.

Everything here is computed once on the mean shape and expressed either as vertex indices or as (face, barycentric)
points of the shared triangulation, so that it transfers to every subject exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import meshops

__all__ = ['FemurAnatomy', 'SubjectFrame', 'find_anatomy', 'subject_frame']


@dataclass(frozen=True)
class FemurAnatomy:
    """The proximal-femur definition shared by all subjects.

    Attributes:
        superior: (3,) unit long axis of the mean femur, pointing to the hip.
        medial: (3,) unit direction from the femur towards the pelvis, perpendicular to ``superior``.
        anterior_posterior: (3,) ``cross(superior, medial)``.
        head_vertices: (H,) vertex indices of the femoral head surface.
        shaft_vertices: (S,) vertex indices of the mid-shaft band (defines the shaft axis).
        landmark_faces: (3,) faces of the three cut landmarks.
        landmark_bary: (3, 3) their barycentric coordinates.
        cut_below_head_mm: Distance of the cut plane below the head centre on the mean, along the shaft.
        particle_faces: (M,) faces of the particles.
        particle_bary: (M, 3) barycentric coordinates of the particles.
    """

    superior: np.ndarray
    medial: np.ndarray
    anterior_posterior: np.ndarray
    head_vertices: np.ndarray
    shaft_vertices: np.ndarray
    landmark_faces: np.ndarray
    landmark_bary: np.ndarray
    cut_below_head_mm: float
    particle_faces: np.ndarray
    particle_bary: np.ndarray


@dataclass(frozen=True)
class SubjectFrame:
    """Per-subject measurements.

    Attributes:
        head_centre: (3,) centre of the sphere fitted to the head vertices, mm.
        head_radius: Its radius, mm.
        shaft_point: (3,) a point on the shaft axis (centroid of the shaft band), mm.
        shaft_axis: (3,) unit shaft direction, pointing up (to the head).
        plane_point: (3,) centroid of the three landmarks: a point of the cut plane.
        plane_normal: (3,) unit normal of the cut plane, pointing to the head (the kept side).
        length_mm: Length of the whole femur along ``shaft_axis``.
        offset_mm: Femoral offset: distance from the head centre to the shaft axis.
    """

    head_centre: np.ndarray
    head_radius: float
    shaft_point: np.ndarray
    shaft_axis: np.ndarray
    plane_point: np.ndarray
    plane_normal: np.ndarray
    length_mm: float
    offset_mm: float


def _principal_axis(points: np.ndarray) -> np.ndarray:
    centred = points - points.mean(axis=0)
    return np.linalg.eigh(centred.T @ centred)[1][:, -1]


def _head_vertices(vertices: np.ndarray, superior: np.ndarray, medial: np.ndarray, length: float) -> np.ndarray:
    """Vertices of the femoral head: a sphere fit grown from the most superior-medial point."""
    score = vertices @ superior + vertices @ medial
    top = vertices[np.argmax(score)]
    chosen = np.flatnonzero(np.linalg.norm(vertices - top, axis=1) < 0.06 * length)
    for _ in range(6):
        centre, radius = meshops.fit_sphere(vertices[chosen])
        dist = np.linalg.norm(vertices - centre, axis=1)
        # The head is the sphere-like cap beyond the neck: on the sphere and away from the neck (inferolateral).
        beyond = (vertices - centre) @ (superior + medial) > -0.3 * np.sqrt(2.0) * radius
        chosen = np.flatnonzero((np.abs(dist - radius) < 0.08 * radius) & beyond)
    return chosen


def subject_frame(vertices: np.ndarray, faces: np.ndarray, anatomy: FemurAnatomy) -> SubjectFrame:
    """Measure one subject (or the mean) through the shared definitions of ``anatomy``."""
    head_centre, head_radius = meshops.fit_sphere(vertices[anatomy.head_vertices])
    shaft = vertices[anatomy.shaft_vertices]
    shaft_point = shaft.mean(axis=0)
    shaft_axis = _principal_axis(shaft)
    shaft_axis *= np.sign((head_centre - shaft_point) @ shaft_axis)
    marks = meshops.barycentric_points(vertices, faces, anatomy.landmark_faces, anatomy.landmark_bary)
    normal = np.cross(marks[1] - marks[0], marks[2] - marks[0])
    normal /= np.linalg.norm(normal)
    plane_point = marks.mean(axis=0)
    normal *= np.sign((head_centre - plane_point) @ normal)
    along = (vertices - shaft_point) @ shaft_axis
    radial = (head_centre - shaft_point) - ((head_centre - shaft_point) @ shaft_axis) * shaft_axis
    return SubjectFrame(
        head_centre=head_centre,
        head_radius=head_radius,
        shaft_point=shaft_point,
        shaft_axis=shaft_axis,
        plane_point=plane_point,
        plane_normal=normal,
        length_mm=float(along.max() - along.min()),
        offset_mm=float(np.linalg.norm(radial)),
    )


def find_anatomy(
    mean_femur: np.ndarray,
    faces: np.ndarray,
    mean_pelvis: np.ndarray,
    all_femurs: np.ndarray,
    num_particles: int,
    rng: np.random.Generator,
    *,
    cut_below_head_mm: float = 80.0,
    margin_mm: float = 3.0,
    dense_per_particle: int = 30,
) -> FemurAnatomy:
    """Define the proximal femur on the mean shape.

    * Long axis: principal axis of the vertices; its sign points to the end nearer the pelvis.
    * Medial: towards the pelvis centroid, perpendicular to the long axis.
    * Head: sphere fit grown from the most superior-medial vertex.
    * Shaft axis: principal axis of the band 30-60 % of the length below the head.
    * Cut: the plane perpendicular to the shaft, ``cut_below_head_mm`` below the head centre, fixed on the
      surface by three landmarks (rays from the shaft axis at 120 degrees); each subject is cut through its own.
    * Particles: area-uniform dense sample of the faces lying above every subject's plane by ``margin_mm``,
      thinned by farthest-point sampling to ``num_particles``.

    Args:
        mean_femur: (V, 3) mean femur vertices.
        faces: (F, 3) shared faces (closed, outward).
        mean_pelvis: (P, 3) mean pelvis vertices (only its centroid is used).
        all_femurs: (N, V, 3) every subject of the source, to keep particle faces above every subject's plane.
        num_particles: M.
        rng: Random generator of the dense sample.
        cut_below_head_mm: Cut distance below the head centre, along the shaft (mean shape), mm.
        margin_mm: Minimum height of particle faces above the cut plane, mm.
        dense_per_particle: Size of the dense sample per particle.

    Returns:
        The shared definition.

    Raises:
        ValueError: The shapes do not look like a femur next to a pelvis, or there are too few faces for M.
    """
    superior = _principal_axis(mean_femur)
    superior *= np.sign((mean_pelvis.mean(axis=0) - mean_femur.mean(axis=0)) @ superior)
    to_pelvis = mean_pelvis.mean(axis=0) - mean_femur.mean(axis=0)
    medial = to_pelvis - (to_pelvis @ superior) * superior
    if np.linalg.norm(medial) < 1e-6:
        raise ValueError('the pelvis centroid lies on the femur long axis; cannot tell medial from lateral.')
    medial /= np.linalg.norm(medial)
    ap = np.cross(superior, medial)
    along = mean_femur @ superior
    length = float(along.max() - along.min())
    head = _head_vertices(mean_femur, superior, medial, length)
    if len(head) < 10:
        raise ValueError(f'found only {len(head)} femoral head vertices; is this a femur?')
    head_centre, _ = meshops.fit_sphere(mean_femur[head])
    depth = (head_centre - mean_femur) @ superior  # mm below the head centre
    shaft = np.flatnonzero((depth > 0.3 * length) & (depth < 0.6 * length))
    shaft_point = mean_femur[shaft].mean(axis=0)
    shaft_axis = _principal_axis(mean_femur[shaft])
    shaft_axis *= np.sign(shaft_axis @ superior)

    # Three landmarks on the cut section of the mean.
    centre = shaft_point + ((head_centre - shaft_point) @ shaft_axis - cut_below_head_mm) * shaft_axis
    u = medial - (medial @ shaft_axis) * shaft_axis
    u /= np.linalg.norm(u)
    v = np.cross(shaft_axis, u)
    hits = [
        meshops.intersect_ray(mean_femur, faces, centre, np.cos(a) * u + np.sin(a) * v)
        for a in np.deg2rad([90.0, 210.0, 330.0])
    ]
    landmark_faces = np.array([h[0] for h in hits])
    landmark_bary = np.array([h[1] for h in hits])

    # Faces above every subject's own plane (and the mean's) by the margin.
    probe = FemurAnatomy(
        superior,
        medial,
        ap,
        head,
        shaft,
        landmark_faces,
        landmark_bary,
        cut_below_head_mm,
        np.zeros(0, int),
        np.zeros((0, 3)),
    )
    ok = np.ones(len(faces), dtype=bool)
    for verts in [mean_femur, *all_femurs]:
        frame = subject_frame(verts, faces, probe)
        height = (verts - frame.plane_point) @ frame.plane_normal
        ok &= np.all(height[faces] > margin_mm, axis=1)
    candidates = np.flatnonzero(ok)
    if len(candidates) < num_particles:
        raise ValueError(
            f'only {len(candidates)} faces lie above the cut; num_particles={num_particles} is '
            'too many for this mesh resolution.'
        )
    n_dense = max(dense_per_particle * num_particles, 20000)
    face_index, bary = meshops.sample_surface(mean_femur, faces, n_dense, rng, face_subset=candidates)
    dense = meshops.barycentric_points(mean_femur, faces, face_index, bary)
    start = int(np.argmax(dense @ superior))  # begin at the top of the head
    keep = meshops.farthest_point_sampling(dense, num_particles, start=start)
    return FemurAnatomy(
        superior,
        medial,
        ap,
        head,
        shaft,
        landmark_faces,
        landmark_bary,
        cut_below_head_mm,
        face_index[keep],
        bary[keep],
    )
