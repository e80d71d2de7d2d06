"""Generate notebooks/06_tl_deepssm.ipynb."""

from nbgen import code, md, params, write

cells = [
    md("""
# 06 · TL-DeepSSM: a learned latent space

Replace the fixed PCA shape space with one learned by a correspondence autoencoder, and train an image encoder (the
"T-flank") to land in it, in three phases: autoencoder, T-flank, then both together.

**You will learn**
- how TL-DeepSSM is built: an autoencoder on the particles (3M -> 1024 -> 512 -> L and back) and an image encoder;
- why training runs in three phases, and which weights learn in each;
- what the focal loss does with its parameters `a` and `c`, compared with the squared error;
- how to check that the image encoder reproduces the autoencoder's latent code.

Prerequisites: [05 · Train Base-DeepSSM](05_train_base_deepssm.ipynb) (this notebook builds the loaders it needs if
they are missing).
"""),
    md("""
## Setup
"""),
    code("""
import deepssm_nb
from deepssm_nb import model_files, models, pipeline, train
from deepssm_nb.loaders import load_train_val_loaders
from deepssm_nb.viz.training import LivePlot, plot_focal_loss, plot_latent_agreement, plot_training_log

deepssm_nb.print_config()
"""),
    md("""
## Parameters
The epochs of the three phases override the profile when set. `loss = 'Focal'` uses the focal loss in every phase.
The model gets its own folder (`model_name`), so the Base-DeepSSM model of notebook 05 stays untouched.
"""),
    params("""
profile = 'workshop'   # 'smoke' (seconds), 'workshop' (CPU laptop), 'full' (GPU)
work_dir = '../deepssm_output'
data_dir = None
model_name = 'femur_tl_deepssm'
ae_epochs = None       # e.g. 20: phase 1, the correspondence autoencoder
tf_epochs = None       # e.g. 20: phase 2, the T-flank (image encoder)
joint_epochs = None    # e.g. 5: phase 3, everything together
alpha = 1.0            # weight of the latent loss in the joint phase
loss = 'MSE'           # 'MSE' or 'Focal'
"""),
    code("""
cfg = deepssm_nb.notebook_config(profile, work_dir, data_dir, {
    'deepssm.model_name': model_name,
    'deepssm.tl_net.enabled': True,
    'deepssm.tl_net.alpha': alpha,
    'deepssm.loss.function': loss,
    'deepssm.tl_net.ae_epochs': ae_epochs,
    'deepssm.tl_net.tf_epochs': tf_epochs,
    'deepssm.tl_net.joint_epochs': joint_epochs,
})  # a None keeps the profile's value
tl = cfg.deepssm.tl_net
paths = cfg.resolved_paths()
pipeline.ensure(cfg, 'loaders')
"""),
    md("""
## The network
Two parts share one latent space of size L. The autoencoder compresses the particles (centred on the mean shape and
scaled) to L numbers and back; its decoder replaces the PCA decoder. The image encoder is the Base-DeepSSM backbone,
with L outputs. At test time only the image path is used: image -> image encoder -> autoencoder's decoder.
"""),
    code("""
train_loader, val_loader, norm = load_train_val_loaders(cfg)
num_latent = len(norm['score_mean'])
net = models.TLDeepSSMNet(in_shape=(1, *norm['image_shape']), num_latent=num_latent,
                          num_correspondences=train_loader.dataset[0]['particles'].shape[0],
                          channels=cfg.deepssm.encoder.channels)
print(model_files.summary(net))
"""),
    md("""
## The focal loss
The focal loss weighs each squared error `l²` by `1 / (1 + exp(a (c - l)))`: errors well below `c` count little,
errors well above `c` count fully. It concentrates training on the particles that are still far off. The
autoencoder phase uses `a_ae`, `c_ae` (mm); the latent losses use `a_lat`, `c_lat`.
"""),
    code("""
print(f'autoencoder: a={tl.a_ae}, c={tl.c_ae} mm; latent: a={tl.a_lat}, c={tl.c_lat}')
plot_focal_loss(a=tl.a_ae, c=tl.c_ae)
"""),
    md("""
## Three phases
1. **Autoencoder** (`ae_epochs`): only the autoencoder learns, to reconstruct the particles.
2. **T-flank** (`tf_epochs`): the autoencoder is frozen; the image encoder learns to output the autoencoder's latent
   code of the true particles.
3. **Joint** (`joint_epochs`): everything learns; the loss is the reconstruction loss plus `alpha` times the latent
   loss. Its best and final models are `best_model.torch` and `final_model.torch`.

The RMSE in the log is that of the reconstruction in phase 1 and of the image path in phases 2 and 3.
"""),
    code("""
live = LivePlot()
result = train.train_deepssm(cfg, callback=live)
print(result.summary())
plot_training_log(result.history)
"""),
    md("""
## Which weights learned in which phase
The relative change of each part's weights between the end of two phases: in the T-flank phase the autoencoder
does not move at all; in the joint phase everything does.
"""),
    code("""
files = {name: paths['model_dir'] / f'final_model{sfx}.torch' for name, sfx in
         (('autoencoder', '_ae'), ('T-flank', '_tf'), ('joint', ''))}
print('T-flank phase:', model_files.parameter_changes(files['autoencoder'], files['T-flank']))
print('joint phase:  ', model_files.parameter_changes(files['T-flank'], files['joint']))
"""),
    md("""
## Does the image land in the right place?
For each validation sample: the latent code the image encoder predicts from the image, against the code the
autoencoder gives to the true particles. Points on the diagonal are perfect predictions.
"""),
    code("""
tl_net = model_files.load_trained_model(paths['model_dir'])
plot_latent_agreement(tl_net, val_loader, max_dims=4)
"""),
    md("""
## Try other settings (optional)
Change the TL-DeepSSM knobs below (the phase epochs, `alpha`, the loss), then press **Train again**: it retrains from
scratch into its own folder (`femur_tl_deepssm_try`), so the model above stays as it is. Nothing runs until you press
the button, and running the notebook top to bottom skips this step.
"""),
    code("""
from deepssm_nb.widgets import config_panel, run_button

trial = deepssm_nb.Config.from_dict(cfg.to_dict())
trial.deepssm.model_name = f'{model_name}_try'
display(config_panel(trial, sections=('deepssm.tl_net', 'deepssm.loss', 'deepssm.trainer')))
run_button('Train again', lambda: train.train_deepssm(trial, restart=True, callback=LivePlot()).summary())
"""),
    md("""
## Summary
- TL-DeepSSM learns its shape space with an autoencoder instead of taking it from PCA.
- Training runs in three phases: autoencoder; T-flank with the autoencoder frozen; both together, weighted by `alpha`.
- The focal loss damps errors below `c` and keeps errors above `c` at full weight; `a` sets how sharp the switch is.
- At test time the image path (image encoder, then the autoencoder's decoder) gives the particles.

## Exercises
1. Compare the validation RMSE of the joint phase with the Base-DeepSSM result of notebook 05. Which is lower here?
2. Train with `loss = 'Focal'` and look at the first epochs of the autoencoder phase: what changes?
3. Set `alpha = 0`: what does the joint phase then optimise, and how does the latent agreement plot change?

## Next
[07 · Test DeepSSM](07_test_deepssm.ipynb): predict the particles of the held-out test images.
"""),
]

write('06_tl_deepssm', cells)
