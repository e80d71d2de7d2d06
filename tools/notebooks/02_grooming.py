"""Generate notebooks/02_grooming.ipynb."""

from nbgen import code, md, params, write

cells = [
    md("""
# 02 · Grooming: one reference grid for every image

A network with fully connected layers needs every input image on the same voxel grid, with the femur in the same
place. Grooming aligns the training shapes to pick a reference image and grid, registers every other image to that
reference, and keeps each transform so that predictions can go back to the original image.

**You will learn**
- how a Procrustes fit aligns the training shapes, and which subject becomes the reference;
- how the reference grid is chosen (spacing, union bounding box, padding) and why the fill value is air, not 0;
- how an image is registered to the reference in three stages, and why training images go the same way as test
  images;
- what the 4x4 transform `T` means (`p_world = T @ p_original`) and how to go back with its inverse;
- how accurate the registration is, measured against the true particles of the test subjects.

Prerequisites: [01 · The femur cohort](01_femur_data.ipynb) (this notebook builds the cohort if it is missing).
"""),
    md("""
## Setup
"""),
    code("""
%matplotlib inline
import time

import numpy as np

import deepssm_nb
from deepssm_nb import groom, pipeline, registration
from deepssm_nb.viz import groom as viz

deepssm_nb.print_config()
"""),
    md("""
## Parameters
`None` keeps the profile's value: the `workshop` profile grooms onto a 2 mm grid with 10 mm padding, `smoke` onto a
4 mm grid.
"""),
    params("""
profile = 'workshop'   # 'smoke' (seconds), 'workshop' (CPU laptop), 'full' (GPU)
work_dir = '../deepssm_output'
data_dir = None
spacing = None         # voxel size of the reference grid, mm
padding = None         # margin around the union bounding box, mm
reference = None       # 'medoid' or a training subject id
mask_margin = None     # registration looks only this close (mm) to the reference femur; 0 = whole box
processes = None       # worker processes
"""),
    code("""
cfg = deepssm_nb.notebook_config(profile, work_dir, data_dir, {
    'groom.spacing': spacing,
    'groom.padding': padding,
    'groom.reference': reference,
    'groom.mask_margin': mask_margin,
    'groom.processes': processes,
})  # a None keeps the profile's value
cohort = pipeline.ensure(cfg, 'cohort')
"""),
    md("""
## Align the training shapes
Each subject's particles are in its own image's coordinates: the femurs sit in different places and poses. A
generalised Procrustes fit finds, for every training shape, the rotation, translation and one isotropic scale that
bring it closest to the mean shape (`procrustes_scaling = False` leaves out the scale). The spread of the particles
around the mean drops from the pose-driven centimetres to the millimetres of real shape variation.
"""),
    code("""
particles = cohort.particles('train')                      # (N, M, 3), each in its own image frame
transforms, mean = registration.generalized_procrustes(particles, scaling=cfg.groom.procrustes_scaling)
aligned = np.stack([registration.apply_transform(T, x) for T, x in zip(transforms, particles)])
rms = lambda x: np.sqrt(((x - x.mean(axis=0)) ** 2).sum(-1).mean())
print(f'RMS distance to the mean shape: {rms(particles):.1f} mm before, {rms(aligned):.2f} mm after alignment')
"""),
    md("""
## Groom the cohort
`run_grooming` does the whole step: the Procrustes fit, the choice of the reference (the *medoid*, the training
subject closest to the mean, unless `reference` names one), the reference grid (isotropic `spacing`, identity
direction, the union bounding box of the aligned training meshes plus `padding`), and one transform per image.

How should the training images be aligned? A new image has no particles, so it can only be registered by its
intensities, and image registration does not land exactly where the particle-based Procrustes fit would (about a
millimetre or two on these femurs). With `train_alignment = 'registration'` (the default) the training images are
registered the same way, so the network trains in the frame it will meet at test time, and the small pose that
registration leaves becomes part of what it predicts. `'procrustes'` resamples them through their Procrustes
transforms instead: a cleaner frame, but one that new images never reach. Outside an image the grid is filled with
the image's minimum (air, about -1000 HU), not 0, which in CT would be water.
"""),
    code("""
t0 = time.perf_counter()
groomed = groom.run_grooming(cfg, cohort)
print(f'{len(groomed)} subjects groomed in {time.perf_counter() - t0:.1f} s; reference: {groomed.reference_id}')
print('grid:', groomed.info['grid'])
"""),
    md("""
## Before and after
Top: the original images, each with its own field of view, pose and size. Bottom: the same images on the reference
grid: same size, and the femur in the same place. Red dots are the particles near the slice.
"""),
    code("""
viz.plot_grooming(groomed)
"""),
    md("""
## Registering an image without particles
A new image comes without particles, so it is aligned by its intensities: SimpleITK registers it to the reference
image, first a translation (started by centring the two images), then a rigid transform, then a similarity (rotation,
translation and one scale), each stage started from the previous one, each coarse to fine. The metric is Mattes
mutual information, evaluated only within `mask_margin` mm of the reference femur's surface
(`reference_mask.nrrd`), so the femur drives the alignment rather than the soft tissue or the pelvis.
"""),
    md("""
## How accurate is the registration?
The cohort's subjects do have true particles, so we can check: map them with the registration's `T` and compare
with where the best similarity fit of those particles onto the reference shape would put them. The difference is
the registration error, in mm, per particle; its mean and maximum per subject are below (test images in orange).
"""),
    code("""
for row in groomed.registration_table():
    print(f"{row['id']} ({row['split']}): mean {row['mean_mm']:.2f} mm, max {row['max_mm']:.2f} mm")
viz.plot_registration_errors(groomed)
"""),
    md("""
## The transform `T` and its inverse
Each subject keeps a 4x4 matrix `T` that maps a point of its original image to the world (reference) frame. The
network will predict particles in the world frame; `inv(T)` takes them back to the original image. Here the world
particles of a test subject go back onto its true particles.
"""),
    code("""
test = groomed[groomed.ids('test')[0]]
local = registration.apply_transform(np.linalg.inv(test.transform), groomed.particles('test')[0])
true = deepssm_nb.read_particles(cohort[test.id].particles)
print(f'{test.id}: T =\\n{np.round(test.transform, 3)}')
print(f'largest distance after the round trip: {np.abs(local - true).max():.1e} mm')
"""),
    md("""
## A new image
Prediction registers a single new image the same way, with the reference, mask and settings stored in the groom
folder. For this test image it finds the same transform as grooming did.
"""),
    code("""
registered, T = groom.register_to_reference(cohort[test.id].image, groomed, random_state=1)
apply = registration.apply_transform
moved = np.linalg.norm(apply(T, true) - apply(test.transform, true), axis=1)
print(f'registered image: {registered.GetSize()} voxels; differs from grooming by {moved.max():.2f} mm at most')
"""),
    md("""
## Reruns are free
Every output is written atomically, and a per-subject record holds the parameters it was made with. A rerun with
the same parameters skips finished subjects; changing a parameter redoes only what depends on it.
"""),
    code("""
t0 = time.perf_counter()
groom.run_grooming(cfg, cohort, progress=False)
print(f'rerun: {time.perf_counter() - t0:.2f} s')
"""),
    md("""
## Summary
- A Procrustes fit of the training particles picks the medoid subject, whose frame is the world frame.
- All images share one reference grid: isotropic spacing, the union bounding box plus padding, air outside.
- Every other image, training or test, is registered to the reference image (translation, rigid, similarity) on a
  band around the femur, so training and test images are aligned the same way.
- Each subject's `T` maps original to world; `inv(T)` brings predictions back to the original image.
- On this cohort the registration error is a millimetre or two, about the size of one groomed voxel.

## Exercises
1. Set `mask_margin = 0` (the metric then uses the whole box) and rerun: how do the registration errors change?
   (Set `cfg.groom.train_alignment = 'procrustes'` to see the training images resampled by their particles.)
2. Pick another `reference` (a training id) and compare the grid size and the registration errors.
3. Groom with `spacing = 1.0`: how much bigger are the images, and does the registration get more accurate?
4. `registration.register_image` takes `stages`; register a test image with `('translation', 'rigid')` only and
   compare its `T` with the stored one.

## Next
[03 · Data augmentation](03_data_augmentation.ipynb): sample new shapes from a PCA of the groomed training shapes and
warp real images onto them.
"""),
]

write('02_grooming', cells)
