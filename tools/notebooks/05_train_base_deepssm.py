"""Generate notebooks/05_train_base_deepssm.ipynb."""

from nbgen import code, md, params, write

cells = [
    md("""
# 05 · Train Base-DeepSSM

Build the Base-DeepSSM network from a few numbers, plug the PCA shape model in as its frozen decoder, and train it
to predict correspondence particles from images, with a live training curve, the best and final models, and fine
tuning.

**You will learn**
- how the network is laid out (five 3-D convolutions, two fully connected layers, a linear PCA decoder) and how
  its size follows from the input size;
- why the last layer holds the PCA basis and stays frozen, and what the loss on particles (mm²) measures;
- how to train with one call, watch the curve live and read the training log (RMSE in mm per epoch);
- the difference between the best and the final model, what fine tuning changes, and how the validation split
  calibrates the predictions;
- how a run resumes after an interruption and returns at once when it is finished.

Prerequisites: [04 · Loaders](04_loaders.ipynb) (this notebook builds its outputs if they are missing).
"""),
    md("""
## Setup
"""),
    code("""
import time

import torch

import deepssm_nb
from deepssm_nb import model_files, models, pipeline, train
from deepssm_nb.loaders import load_train_val_loaders
from deepssm_nb.pca import ShapePCA
from deepssm_nb.viz.training import LivePlot, plot_calibration, plot_training_log

deepssm_nb.print_config()
"""),
    md("""
## Parameters
`max_epochs` and `learning_rate` override the profile when set (`None` keeps the profile's value). `precision='auto'`
trains in bfloat16 where the hardware supports it (see the training section); the environment variable
`DEEPSSM_PRECISION=fp32` makes `'auto'` mean float32 in every notebook.
"""),
    params("""
profile = 'workshop'   # 'smoke' (seconds), 'workshop' (CPU laptop), 'full' (GPU)
work_dir = '../deepssm_output'
data_dir = None
max_epochs = None      # e.g. 20
learning_rate = None   # e.g. 1e-3
precision = 'auto'     # 'auto', 'fp32', 'bf16' or 'fp16'
fine_tune = True       # fine-tune encoder and decoder after training
"""),
    code("""
cfg = deepssm_nb.notebook_config(profile, work_dir, data_dir, {
    'deepssm.trainer.epochs': max_epochs,
    'deepssm.trainer.learning_rate': learning_rate,
    'deepssm.trainer.precision': precision,
    'deepssm.fine_tune.enabled': fine_tune,
})  # a None keeps the profile's value
paths = cfg.resolved_paths()
pipeline.ensure(cfg, 'loaders')
"""),
    md("""
## The network, built from numbers
The network needs only the input size, the number of PCA modes L and the number of particles M. Each convolution
has a 5×5×5 kernel, batch norm and a PReLU; max pooling halves the grid three times. Along axes of 60 voxels or more
the convolutions use no padding, as in the original DeepSSM; shorter axes are padded so any input size works. The
first fully connected layer holds most of the weights.
"""),
    code("""
train_loader, val_loader, norm = load_train_val_loaders(cfg)
pca = ShapePCA.load(paths['aug_dir'] / 'PCA_Particle_Info')
net = models.DeepSSMNet(in_shape=(1, *norm['image_shape']), num_latent=pca.n_components_,
                        num_correspondences=pca.mean_.shape[0], channels=cfg.deepssm.encoder.channels)
print(model_files.summary(net))
"""),
    md("""
## The PCA decoder
The network regresses L *whitened* PCA scores; the last layer turns them into particles:
`particles = mean + (z · score_std + score_mean) @ components`. Its weights are the PCA modes and its bias is the
mean shape, frozen during training. Whitened scores that stand for PCA scores of zero decode to the mean shape.
"""),
    code("""
models.init_pca_decoder(net, pca.mean_, pca.components_, norm['score_mean'], norm['score_std'])
z = (torch.zeros(1, pca.n_components_) - torch.tensor(norm['score_mean'])) / torch.tensor(norm['score_std'])
gap = (net.decoder(z.float())[0] - torch.tensor(pca.mean_, dtype=torch.float32)).abs().max()
print(f'decoded PCA mean vs mean shape: {gap:.2e} mm')
print('decoder trains:', any(p.requires_grad for p in net.decoder.parameters()))
"""),
    md("""
## Training
`train_deepssm(cfg)` builds this same network from the config and trains it with Adam and a cosine learning-rate
decay. The loss is on the particles (mm², through the frozen decoder); the log reports the **RMSE in mm: the root of
the mean squared distance between predicted and true particles**. The best model is the one with the lowest
validation RMSE. Every epoch writes a checkpoint, so an interrupted run continues where it stopped.

**Augmentation while training** (on in the `workshop` profile). The stored samples of notebook 03 are warps of the
same ~20 scans. Replayed every epoch, they let the network learn each scan's look by heart: with them, an earlier
workshop run reached a training RMSE of 2.1 mm against 2.8 mm on validation, about what predicting the training mean
scores. Three settings take that shortcut away, each drawn anew from a seed per image (any training image can be
rebuilt from its seed):
- `cfg.augment.fresh_samples = N`: each epoch holds the real training images and N *new* thin-plate-spline samples,
  warped in the loader (set `cfg.loader.num_workers = 1` to warp them while the network trains);
  `cfg.augment.warp_from = 'original'` warps the original scan through its grooming transform, one interpolation as
  for the real images;
- `cfg.augment.pose_jitter_mm` / `pose_jitter_deg`: a small rigid move of image and particles together, of the size of
  the registration error, so the network learns to read the pose that registration leaves;
- `cfg.augment.intensity.enabled = True`: random contrast, gamma, noise, blur and a smooth bias field.

The workshop profile uses all three (352 fresh samples an epoch, 1 mm / 1° of pose jitter, the original scans) with a
smaller encoder (channels 8 to 128). They were chosen on the *validation* femurs of two folds with two seeds each
(`bench/results/accuracy_ablation*.json`): on fold 0 they lowered the validation RMSE from 2.26 mm (the stored samples
replayed) to 1.87 mm, against 2.21 mm for the mean shape; on fold 1 they gave 2.54 mm against 2.56 mm, no gain. The
test femurs of those folds did not follow (README "What to expect"): on 26 femurs and 2 CPU cores the network still
reads little of the shape beyond what the registration gives. An epoch now costs about 57 s on 2 cores in float32
(drawing, warping and loading the samples about 15 s of it), so the profile trains 9 epochs and fine-tunes 1, to keep the series within 20 minutes.
"""),
    code("""
live = LivePlot()
result = train.train_deepssm(cfg, callback=live)
print(result.summary())
"""),
    md("""
## The training log
`train_log.csv` holds one row per epoch and stage: the training loss, the training and validation RMSE (mm), the
learning rate and the seconds. The validation error is computed every `val_freq` epochs (and at the last one).
"""),
    code("""
print((paths['model_dir'] / 'train_log.csv').read_text()[:3000])
plot_training_log(result.history)
"""),
    md("""
## Best and final model
`best_model.torch` is saved whenever the validation RMSE improves (the star in the plot); `final_model.torch` after
the last epoch. With few epochs they are often the same; over long runs the best model guards against overfitting.
"""),
    code("""
best = model_files.load_trained_model(paths['model_dir'], use_best=True, fine_tuned=False)
final = model_files.load_trained_model(paths['model_dir'], use_best=False, fine_tuned=False)
for name, m in (('best', best), ('final', final)):
    print(f"{name:>5}: epoch {m.model_info['epoch']}, validation RMSE {m.model_info['val_rmse_mm']:.3f} mm")
"""),
    md("""
## Fine tuning
Fine tuning starts from the best (or final) model, frees the decoder and trains everything with its own loss,
epochs and learning rate (`cfg.deepssm.fine_tune`). The decoder is then no longer the PCA basis: it can bend the
shape space slightly towards the images. Its files end in `_ft`, and prediction uses them when they exist.
The model it starts from is validated first and counts as its epoch 0: if no fine-tuning epoch validates better,
`best_model_ft.torch` is that model (best epoch 0), so fine tuning never hands prediction a model that is worse on
the validation split.
"""),
    code("""
if 'fine_tune' in result.stages:
    ft = model_files.load_trained_model(paths['model_dir'], use_best=True, fine_tuned=True)
    print(result.stages['fine_tune'].history[-1])
    print('relative weight change:', model_files.parameter_changes(best, ft))
"""),
    md("""
## Calibration on the validation split
With a few dozen real femurs, a network can learn to recognise each training subject instead of reading the shape
from the image. The validation subjects, which it never trained on, show how far to trust each predicted PCA score:
`train_deepssm` fits one factor per mode, the least-squares shrinkage of the predicted score towards the mean shape
(0: always the mean, 1: as predicted), and prediction applies it (`cfg.deepssm.calibrate`; see
`deepssm_nb.calibration`). A factor near 1 means the network reads that mode from the image; near 0, that it has not
learned it yet. The validation split also picked the best epoch, so the error after calibration is a little
optimistic; the test subjects of notebook 07 stay untouched.
"""),
    code("""
if result.calibration:
    display(plot_calibration(result.calibration))
"""),
    md("""
## Resuming and rerunning
Calling `train_deepssm(cfg)` again with the same settings finds the finished checkpoints and returns at once. After
an interruption (a closed laptop, a restarted kernel) the same call continues from the last finished epoch and ends
with exactly the weights an uninterrupted run would have. `restart=True` trains from scratch.
"""),
    code("""
t0 = time.perf_counter()
again = train.train_deepssm(cfg)
print(f'rerun: {time.perf_counter() - t0:.2f} s, model used for prediction: {again.model_path.name}')
"""),
    md("""
## Try other settings (optional)
Change the training knobs below, then press **Train again**: it retrains from scratch into its own folder
(`femur_deepssm_try`), so the model above stays as it is. Nothing runs until you press the button, and running the
notebook top to bottom skips this step.
"""),
    code("""
from deepssm_nb.widgets import config_panel, run_button

trial = deepssm_nb.Config.from_dict(cfg.to_dict())
trial.deepssm.model_name = 'femur_deepssm_try'
display(config_panel(trial, sections=('deepssm.trainer', 'deepssm.loss', 'deepssm.fine_tune')))
run_button('Train again', lambda: train.train_deepssm(trial, restart=True, callback=LivePlot()).summary())
"""),
    md("""
## Summary
- Base-DeepSSM is a convolutional regressor of whitened PCA scores followed by a fixed linear PCA decoder.
- It is built from the input size, L and M only; its loss and its error are on particles, in mm.
- One call trains it, logs every epoch, keeps the best and the final model, and resumes after an interruption.
- Fine tuning frees the decoder for a few more epochs at a lower learning rate.
- One factor per PCA mode, fitted on the validation split, shrinks what the network has not learned towards the mean.

## Exercises
1. Train with `precision = 'fp32'` and compare the seconds per epoch and the validation RMSE with `'auto'`.
2. Double `max_epochs`: does the best epoch move, how far apart are the best and final validation errors, and do
   the calibration factors move towards 1?
3. Set `cfg.deepssm.trainer.decay_lr.type = 'Step'` and look at the learning-rate panel of the training plot.
4. Interrupt the training cell (stop the kernel) and run it again: from which epoch does it continue?

## Next
[06 · TL-DeepSSM](06_tl_deepssm.ipynb): a network that learns its own latent space instead of using PCA.
"""),
]

write('05_train_base_deepssm', cells)
