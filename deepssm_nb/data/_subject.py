"""One subject of the femur cohort: its geometry (cut, particles, pose, field of view) and its files.

:func:`plan_subject` is cheap and runs in the main process; :func:`write_subject` synthesizes the CT volume and
writes the four files, in a worker process when several subjects are built in parallel. Every random choice comes
from the subject's own ``SeedSequence``, so a subject's files do not depend on the other subjects, on the number of
processes or on the order in which work finishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import io
from ..meshio import write_mesh
from . import meshops, synth_ct
from ._anatomy import FemurAnatomy, subject_frame

__all__ = [
    'SubjectPlan',
    'child_seed',
    'plan_subject',
    'rotation_matrix',
    'subject_paths',
    'synthesize',
    'write_subject',
]

MAX_ROTATION_DEG = 10.0  # random pose: uniform in +-10 degrees about each axis
MAX_SHIFT_MM = 40.0  # random position of the femur in scanner coordinates
MARGIN_MM = (15.0, 45.0)  # field of view: proximal femur bounding box plus this margin per side


@dataclass
class SubjectPlan:
    """Everything needed to write one subject (all coordinates in the subject's image space, mm).

    Attributes:
        id: Subject id.
        index: Index in the shape source (selects the subject's seed).
        split: ``'train'`` or ``'test'``.
        seed: The subject's ``SeedSequence`` (its children drive the pose and the appearance).
        femur: (Vf, 3) whole posed femur.
        femur_faces: (Ff, 3).
        pelvis: (Vp, 3) posed pelvis.
        pelvis_faces: (Fp, 3).
        mesh_vertices, mesh_faces: The capped proximal femur.
        particles: (M, 3).
        grid: The image grid.
        rotation: (3, 3) rotation of the pose; ``translation`` (3,): ``p_image = rotation @ p_model + translation``.
        info: JSON-ready measurements recorded in ``cohort.json``.
    """

    id: str
    index: int
    split: str
    seed: np.random.SeedSequence
    femur: np.ndarray
    femur_faces: np.ndarray
    pelvis: np.ndarray
    pelvis_faces: np.ndarray
    mesh_vertices: np.ndarray
    mesh_faces: np.ndarray
    particles: np.ndarray
    grid: synth_ct.Grid
    rotation: np.ndarray
    translation: np.ndarray
    info: dict


def child_seed(seed: np.random.SeedSequence, k: int) -> np.random.SeedSequence:
    """The k-th child of ``seed`` (as ``seed.spawn`` would give it, without changing ``seed``)."""
    return np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, k), pool_size=seed.pool_size)


def rotation_matrix(angles_deg: np.ndarray) -> np.ndarray:
    """Rotation ``Rz @ Ry @ Rx`` from angles about x, y and z (degrees)."""
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def plan_subject(
    subject_id: str,
    index: int,
    split: str,
    seed: np.random.SeedSequence,
    femur: np.ndarray,
    femur_faces: np.ndarray,
    pelvis: np.ndarray,
    pelvis_faces: np.ndarray,
    anatomy: FemurAnatomy,
    spacing: float,
) -> SubjectPlan:
    """Cut, particles, random pose and field of view of one subject (model-frame meshes in, image space out).

    Raises:
        ValueError: A particle is not above the subject's own cut plane, or the cut is invalid.
    """
    frame = subject_frame(femur, femur_faces, anatomy)
    mesh_v, mesh_f, _ = meshops.clip_and_cap(femur, femur_faces, frame.plane_point, frame.plane_normal)
    particles = meshops.barycentric_points(femur, femur_faces, anatomy.particle_faces, anatomy.particle_bary)
    heights = (particles - frame.plane_point) @ frame.plane_normal
    if heights.min() <= 0:
        raise ValueError(
            f'subject {subject_id}: particle {int(np.argmin(heights))} lies {heights.min():.2f} mm '
            'below its own cut plane.'
        )

    rng = np.random.default_rng(child_seed(seed, 0))
    angles = rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, 3)
    shift = rng.uniform(-MAX_SHIFT_MM, MAX_SHIFT_MM, 3)
    margins = rng.uniform(*MARGIN_MM, size=(2, 3))
    rot = rotation_matrix(angles)
    centre = mesh_v.mean(axis=0)
    translation = centre + shift - rot @ centre

    def pose(p: np.ndarray) -> np.ndarray:
        return p @ rot.T + translation

    mesh_posed = pose(mesh_v)
    lo = mesh_posed.min(axis=0) - margins[0]
    hi = mesh_posed.max(axis=0) + margins[1]
    size = np.ceil((hi - lo) / spacing).astype(int) + 1
    grid = synth_ct.Grid(origin=lo, spacing=float(spacing), shape=(int(size[2]), int(size[1]), int(size[0])))
    head = pose(frame.head_centre)
    info = {
        'id': subject_id,
        'source_index': index,
        'split': split,
        'rotation_deg': angles.round(4).tolist(),
        'shift_mm': shift.round(4).tolist(),
        'model_to_image': np.vstack([np.column_stack([rot, translation]), [0, 0, 0, 1]]).round(9).tolist(),
        'margin_low_mm': margins[0].round(3).tolist(),
        'margin_high_mm': margins[1].round(3).tolist(),
        'image_size': [int(s) for s in size],
        'image_origin': lo.round(6).tolist(),
        'head_centre': head.round(4).tolist(),
        'head_diameter_mm': round(2 * frame.head_radius, 3),
        'femoral_offset_mm': round(frame.offset_mm, 3),
        'femur_length_mm': round(frame.length_mm, 3),
        'cut_point': pose(frame.plane_point).round(4).tolist(),
        'cut_normal': (rot @ frame.plane_normal).round(6).tolist(),
        'min_particle_height_mm': round(float(heights.min()), 3),
        'shaft_axis': (rot @ frame.shaft_axis).round(6).tolist(),
        'medial': (rot @ anatomy.medial).round(6).tolist(),
        'anterior_posterior': (rot @ anatomy.anterior_posterior).round(6).tolist(),
    }
    return SubjectPlan(
        subject_id,
        index,
        split,
        seed,
        pose(femur),
        femur_faces,
        pose(pelvis),
        pelvis_faces,
        mesh_posed,
        mesh_f,
        pose(particles),
        grid,
        rot,
        translation,
        info,
    )


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def synthesize(plan: SubjectPlan) -> tuple[np.ndarray, np.ndarray]:
    """The CT-like volume (int16) and the segmentation (uint8) of one subject, both (nz, ny, nx)."""
    from scipy import ndimage

    grid, info = plan.grid, plan.info
    rng = np.random.default_rng(child_seed(plan.seed, 1))
    femur = synth_ct.voxelize(plan.femur, plan.femur_faces, grid)
    pelvis = synth_ct.voxelize(plan.pelvis, plan.pelvis_faces, grid) & ~femur
    # Joint space (cartilage, soft-tissue density) between the femoral head and the acetabulum.
    gap = info['head_diameter_mm'] / 2 + rng.uniform(1.5, 3.0)
    dx, dy, dz = synth_ct.project(grid, np.asarray(info['head_centre']), np.eye(3))
    pelvis &= dx * dx + dy * dy + dz * dz > gap * gap
    normal, cut = np.asarray(info['cut_normal']), np.asarray(info['cut_point'])
    above = synth_ct.project(grid, cut, normal[None])[0] > 0
    segmentation = (femur & above).astype(np.uint8)

    # Soft tissue: an elliptic body outline centred on the pelvis, reaching beyond the greater trochanter.
    medial, ap = np.asarray(info['medial']), np.asarray(info['anterior_posterior'])
    body_centre = plan.pelvis.mean(axis=0)
    lateral_reach = float(np.max((body_centre - plan.femur) @ medial))
    ap_reach = float(np.max(np.abs((plan.pelvis - body_centre) @ ap)))
    semi = (lateral_reach + rng.uniform(25, 60), ap_reach + rng.uniform(15, 40))
    image = synth_ct.soft_tissue(
        grid, body_centre, np.stack([medial, ap]), semi, fat_mm=rng.uniform(4, 18), muscle_hu=rng.uniform(35, 55)
    )

    # Bone: cortical thickness and marrow fraction grow with the distance below the head centre.
    scale = info['femur_length_mm'] / 430.0
    cortical = rng.uniform(1200, 1700)
    femur_look = synth_ct.BoneAppearance(cortical, rng.uniform(180, 320), rng.uniform(-30, 40))
    pelvis_look = synth_ct.BoneAppearance(cortical * rng.uniform(0.85, 1.0), rng.uniform(180, 320), 0.0)
    shaft_cortex = rng.uniform(4.0, 6.0) * scale
    for mask, look, is_femur in ((pelvis, pelvis_look, False), (femur, femur_look, True)):
        box = ndimage.find_objects(mask.astype(np.uint8))
        if not box:
            continue
        box = box[0]
        sub = synth_ct.Grid(
            grid.origin + grid.spacing * np.array([box[2].start, box[1].start, box[0].start]),
            grid.spacing,
            mask[box].shape,
        )
        if is_femur:
            below = synth_ct.project(sub, np.asarray(info['head_centre']), -np.asarray(info['shaft_axis'])[None])[0]
            cortex = 1.0 * scale + (shaft_cortex - 1.0 * scale) * _smoothstep((below - 30 * scale) / (60 * scale))
            marrow = _smoothstep((below - 60 * scale) / (60 * scale))
        else:
            cortex, marrow = rng.uniform(1.0, 1.6), 0.0
        values = synth_ct.bone_intensity(mask[box], sub, look, rng, cortex_mm=cortex, marrow_weight=marrow)
        image[box] = np.where(mask[box], values, image[box])

    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    scan = synth_ct.CTAppearance(
        blur_mm=rng.uniform(0.5, 0.9),
        noise_hu=rng.uniform(15, 30),
        scale=rng.uniform(0.95, 1.05),
        offset_hu=rng.uniform(-20, 20),
        bias_hu=rng.uniform(0, 40),
        bias_direction=tuple(direction),
    )
    return synth_ct.finish_scan(image, grid, scan, rng), segmentation


def subject_paths(root: Path, subject_id: str) -> dict[str, Path]:
    """The four files of a subject, keyed ``image``, ``segmentation``, ``mesh``, ``particles``."""
    return {
        'image': root / 'images' / f'{subject_id}.nrrd',
        'segmentation': root / 'segmentations' / f'{subject_id}.nrrd',
        'mesh': root / 'meshes' / f'{subject_id}.vtk',
        'particles': root / 'particles' / f'{subject_id}.particles',
    }


def write_subject(plan: SubjectPlan, root: Path) -> str:
    """Synthesize and write a subject's image, segmentation, mesh and particles (each file atomically)."""
    import SimpleITK as sitk

    paths = subject_paths(root, plan.id)
    image, segmentation = synthesize(plan)
    write_mesh(paths['mesh'], plan.mesh_vertices, plan.mesh_faces)
    io.write_particles(paths['particles'], plan.particles)
    for key, array in (('segmentation', segmentation), ('image', image)):
        img = sitk.GetImageFromArray(array)
        img.SetOrigin(tuple(float(v) for v in plan.grid.origin))
        img.SetSpacing((plan.grid.spacing,) * 3)
        io.write_image(paths[key], img)
    return plan.id
