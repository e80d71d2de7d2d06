"""Generate notebooks/01_femur_data.ipynb."""

from nbgen import code, md, params, write

cells = [
    md("""
# 01 · The femur cohort: images, shapes and particles

Build (or load) the offline femur cohort that every later notebook uses: 26 real adult femurs from the LLP26 shape
model, each with a synthetic CT-like hip image, a segmentation, a surface mesh and correspondence particles.

**You will learn**
- what DeepSSM needs per subject: an image and a set of particles in correspondence, in the image's coordinates;
- how the cohort is laid out on disk (ShapeWorks style) and how to bring your own folder instead;
- how to browse the images with the segmentation and the particles overlaid;
- what "correspondence" means and how much the shapes and their positions vary across subjects.

Prerequisites: [00 · Setup](00_setup.ipynb).
"""),
    md("""
## Setup
"""),
    code("""
import tempfile

import deepssm_nb
from deepssm_nb import DataError, pipeline
from deepssm_nb.data import load_cohort
from deepssm_nb.viz import cohort as viz

deepssm_nb.print_config()
"""),
    md("""
## Parameters
`profile` sets the cohort's size: `smoke` builds 10 subjects at 2 mm with 128 particles in seconds; `workshop`
builds all 26 at 1 mm with 512 particles (under 1.5 min on 2 cores, once: later calls reuse the cache in `data_dir`).
`subject` picks the subject shown in the views.
"""),
    params("""
profile = 'workshop'   # 'smoke' (seconds), 'workshop' (CPU laptop), 'full' (GPU)
work_dir = '../deepssm_output'
data_dir = None        # None: $DEEPSSM_DATA_DIR or ~/.cache/deepssm_nb
subject = 0            # index or id of the subject to look at
"""),
    code("""
cfg = deepssm_nb.notebook_config(profile, work_dir, data_dir)
cfg.data
"""),
    md("""
## Build or load the cohort
`ensure` builds whatever is missing and otherwise reads the cache. Every random choice (pose, field of view, image
appearance, test split) comes from `cfg.data.seed`, so the same seed gives byte-identical files on any machine.
"""),
    code("""
cohort = pipeline.ensure(cfg, 'cohort')
print(cohort)
print('test subjects:', cohort.ids('test'))
"""),
    md("""
## What is on disk
One folder per cohort, named after its parameters. Each subject has `images/<id>.nrrd` (int16, CT-like),
`segmentations/<id>.nrrd` (the proximal femur, 0/1), `meshes/<id>.vtk` and `particles/<id>.particles` (one `x y z`
line per particle, in the image's physical coordinates, mm). `manifest.csv` lists them with the train/test split;
`mean.vtk` and `mean.particles` hold the mean shape.
"""),
    code("""
print(sorted(p.name for p in cohort.root.iterdir()))
print(''.join((cohort.root / 'manifest.csv').read_text().splitlines(keepends=True)[:4]))
"""),
    md("""
## One image, three views
The image is a hip CT look-alike: cortical shell, trabecular bone, the acetabulum and the femoral shaft below the
cut (bone, but not labelled), soft tissue, blur and noise. Green is the segmentation's outline, red the particles
lying within 2 mm of the slice.
"""),
    code("""
viz.plot_subject_slices(cohort, subject)
"""),
    md("""
## Browse the slices
Move the slider, switch the view or the subject. Each subject has its own random pose and an off-centre field of
view, so the femur is never in the same place: the network will have to find it.
"""),
    code("""
viz.slice_viewer(cohort, subject, axis='coronal')
"""),
    md("""
## The shape and its particles in 3D
The shape is the proximal femur, cut 80 mm below the head centre and closed with a flat cap. The particles are
spread evenly over it; the blue box is the image's field of view.
"""),
    code("""
viz.plot_subject_3d(cohort, subject).show()
"""),
    md("""
## Particles in correspondence
Particle *k* is the same anatomical point on every subject (they were placed once on the mean shape and carried to
each subject through the shared mesh). Stacked, they form the `(N, M, 3)` array from which the shape model is
learned. After removing each subject's pose, the spread of a particle shows where the shapes differ.
"""),
    code("""
particles = cohort.particles('train')
print('train particles:', particles.shape, '(subjects, particles, xyz)')
viz.plot_particle_sd(cohort).show()
"""),
    md("""
## How the cohort varies
Left: where the femur sits in each image (particle centroid relative to the image centre). Right: the spread of two
classic measurements, head diameter and femoral offset (head centre to shaft axis).
"""),
    code("""
viz.plot_cohort_spread(cohort)
"""),
    md("""
## Bring your own data
`load_cohort` accepts three layouts, and `cfg.data.cohort` can name any of them:

| layout | what it holds |
| --- | --- |
| ShapeWorks project | `my.swproj` (or `.xlsx` with `openpyxl`): `image_<name>`, `shape_<domain>`, `world_particles_<domain>` (or `local_particles_` with `alignment_` / `procrustes_`), optional `side` and `split` |
| ShapeWorks folder | `<id>_L_femur.nrrd`, `<id>_L_femur.vtk`, `<id>_L_femur_world.particles` (or `_local`); test subjects in `test/` |
| manifest folder | `images/<id>.nrrd` + `particles/<id>.particles`, or a `manifest.csv` (`id,image,segmentation,mesh,particles,split,side`) |

Left and right femurs can be mixed: grooming reflects the minority side across x, and predictions come back in each
subject's own frame. Every problem is reported at once, each naming its file, row or column: *does not exist* (a
path in the project or manifest), *pairs with no / several images* (rename, or write the proposed `manifest.csv`
printed below the error), *holds N particles* (counts differ), *side must be one of* (only L/R), *must be 3D* or
*NaN voxels* (the image), *only local particles* (add the transforms or the world particles), *has 2 domains* (pass
`domain=`). Here, an empty folder:
"""),
    code("""
try:
    load_cohort(tempfile.mkdtemp())
except DataError as err:
    print(err)
"""),
    md("""
## Summary
- Each subject has an image, a segmentation, a mesh and M particles in the image's physical coordinates.
- Particles correspond across subjects by construction: same face, same barycentric weights on the shared mesh.
- Poses and fields of view vary, so the femur's position in the image is not a given.
- The cohort is cached, reproducible from one seed; a ShapeWorks project or folder, or a manifest, can replace it.

## Exercises
1. Build a cohort with another seed (`deepssm_nb.data.build_femur_cohort(seed=1, ...)`) and compare the test split and
   the poses in `cohort.info['subjects']`.
2. In the slice viewer, find the slice where the femoral head meets the acetabulum: which structure is labelled?
3. Delete one `particles/*.particles` file in a copy of the cohort folder and call `load_cohort` on it: what does
   the error say?

## Next
[02 · Grooming](02_grooming.ipynb): align the training shapes and bring every image onto one reference grid.
"""),
]

write('01_femur_data', cells)
