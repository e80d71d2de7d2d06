"""Generate notebooks/03_data_augmentation.ipynb."""

from nbgen import code, md, params, write

cells = [
    md("""
# 03 · Data augmentation: new shapes, new images

A few dozen training subjects are too few to train a network. We fit a PCA shape model to the training particles,
sample new plausible shapes from it, and make a matching image for each by warping a real image onto the new shape.

**You will learn**
- how a shape PCA keeps the modes that explain a chosen share of the variance;
- how the `kde`, `gaussian` and `mixture` samplers draw new PCA scores, and what the KDE bandwidth means;
- how a thin-plate spline through the particles warps a real image onto a sampled shape, fast and accurately;
- what `TotalData.csv` and `augmentation.json` hold, and how any sample can be regenerated exactly;
- how to check that the generated shapes look like the real ones.

Prerequisites: [02 · Grooming](02_grooming.ipynb) (this notebook builds its outputs if they are missing).
"""),
    md("""
## Setup
"""),
    code("""
%matplotlib inline
import time

import numpy as np

import deepssm_nb
from deepssm_nb import augment, imageops, pipeline, samplers, tps
from deepssm_nb.pca import ShapePCA
from deepssm_nb.viz import augment as viz

deepssm_nb.print_config()
"""),
    md("""
## Parameters
`None` keeps the profile's value.
"""),
    params("""
profile = 'workshop'          # 'smoke' (seconds), 'workshop' (CPU laptop), 'full' (GPU)
work_dir = '../deepssm_output'
data_dir = None
num_samples = None            # generated samples, e.g. 400
sampler = None                # 'kde', 'gaussian' or 'mixture'
percent_variability = None    # share of the shape variance kept by the PCA, e.g. 0.95
processes = None              # worker processes for the image warps
"""),
    code("""
cfg = deepssm_nb.notebook_config(profile, work_dir, data_dir, {
    'augment.num_samples': num_samples,
    'augment.sampler': sampler,
    'augment.percent_variability': percent_variability,
    'augment.processes': processes,
})  # a None keeps the profile's value
aug = cfg.augment
paths = cfg.resolved_paths()
groomed = pipeline.ensure(cfg, 'groom')
"""),
    md("""
## A PCA of the training shapes
Each groomed training shape is M particles in the common world frame, flattened to a vector of 3M numbers. PCA finds
the directions (modes) along which these vectors vary most; a shape is then the mean plus a few *scores* times the
modes. We keep the fewest modes that explain `percent_variability` of the variance. The PCA sees the training
subjects only: test subjects must stay unseen.
"""),
    code("""
train = groomed.particles('train')   # (N, M, 3), world mm
pca = ShapePCA(aug.num_dim or None, percent_variability=aug.percent_variability).fit(train)
print(f'{len(train)} training shapes of {train.shape[1]} particles: {pca.n_components_} modes keep '
      f'{100 * pca.explained_variance_ratio_.sum():.1f} % of the variance')
viz.plot_cumulative_variance(pca)
"""),
    md("""
With every mode (at most N - 1 of them) the training shapes are reconstructed exactly; with the modes kept, the
residual is the detail the model gives up.
"""),
    code("""
full = ShapePCA(percent_variability=1.0).fit(train)
exact = np.abs(full.inverse_transform(full.scores_) - train).max()
kept = np.linalg.norm(pca.inverse_transform(pca.scores_) - train, axis=-1).mean()
print(f'all {full.n_components_} modes: max error {exact:.1e} mm; {pca.n_components_} modes: mean error {kept:.2f} mm')
"""),
    md("""
## Sampling new scores
A sampler is fitted on the N real score vectors and returns new scores plus a *base*: the real subject whose image
will be warped. With `S` the covariance of the real scores and `d_M` the Mahalanobis distance under `S`:

- `kde` (default): pick a real subject uniformly (the base) and add noise `N(0, h² S)`, with bandwidth
  `h² = mean_i min_j d_M(s_i, s_j)² / L`. `h²` is a *variance*: samples stay about one nearest-neighbour distance
  from a real subject. (ShapeWorks used this number as a standard deviation.)
- `gaussian`: `z ~ N(mean, S)`; the base is the real subject nearest to `z` in Mahalanobis distance.
- `mixture`: a Gaussian mixture; its size is halfway between the BIC-best and the AIC-best counts.

Every draw takes a `random_state`; nothing is seeded behind your back.
"""),
    code("""
smp = samplers.get_sampler(aug.sampler, mixture_num=aug.mixture_num, random_state=cfg.seed).fit(pca.scores_)
new_scores, base = smp.sample(500, random_state=cfg.seed)
print(smp.params())
print('samples per base subject:', np.bincount(base, minlength=len(train)))
for name in samplers.SAMPLERS:
    z, _ = samplers.sample_scores(pca.scores_, 2000, name, random_state=0)
    print(f'{name:>8}: spread per mode relative to the real scores', np.round(z.std(0) / pca.scores_.std(0), 2))
"""),
    md("""
## One image warp, step by step
A new shape comes with no image. We take its base subject's image and bend it with a 3D thin-plate spline (kernel
`U(r) = r` plus an affine part) through every `landmark_step`-th particle, so that the base's particles land on the
sampled ones. Evaluating the spline at every voxel costs one kernel per landmark per voxel; instead we evaluate it
every `grid_step` voxels, interpolate (cubic), and correct exactly the kinks of `U(r) = r` around each landmark.
"""),
    code("""
i = 0
image = deepssm_nb.read_image(groomed.images('train')[base[i]])
grid, k = imageops.ImageGrid.from_image(image), aug.landmark_step
spline = tps.ThinPlateSpline.fit(pca.inverse_transform(new_scores[i])[::k], train[base[i]][::k])
t0 = time.perf_counter(); exact = tps.warp_field(spline, grid, grid_step=None); t1 = time.perf_counter()
fast = tps.warp_field(spline, grid, grid_step=aug.grid_step); t2 = time.perf_counter()
err = np.linalg.norm((fast - exact) * grid.spacing[::-1, None, None, None], axis=0)
print(f'{grid.shape} voxels, {len(spline.centers)} landmarks: exact {t1 - t0:.2f} s, fast {t2 - t1:.3f} s; '
      f'difference max {err.max():.3f} mm, 99th percentile {np.percentile(err, 99):.3f} mm')
"""),
    md("""
## Generate the augmented set
`run_augmentation` does all of the above for `num_samples` samples, spread over `processes` worker processes. Sample
`i` draws its scores with a seed derived from `(cfg.seed, i)`, so the result does not depend on the number of
processes. Every file is written atomically: interrupt the cell and run it again, and it resumes where it stopped.
"""),
    code("""
augmented = augment.run_augmentation(cfg, groomed)
print(augmented.num_modes, 'modes;', sorted(p.name for p in augmented.folder.iterdir()))
"""),
    md("""
## The files
`TotalData.csv` has no header, as in ShapeWorks: image, particles, then the L scores; the real subjects come first.
`augmentation.json` records the parameters and, for every row, its base subject and seed, which is enough to
regenerate any sample on its own, byte for byte.
"""),
    code("""
print(*(paths['aug_dir'] / 'TotalData.csv').read_text().splitlines()[len(train) - 1:len(train) + 1], sep='\\n')
info = deepssm_nb.io.read_json(paths['aug_dir'] / 'augmentation.json')
print(info['rows'][-1])
img, _ = augment.regenerate_sample(paths['aug_dir'], 1, paths['work_dir'] / 'regenerated')
print('regenerated identically:', img.read_bytes() == (paths['aug_dir'] / 'Generated-Images' / img.name).read_bytes())
"""),
    md("""
## Do the generated shapes look real?
Each dot is a shape in the space of the first PCA modes: the generated samples (orange) should cover the real ones
(blue) without drifting far away. The violins compare the distribution of every mode.
"""),
    code("""
data = augmented.table  # the rows of TotalData.csv (augment.read_total_data reads the file)
viz.plot_score_scatter_matrix(data, max_modes=4)
"""),
    code("""
viz.plot_score_violins(data)
"""),
    md("""
## Generated images
A slice through each of the first generated images with its particles: the particles should sit on the femur's
outline, because the image was warped onto them.
"""),
    code("""
viz.plot_generated_gallery(paths['aug_dir'], num=6)
"""),
    md("""
## Try other settings (optional)
Change the augmentation knobs below, then press **Generate again**: it writes a second augmented set into its own
folder (`augmentation_try`), so the set above, which the next notebooks use, stays as it is. Nothing runs until you
press the button, and running the notebook top to bottom skips this step.
"""),
    code("""
from deepssm_nb.widgets import config_panel, run_button

trial = deepssm_nb.Config.from_dict(cfg.to_dict())
trial.deepssm.paths.aug_dir = str(paths['work_dir'] / 'augmentation_try')
display(config_panel(trial, sections=('augment',)))


def generate_again():
    augment.run_augmentation(trial, groomed)
    return viz.plot_score_scatter_matrix(trial.resolved_paths()['aug_dir'] / 'TotalData.csv', max_modes=4)


run_button('Generate again', generate_again)
"""),
    md("""
## Summary
- A PCA fitted on the training shapes only turns each shape into L scores; `percent_variability` sets L.
- New scores come from a KDE (bandwidth used as a variance), a Gaussian or a Gaussian mixture, each seeded.
- Each new image is a real image warped by a thin-plate spline; the coarse-grid warp with kink correction stays
  within a few hundredths of a millimetre of the exact spline at a fraction of the cost.
- `TotalData.csv` and `augmentation.json` describe every sample; any one can be regenerated exactly, and an
  interrupted run resumes.

## Exercises
1. Set `sampler = 'gaussian'` and rerun: how do the scatter matrix and the bases used change compared to `kde`?
2. Call `tps.warp_field` with `interpolation='linear'` or `kink_radius=0` in the warp cell: how large does the
   difference to the exact spline become, and where (hint: near the landmarks)?
3. Lower `percent_variability` to 0.8: how many modes remain, and what does it do to the reconstruction error?
4. Delete a few files in `Generated-Images/` and rerun the generation cell: what is recomputed?

## Next
[04 · Loaders](04_loaders.ipynb): from these files to training batches.
"""),
]

write('03_data_augmentation', cells)
