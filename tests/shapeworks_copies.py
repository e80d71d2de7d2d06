"""Rewrite a cohort in ShapeWorks names and other image geometries (tests only).

The anatomy stays where it is in physical space: each image is resampled onto a new grid (tilted, flipped,
anisotropic, int16) that covers the old one, so the particles and meshes still fit it. A *mirrored* subject is the
physical mirror image (x -> -x) of the original: image, particles and mesh alike, as a right femur is of a left one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from deepssm_nb.io import read_particles, write_image, write_particles
from deepssm_nb.meshio import read_mesh, write_mesh

MIRROR = np.diag([-1.0, 1.0, 1.0])
FORMATS = ('.nrrd', '.nii.gz', '.mha')


def rotation(axis, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.radians(degrees)
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


def regrid(image: sitk.Image, direction: np.ndarray, spacing) -> sitk.Image:
    """``image`` resampled (linear, int16) onto a grid with ``direction`` and ``spacing`` covering all of it."""
    size = np.asarray(image.GetSize())
    corners = np.array(
        [
            image.TransformContinuousIndexToPhysicalPoint((np.asarray(c) * (size - 1)).astype(float).tolist())
            for c in np.ndindex(2, 2, 2)
        ]
    )
    local = corners @ direction  # coordinates along the new axes
    lo, hi = local.min(axis=0), local.max(axis=0)
    spacing = np.asarray(spacing, dtype=float)
    new_size = np.ceil((hi - lo) / spacing).astype(int) + 1
    grid = sitk.Image([int(n) for n in new_size], sitk.sitkInt16)
    grid.SetSpacing(spacing.tolist())
    grid.SetDirection(direction.ravel().tolist())
    grid.SetOrigin((direction @ lo).tolist())
    fill = float(sitk.GetArrayViewFromImage(image).min())
    out = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), grid, sitk.Transform(), sitk.sitkLinear, fill)
    return sitk.Cast(sitk.Round(out), sitk.sitkInt16)


def mirrored(image: sitk.Image) -> sitk.Image:
    """The physical mirror image (x -> -x): the same voxels, origin and direction mirrored."""
    out = sitk.Image(image)
    out.SetOrigin((MIRROR @ np.asarray(image.GetOrigin())).tolist())
    out.SetDirection((MIRROR @ np.asarray(image.GetDirection()).reshape(3, 3)).ravel().tolist())
    return out


def write_subject(subject, root: Path, *, mirror: bool, tilt: bool, fmt: str, flat: bool = False) -> dict[str, Path]:
    """One subject's image, mesh and world particles in ShapeWorks names under ``root``; returns the paths.

    ``flat``: all three in ``root`` itself, else in ``images/``, ``meshes/`` and ``particles/``.
    """
    side = 'R' if mirror else 'L'
    stem = f'{subject.id}_{side}_femur'
    image = sitk.ReadImage(str(subject.image))
    if tilt:
        direction = rotation([1, 2, 3], 12.0) @ np.diag([1.0, -1.0, 1.0])  # oblique and flipped
        image = regrid(image, direction, (1.7, 2.1, 2.6))
    vertices, faces, _ = read_mesh(subject.mesh)
    particles = read_particles(subject.particles)
    if mirror:
        image, vertices, particles, faces = mirrored(image), vertices @ MIRROR, particles @ MIRROR, faces[:, ::-1]
    sub = (lambda name: root) if flat else (lambda name: root / name)
    paths = {
        'image': sub('images') / f'{stem}{fmt}',
        'mesh': sub('meshes') / f'{stem}.vtk',
        'particles': sub('particles') / f'{stem}_world.particles',
    }
    write_image(paths['image'], image)
    write_mesh(paths['mesh'], vertices, faces)
    write_particles(paths['particles'], particles)
    return paths


def shapeworks_folder(cohort, root: Path, *, mirror_ids=(), tilt: bool = True) -> Path:
    """The cohort as a ShapeWorks-named folder (no manifest; test subjects in ``test/``), mean shape copied."""
    root.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(cohort):
        test = s.split == 'test'
        write_subject(
            s,
            root / 'test' if test else root,
            mirror=s.id in mirror_ids,
            tilt=tilt,
            fmt=FORMATS[i % len(FORMATS)],
            flat=test,
        )
    for name in ('mean.vtk', 'mean.particles'):
        shutil.copy(cohort.root / name, root / name)
    return root


def swproj(cohort, root: Path, *, mirror_ids=(), tilt: bool = True, local_ids=()) -> Path:
    """The cohort as a ``.swproj`` project (domain ``femur``, image ``ct``), with sides and splits.

    Subjects in ``local_ids`` get local particles (world moved by a known transform) and the transforms instead.
    """
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    A = np.eye(4)
    A[:3, :3], A[:3, 3] = rotation([0, 0, 1], 20.0), [5.0, -3.0, 8.0]
    P = np.eye(4)
    P[:3, 3] = [1.0, 2.0, -1.5]
    for i, s in enumerate(cohort):
        mirror = s.id in mirror_ids
        paths = write_subject(s, root, mirror=mirror, tilt=tilt, fmt=FORMATS[i % len(FORMATS)])
        row = {
            'name': s.id,
            'image_ct': paths['image'].relative_to(root).as_posix(),
            'shape_femur': paths['mesh'].relative_to(root).as_posix(),
            'side': 'R' if mirror else 'L',
            'split': s.split,
        }
        if s.id in local_ids:
            world = read_particles(paths['particles'])
            to_local = np.linalg.inv(P @ A)
            local = root / 'particles' / f'{s.id}_local.particles'
            write_particles(local, world @ to_local[:3, :3].T + to_local[:3, 3])
            paths['particles'].unlink()
            row.update(
                local_particles_femur=local.relative_to(root).as_posix(),
                alignment_femur=' '.join(f'{v:.12g}' for v in A.ravel()),
                procrustes_femur=' '.join(f'{v:.12g}' for v in P.ravel()),
            )
        else:
            row['world_particles_femur'] = paths['particles'].relative_to(root).as_posix()
        rows.append(row)
    for name in ('mean.vtk', 'mean.particles'):
        shutil.copy(cohort.root / name, root / name)
    path = root / 'femur.swproj'
    path.write_text(json.dumps({'data': rows, 'project': {'version': 2}}, indent=2))
    return path
