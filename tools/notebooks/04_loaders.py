"""Generate notebooks/04_loaders.ipynb."""

from nbgen import code, md, params, write

cells = [
    md("""
# 04 · Loaders: from files to training batches

Turn the real and augmented images, particles and PCA scores into PyTorch loaders: a train/validation split by
subject, whitening fitted on the training split only, optional downsampling, and images that stay on disk.

**You will learn**
- why the split is made by *subject*, so no subject's augmented copies sit on both sides;
- which statistics whiten the images and the PCA scores, and why only the training split may set them;
- what a batch looks like (`image`, `scores`, `particles`, `name`) and where its particles sit on the image;
- how the images are stored once on disk and read per batch, so memory does not grow with the data;
- how `down_factor` shrinks the images and why a changed factor rebuilds the arrays.

Prerequisites: [03 · Data augmentation](03_data_augmentation.ipynb) (this notebook builds its outputs if they are
missing).
"""),
    md("""
## Setup
"""),
    code("""
import deepssm_nb
from deepssm_nb import imageops, loaders, normalization, pipeline
from deepssm_nb.groom import load_groomed
from deepssm_nb.viz import loaders as viz

deepssm_nb.print_config()
"""),
    md("""
## Parameters
`batch_size` and `down_factor` override the profile when set (`None` keeps the profile's value).
"""),
    params("""
profile = 'workshop'   # 'smoke' (seconds), 'workshop' (CPU laptop), 'full' (GPU)
work_dir = '../deepssm_output'
data_dir = None
batch_size = None      # e.g. 8
down_factor = None     # in (0, 1]; e.g. 0.75 as in the femur use case
"""),
    code("""
cfg = deepssm_nb.notebook_config(profile, work_dir, data_dir, {
    'loader.batch_size': batch_size,
    'loader.down_factor': down_factor,
})  # a None keeps the profile's value
paths = cfg.resolved_paths()
pipeline.ensure(cfg, 'augment')
groomed = load_groomed(paths['groom_dir'])
"""),
    md("""
## Split by subject
`TotalData.csv` lists every real and generated sample with its PCA scores; `augmentation.json` says which real
subject each generated sample was warped from. Whole subjects go to one side: a validation subject's augmented
copies never leak into training, so the validation error is honest. The arguments are those of the original
`getTrainValLoaders`.
"""),
    code("""
train_loader, val_loader = loaders.get_train_val_loaders(
    paths['loader_dir'], paths['aug_dir'] / 'TotalData.csv', cfg.loader.batch_size, cfg.loader.down_factor,
    val_fraction=cfg.loader.val_fraction, random_state=cfg.seed)
print(f'{len(train_loader.dataset)} training rows, {len(val_loader.dataset)} validation rows')
viz.plot_split(paths['loader_dir'])
"""),
    md("""
## Whitening statistics
Images are whitened with one scalar mean and standard deviation, scores with one mean and standard deviation per
PCA mode. Both come from the training rows only and are saved in `normalization.json`; the validation images, the
test images and any new image later use these same numbers.
"""),
    code("""
norm = normalization.load_normalization(paths['loader_dir'])
print(f"image mean {norm['image_mean']:.1f}, std {norm['image_std']:.1f}, shape {norm['image_shape']} (z, y, x)")
print('score mean', [round(v, 1) for v in norm['score_mean']])
print('score std ', [round(v, 1) for v in norm['score_std']])
"""),
    md("""
## A batch
A batch is a dict: `image` (B, 1, D, H, W), whitened; `scores` (B, L), whitened; `particles` (B, M, 3) in world mm;
`name`. The particles are drawn on the three middle slices of their own image: they outline the femur.
"""),
    code("""
batch = next(iter(train_loader))
print({k: tuple(v.shape) if hasattr(v, 'shape') else v for k, v in batch.items()})
viz.plot_batch(batch, norm, max_samples=3)
"""),
    md("""
## Intensities before and after whitening
After whitening the training voxels have mean 0 and standard deviation 1: the network's first layer then sees
inputs of a sensible scale whatever the scanner's units.
"""),
    code("""
viz.plot_intensity_histogram(train_loader, norm)
"""),
    md("""
## Images stay on disk
Each split's images are one `.npy` file of raw intensities; the dataset reads one row per sample (and whitens it on
the fly), so a few thousand augmented volumes do not have to fit in memory.
"""),
    code("""
images = train_loader.dataset.images
print(type(images).__name__, images.shape, images.dtype, f'{images.nbytes / 2**20:.0f} MB on disk')
"""),
    md("""
## Downsampling
`down_factor` shrinks every axis (after a Gaussian smoothing that prevents aliasing) while keeping the physical
extent. The loaders record the factor: change it and the arrays are rebuilt, never reused stale.
"""),
    code("""
image = deepssm_nb.read_image(groomed.images('train')[0])
half = imageops.downsample_image(image, 0.5)
print(image.GetSize(), image.GetSpacing(), '->', half.GetSize(), half.GetSpacing())
viz.plot_slices(half, title='downsampled by 0.5')
"""),
    md("""
## The test loader
Test images, already registered onto the reference grid by grooming, get their own loader (batch 1, in the given
order), whitened with the *training* statistics. `build_loaders(cfg)` makes all three loaders in one call; the
pipeline uses it.
"""),
    code("""
test_loader = loaders.get_test_loader(paths['loader_dir'], groomed.images('test'), cfg.loader.down_factor)
print([b['name'][0] for b in test_loader])
all_loaders = loaders.build_loaders(cfg)   # reuses the arrays above
"""),
    md("""
## Summary
- The train/validation split is made by subject, with each generated sample assigned to the subject it came from.
- Image and score whitening are fitted on the training split only and saved with the loaders (and later the model).
- Batches are dicts of tensors; particles are in world millimetres, the frame of the groomed images.
- Images live once on disk and are read per batch; a changed `down_factor` or CSV rebuilds the arrays.

## Exercises
1. Run the split cell with `val_fraction=0.4`: how many subjects and rows move to validation?
2. Set `down_factor = 0.5` in the parameters and rerun: how do the batch shapes and the loader build time change?
3. Compute the mean of a *validation* batch's images: why is it not exactly 0?

## Next
[05 · Train Base-DeepSSM](05_train_base_deepssm.ipynb): the network that turns these batches into particles, and
its training.
"""),
]

write('04_loaders', cells)
