"""Generate notebooks/07_test_deepssm.ipynb."""

from nbgen import code, md, params, write

cells = [
    md("""
# 07 · Test DeepSSM: particles for unseen images

Use the trained network to predict the correspondence particles of the held-out test images, map them back to
each image's own frame, and measure how far they are from the true particles.

**You will learn**
- how a prediction goes from image to PCA scores to particles in the reference frame, then to the image's frame;
- how long one prediction takes, with and without the registration of a new image;
- how to measure the particle error per test subject (RMSE in mm)
- how to check a prediction by eye, against the true particles on the image.

Prerequisites: [05 · Train Base-DeepSSM](05_train_base_deepssm.ipynb); [06 · TL-DeepSSM](06_tl_deepssm.ipynb) is
optional (this notebook trains a model if none exists).
"""),
    md("""
## Setup
"""),
    code("""
import numpy as np

import deepssm_nb
from deepssm_nb import pipeline, predict
from deepssm_nb.groom import load_groomed
from deepssm_nb.viz import loaders as viz

deepssm_nb.print_config()
"""),
    md("""
## Parameters
"""),
    params("""
profile = 'workshop'   # 'smoke' (seconds), 'workshop' (CPU laptop), 'full' (GPU)
work_dir = '../deepssm_output'
data_dir = None
use_best_model = True  # the epoch with the lowest validation error, else the last epoch
"""),
    code("""
cfg = deepssm_nb.notebook_config(profile, work_dir, data_dir, {'deepssm.use_best_model': use_best_model})
paths = cfg.resolved_paths()
pipeline.ensure(cfg, 'train')
groomed = load_groomed(paths['groom_dir'])
"""),
    md("""
## Predict the test images
The network regresses whitened PCA scores; its decoder un-whitens them and rebuilds the particles from the PCA
mean and modes, in the world (reference) frame. Each test image was registered to the reference during grooming,
with a transform `T`; the world particles go back to the image's own frame with `inv(T)`. Both are written.
"""),
    code("""
predictions = predict.test_deepssm(cfg, overwrite=True)
print(*[f.relative_to(predictions.folder) for f in predictions.local], sep='\\n')
"""),
    md("""
## Seconds per image
The network alone takes a fraction of a second per image on a CPU.
"""),
    code("""
timing = deepssm_nb.io.read_json(paths['pred_dir'] / 'predictions.json')
print(f"{timing['mean_seconds']:.3f} s per image (network only), model {timing['model']}")
"""),
    md("""
## Error per test subject
The true particles of the test subjects are known in this cohort, so the error can be measured directly: the root
mean square distance between predicted and true particles, in the image's own frame. The registration column is
how far the image registration left each femur from its best shape alignment. The training images were registered
the same way, so the network has learned to predict that pose along with the shape; a large registration error
still makes its task harder.
"""),
    code("""
rows = predict.prediction_errors(cfg)
print(predict.format_errors(rows))
viz.plot_prediction_errors(rows)
"""),
    md("""
## Predicted and true particles on the image
Red: predicted; green: true. Both are drawn on the three middle slices of the groomed test image (world frame).
"""),
    code("""
subject = groomed[groomed.ids('test')[0]]
pred = deepssm_nb.read_particles(paths['pred_dir'] / 'world_predictions' / f'{subject.id}.particles')
viz.plot_slices(subject.image, [pred, deepssm_nb.read_particles(subject.particles)],
                labels=['predicted', 'true'], title=f'test subject {subject.id} (world frame)')
"""),
    md("""
## Back in the image's own frame
The local prediction lies on the original, unregistered image. This is what a user of the model gets.
"""),
    code("""
source = groomed.info['subjects'][groomed.ids().index(subject.id)]['source_image']
local = deepssm_nb.read_particles(paths['pred_dir'] / 'local_predictions' / f'{subject.id}.particles')
viz.plot_slices(source, local, labels=['predicted'], title=f'test subject {subject.id} (its own frame)')
"""),
    md("""
## A new image file
`predict_image` does everything for one new scan: read, register to the reference image, whiten with the
training statistics, predict, and map back. The registration is most of the time. From a terminal the same is
`python -m deepssm_nb predict scan.nrrd --config config.json`.
"""),
    code("""
particles = predict.predict_image(source, cfg)
print(f'{particles.shape[0]} particles; largest difference to the test-set prediction: '
      f'{np.abs(particles - local).max():.2f} mm')
"""),
    md("""
## Summary
- A prediction is image → whitened scores → PCA reconstruction (world frame) → `inv(T)` → the image's own frame.
- The test images are whitened with the training statistics saved with the model, never their own.
- The network needs well under a second per image on a CPU; a new image also needs a registration.
- Errors per subject are RMSE over particles, in mm, next to the registration error of each image.

## Exercises
1. Set `use_best_model = False` and rerun: does the final model do better or worse on the test subjects?
2. Which test subject has the largest error? Look at its slices: is the registration or the shape to blame?
3. Time `predict.predict_image` on all test images: how does the registration time compare with the network time?

## Next
[08 · Analyze the results](08_analyze_results.ipynb): surface distances between predicted and true meshes.
"""),
]

write('07_test_deepssm', cells)
