"""Generate notebooks/08_analyze_results.ipynb."""

from nbgen import code, md, params, write

cells = [
    md("""
# 08 · Analyse the results: surfaces, distances and baselines

How close are DeepSSM's shapes to the truth? Turn particles and segmentations into surfaces, measure the distance
between them, and compare the network with two baselines so that every number has context.

**You will learn**
- how a segmentation becomes a surface (marching cubes in physical coordinates) and particles become a surface
  (warping the mean mesh with a thin-plate spline);
- what the surface-to-surface distance measures, in both directions, and what mean, RMS, 95th percentile and
  Hausdorff add;
- why DeepSSM's error means little without the mean-shape baseline and the PCA floor;
- how to read 3D heat maps of the best, median and worst test subjects, and a per-particle error map.

Prerequisites: [07 · Test DeepSSM](07_test_deepssm.ipynb) (predictions on the test images). If its outputs are
missing, this notebook runs every missing stage itself.
"""),
    md("""
## Setup
"""),
    code("""
import deepssm_nb
from deepssm_nb import pipeline
from deepssm_nb.analyze import run_analysis
from deepssm_nb.io import read_particles
from deepssm_nb.surface import image_to_mesh, read_surface, symmetric_surface_distance, warp_mesh
from deepssm_nb.viz import accuracy as viz_accuracy
from deepssm_nb.viz import surface as vsurf

deepssm_nb.print_config()
"""),
    md("""
## Parameters
`truth` picks what the predictions are compared with: the test subjects' segmentations, meshed here (as the
DeepSSM use case does), or the cohort's own surfaces (`'mesh'`). `backend` forces a 3D display backend
(`None`: chosen automatically, see below).
"""),
    params("""
profile = 'workshop'   # 'smoke' (seconds), 'workshop' (CPU laptop), 'full' (GPU)
work_dir = '../deepssm_output'
data_dir = None
truth = 'segmentation'  # or 'mesh'
backend = None          # None (automatic), 'trame', 'html' or 'static'
"""),
    code("""
cfg = deepssm_nb.notebook_config(profile, work_dir, data_dir)
"""),
    md("""
## How the 3D views are shown
In a live JupyterLab the views are interactive (trame: rotate, zoom). On Colab, where trame's local server is out of
reach, they are self-contained HTML; when the notebook runs headless (CI, `make tutorial`) they are PNG pictures, so
the saved notebook still shows them. `PYVISTA_JUPYTER_BACKEND` in the environment overrides the choice.
"""),
    code("""
vsurf.setup_pyvista(backend)
"""),
    md("""
## Predictions on the test images
`ensure` runs only the stages whose outputs are missing (cohort, grooming, augmentation, loaders, training,
prediction). The predictions are particles in each test image's own frame (`local_predictions`).
"""),
    code("""
pipeline.ensure(cfg, 'predict')
cohort = pipeline.ensure(cfg, 'cohort', verbose=False)
subject = cohort.ids('test')[0]
pred_dir = cfg.resolved_paths()['pred_dir'] / 'local_predictions'
"""),
    md("""
## From a segmentation to a surface
Marching cubes finds the surface half way between background (0) and bone (1), on the voxel grid, and places it in
millimetres with the image's origin, spacing and direction. A light Taubin smoothing removes the voxel staircase
without shrinking the shape (its volume change is checked to stay under 1 %).
"""),
    code("""
true_mesh = image_to_mesh(cohort[subject].segmentation)
print(f'{subject}: {true_mesh.n_points} vertices, volume {true_mesh.volume / 1000:.1f} cm^3')
"""),
    md("""
## From particles to a surface
DeepSSM predicts only a few hundred particles. To get a surface, the mean mesh is carried from the mean particles to
the predicted particles by a 3D thin-plate spline (kernel $U(r) = r$ plus an affine part). The spline passes exactly
through every particle and is smooth in between; with the mean particles it returns the mean mesh itself.
"""),
    code("""
mean_mesh, mean_particles = read_surface(cohort.mean_mesh), read_particles(cohort.mean_particles)
predicted = read_particles(pred_dir / f'{subject}.particles')
pred_mesh = warp_mesh(mean_mesh, mean_particles, predicted)
"""),
    md("""
## Distance between two surfaces
For each vertex, the distance to the closest point on the other surface's triangles (not the closest vertex). It is
not symmetric: a thin spike missing from the prediction shows on the truth only. We report both directions and the
symmetric mean; the Hausdorff distance is the largest vertex value. Left: the truth coloured by its distance to the
prediction; right: the reverse. The black dots are the particles; the two cameras move together.
"""),
    code("""
truth_d, pred_d, stats = symmetric_surface_distance(true_mesh, pred_mesh)
print({k: round(v, 3) for k, v in stats['symmetric'].items()})
vsurf.show(vsurf.plot_comparison(truth_d, pred_d, true_particles=read_particles(cohort[subject].particles),
                                 pred_particles=predicted, titles=('truth', 'DeepSSM')))
"""),
    md("""
## The whole test set, with two baselines
`run_analysis` does the above for every test subject and for two baselines placed by the same registration:
- **mean shape**: the training mean, as if the network always answered "average femur". DeepSSM must beat it.
- **PCA floor**: the true shape projected onto the kept PCA modes. DeepSSM predicts PCA scores, so it cannot beat it.

The table gives the symmetric mean distance per subject, in mm.
"""),
    code("""
result = run_analysis(cfg, truth=truth)
result.table()
"""),
    md("""
## Summary with ratios
A ratio to the mean shape well below 1 means the network read the shape from the image; a ratio to the PCA floor
close to 1 means more modes (or more data), not a better network, would be the next step. The *skill*,
`(mean shape - DeepSSM) / (mean shape - PCA floor)`, says which fraction of that reachable gap the network closed:
1 is a perfect prediction of the kept modes, 0 is no better than the mean shape, below 0 is worse.

What to expect here: at the `workshop` size, DeepSSM does **not** beat the mean shape placed by the same
registration, and you should not expect it to. Over the 26 femurs of the 7-fold benchmark (README "What to expect") it measured 0.83 and 0.82 mm for seeds 0 and 1, against 0.78 mm for the mean shape and 0.63 mm for the PCA floor (skills -0.36 and -0.31), winning on 5 and 11 of the 26 femurs; before the training-time augmentation the profile measured 0.88 mm on the same femurs. With about 20 training femurs, a 2 mm grid and the
20-minute budget of 2 CPU cores, the network reads little of the shape beyond what the registration gives: the
validation calibration (notebook 05) keeps only 26-58 % of its predicted scores on average (folds 0 and 1 of the
benchmark), the rest shrunk to the mean shape. On a GPU at 1 mm
(`full`) it wins: 0.73 mm against 0.85 mm, on 7 of 8 femurs. Do not expect much below 0.7 of the mean shape even
there: the PCA floor with every mode of the training shapes is about 0.72 of it on these femurs. The *skill* is the
figure to compare runs by: 0 is the mean shape, 1 the PCA floor.
"""),
    code("""
result.report()
"""),
    md("""
## Femur by femur: DeepSSM against the mean shape
One point per test femur: its error with the mean shape (x) against its error with DeepSSM (y). Points below the
diagonal are femurs on which the network read something from the image that the registration alone did not give;
points above it are femurs on which the prediction added error. A mean can hide a few large misses or a few large
wins; this plot shows which it is.
"""),
    code("""
viz_accuracy.plot_against_mean_shape(result)
"""),
    md("""
## Best, median and worst subject
One row per subject, truth on the left and DeepSSM on the right, one colour scale for all rows. Look for where the
colour is hot: is the error spread over the surface (a size or pose mistake) or local (a shape detail)? A thin hot
rim at the cut end of the shaft is expected for every method: meshing rounds the segmentation's sharp cut edge, which
is why the Hausdorff distance (a single worst vertex) is less telling than the 95th percentile.
"""),
    code("""
vsurf.show(vsurf.plot_subjects(result))
"""),
    md("""
## Where the errors are: the per-particle error map
The Euclidean error of each particle, averaged over the test subjects, drawn on the mean shape for DeepSSM and both
baselines. Regions that stay hot for the PCA floor are shape variation the kept modes cannot express.
"""),
    code("""
vsurf.show(vsurf.plot_particle_error(result))
"""),
    md("""
## Files written
Everything is in `analysis_dir`: `distances.csv` (per subject and method, both directions and symmetric),
`summary.json`, `report.md`, the heat-map meshes (`heatmaps/<method>/<id>_true.vtk` and `_predicted.vtk`, point array
`distance`) and `particle_error.vtk`. Any VTK viewer (ParaView, ShapeWorks Studio) opens them.
"""),
    code("""
sorted(str(p.relative_to(result.root)) for p in result.root.glob('*'))
"""),
    md("""
## Summary
- True surfaces come from segmentations by marching cubes in physical coordinates; predicted surfaces from particles
  by a thin-plate-spline warp of the mean mesh.
- Surface distance is vertex to closest point on the other surface; report both directions, the mean, RMS,
  95th percentile and Hausdorff.
- DeepSSM's error means something only next to the mean-shape baseline (it must beat it) and the PCA floor
  (it cannot beat it).
- Heat maps and the per-particle error map show *where* the shape is wrong, not just how much.

## Exercises
1. Run the analysis with `truth = 'mesh'`: how much of the error came from meshing the segmentations?
2. Train with a larger `cfg.augment.percent_variability` (more modes) and compare the PCA floor and DeepSSM again.
3. Open the worst subject's `_predicted.vtk` heat map with `pyvista.read` and find the vertex with the largest
   distance: which part of the femur is it on?

## Next
[09 · Uncertain-DeepSSM](09_uncertainty.ipynb): the same network with an error bar on every particle, and a flag for
the images it should not be trusted on.
"""),
]

write('08_analyze_results', cells)
