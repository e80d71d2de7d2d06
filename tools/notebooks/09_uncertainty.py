"""Generate notebooks/09_uncertainty.ipynb."""

from nbgen import code, md, params, write

cells = [
    md("""
# 09 · Uncertain-DeepSSM: where a predicted shape can be trusted

A predicted femur without an error bar is hard to use: nothing says which femur, or which part of it, is wrong.
Uncertain-DeepSSM (Adams, Bhalodia and Elhabian, 2020) gives every predicted particle a standard deviation in mm.
Train it on top of the model of notebook 05, see its uncertainty beside the actual error, and check that it rises
on images unlike the training ones.

**You will learn**
- how a stochastic encoder predicts a variance for each PCA score, and why it is trained with a Gaussian
  likelihood after an MSE burn-in, with gradient clipping;
- how Monte Carlo dropout adds the network's own doubt (epistemic) to the noise it expects in the image
  (aleatoric), and how both reach the particles through the PCA decoder;
- how to judge an uncertainty: heat maps beside the error, a scatter with Pearson's r, and the coverage of the
  95 % interval;
- how the uncertainty flags corrupted images and images with no femur at all.

Prerequisites: [05 · Train Base-DeepSSM](05_train_base_deepssm.ipynb). This notebook reuses its trained stages
(the same `model_name`), and trains them itself if they are missing.
"""),
    md("""
## Setup
"""),
    code("""
import deepssm_nb
from deepssm_nb import pipeline, predict
from deepssm_nb.uncertainty_analysis import analyze_uncertainty, ood_check
from deepssm_nb.viz import surface as vsurf
from deepssm_nb.viz import uncertainty as viz_unc
from deepssm_nb.viz.training import plot_training_log

deepssm_nb.print_config()
"""),
    md("""
## Parameters
Three seed keys turn the model stochastic: `deepssm.encoder.deterministic: false` here. The two others,
`deepssm.decoder.linear: false` (a small MLP decoder that starts as the PCA decoder) and
`deepssm.loss.supervised_latent: false` (a loss on the particles only, no PCA scores), work with it or without it;
try them in the exercises. `None` keeps the profile's value.
"""),
    params("""
profile = 'workshop'      # 'smoke' (seconds), 'workshop' (CPU laptop), 'full' (GPU)
work_dir = '../deepssm_output'
data_dir = None
uncertainty_epochs = None  # epochs of the uncertainty stage (workshop: 3)
mc_passes = None           # Monte Carlo dropout passes per image (workshop: 20)
backend = None             # 3D views: None (automatic), 'trame', 'html' or 'static'
"""),
    code("""
settings = {
    'deepssm.encoder.deterministic': False,
    'deepssm.uncertainty.epochs': uncertainty_epochs,
    'deepssm.uncertainty.mc_passes': mc_passes,
}
cfg = deepssm_nb.notebook_config(profile, work_dir, data_dir, settings)
vsurf.setup_pyvista(backend)
cfg.deepssm.uncertainty
"""),
    md("""
## The stochastic encoder
The encoder of notebook 05 gets a second head: beside the mean $\\mu_l$ of each whitened PCA score it predicts
$\\log \\sigma_l^2$. Its loss is the Gaussian negative log-likelihood of the true score $y_l$,

$$\\mathrm{NLL} = \\tfrac12 \\big(\\log \\sigma_l^2 + (\\mu_l - y_l)^2 / \\sigma_l^2\\big),$$

small when the error is small, and when it is large only if $\\sigma_l$ owns up to it. Switched on at once, the
term $1/\\sigma^2$ lets early, wrong predictions blow the gradients up; so the stage trains on the particle loss
alone for `burn_in_epochs`, blends the likelihood in over `ramp_epochs`, and clips every gradient to `grad_clip`.
The particle loss stays in the sum, so the means keep their objective.

This stage starts from the trained model of notebook 05: its base and fine-tuning stages are reused (they are
finished and their settings have not changed), and only the fully connected layers and both heads learn. The
variance head starts at the residual variance of that model on training batches; the stage then learns which
images are harder than others.
"""),
    code("""
result = pipeline.ensure(cfg, 'train')
print(result.summary())
plot_training_log(result.history)
"""),
    md("""
## Predicting with Monte Carlo dropout
Each test image passes through the fully connected layers `mc_passes` times, with dropout on and the same seeded
masks for every image. In each pass the predicted score variances reach the particles through the decoder. The
PCA decoder is linear, so this is exact: $\\Sigma_x = W\\,\\mathrm{diag}(\\sigma^2 s^2)\\,W^T$, with $W$ the PCA modes
and $s$ the score spread (a non-linear decoder is sampled instead). By the law of total covariance, the *aleatoric*
part is the mean of the passes' covariances and the *epistemic* part the covariance of the passes' predicted
particles. A particle's uncertainty is the root of the trace of its 3 x 3 covariance, in mm.

Prediction writes, beside each `.particles` file, a `.std` file: a header line
`# aleatoric_mm epistemic_mm total_mm` and one row per particle. It also fits the threshold for the `uncertain`
flag: the 95th percentile of the mean uncertainty of the validation images.
"""),
    code("""
predictions = predict.test_deepssm(cfg, overwrite=True)
std_file = next(iter(predictions.local)).with_suffix('.std')
print(std_file.name, *std_file.read_text().splitlines()[:4], sep='\\n')
"""),
    md("""
## Uncertainty against error, femur by femur
`analyze_uncertainty` reads every test femur's `.std` file and its actual particle errors (predicted against true
particles, in the image's own frame). The table gives the means per femur; `uncertain` is the flag of prediction.
"""),
    code("""
ua = analyze_uncertainty(cfg)
ua.table()
"""),
    md("""
Three figures say how good the uncertainty is:
- **Pearson r per femur**: do the femurs with larger predicted uncertainty have larger errors? Near 1 is useful,
  near 0 says nothing.
- **Pearson r per particle**: does it find the regions of a femur that are wrong?
- **coverage_95**: the fraction of particle errors inside the predicted 95 % ball (radius 1.614 times the total
  uncertainty, the 95 % ball of an isotropic 3D Gaussian). 0.95 is calibrated; below, the network is
  over-confident; above, it is too cautious.
"""),
    code("""
summary = ua.summary()
{k: round(v, 3) for k, v in summary.items() if k.startswith(('pearson', 'coverage', 'mean_'))}
"""),
    code("""
viz_unc.plot_uncertainty_vs_error(ua.subject_std(), ua.subject_error(), labels=ua.ids)
"""),
    code("""
viz_unc.plot_uncertainty_vs_error(ua.std['total_mm'], ua.error_mm, kind='particle')
"""),
    md("""
## Heat maps: error beside uncertainty
The femur with the largest error, twice: coloured by its surface distance to the truth (left) and by the predicted
total uncertainty (right), with one colour range and linked cameras. Where the uncertainty is useful, the hot
regions coincide. The error is a distance to the true surface, along its normal; the uncertainty is the spread in
all three directions, so it runs larger even where it is right.
"""),
    code("""
analysis = pipeline.ensure(cfg, 'analyze', verbose=False)
worst = ua.ids[int(ua.subject_error().argmax())]
vsurf.show(viz_unc.plot_uncertainty(*ua.meshes(analysis, worst)))
"""),
    md("""
Pick another femur, or the aleatoric or epistemic part alone. Aleatoric is what the network expects to miss on
this image; epistemic is how much its dropout passes disagree (it shrinks with more training data).
"""),
    code("""
viz_unc.UncertaintyViewer(ua, analysis, subject=worst)
"""),
    md("""
## Out of distribution: harder images
A clinician will feed the network images it never saw the like of. Each test image is corrupted five ways: strong
noise, blur, the volume shifted by 15 % of its size, inverted intensities, and the femur replaced by the
tissue around it. A useful uncertainty rises on them; `ood_auroc` is the chance that a corrupted image gets a higher
mean uncertainty than a clean one (0.5: chance, 1: always). The dashed line is the validation threshold above which
prediction says `uncertain: true`.
"""),
    code("""
ood = ood_check(cfg)
print(f"mean uncertainty: ood_auroc {ood['ood_auroc']:.2f};", {k: round(v, 2) for k, v in ood['auroc'].items()})
viz_unc.plot_ood(ood['mean_total_mm'], threshold=ood['threshold_mm'])
"""),
    md("""
The uncertainty was learnt on training-like images, and nothing in its loss makes it grow on images unlike all of
them. A second score asks that question directly: the **feature distance**, how far the encoder's 96 features of
an image lie from those of the training images (a Mahalanobis distance, `deepssm_nb.novelty`). Prediction flags an
image `uncertain` when either score is above its validation level (`uncertain_by` says which).
"""),
    code("""
by_kind = {k: round(v, 2) for k, v in ood['auroc_feature_distance'].items()}
print(f"feature distance: ood_auroc {ood['ood_auroc_feature_distance']:.2f};", by_kind)
print('flagged uncertain (either score):', {k: round(v, 2) for k, v in ood['flagged'].items()})
viz_unc.plot_ood(ood['feature_distance'], threshold=ood['feature_threshold'], score='feature_distance')
"""),
    md("""
## What to expect
The benchmark `bench/uncertainty.py` trains this notebook's model on the same 7 folds as the accuracy benchmark (26
test femurs, `bench/results/uncertainty_workshop.json`, README "What to expect"). At the `workshop` size it measured:
- a surface distance of 0.816 mm against 0.828 mm for the deterministic model: the error bars cost no accuracy;
- `coverage_95` 0.968: the 95 % ball holds about as many errors as it claims (the uncertainty has the right size);
- Pearson r 0.38 per femur and 0.31 per particle: the uncertainty ranks femurs and regions by their error only
  weakly, so do not read much into the order of the femurs in the scatter above. On validation images
  (`bench/results/error_ranking_workshop.json`) no score that prediction computes does better: at this size the
  network reads little shape, and its error is mostly how far a femur lies from the mean shape;
- out of distribution, an AUROC of 0.57 over the 26 femurs (0.33-1.00 per fold): noise raises the uncertainty
  clearly, blur, a shift and inversion barely, and an image with the femur painted out *lowers* it. With about 20
  training femurs the network answers with confidence where there is nothing to read: an uncertainty from the
  network itself does not replace a check that the image shows a femur at all.
- the feature distance is that check. Chosen on validation images only (folds 0-1,
  `bench/results/ood_scores_workshop.json`), it separates corrupted from clean images with an AUROC of 0.92,
  against 0.64 for the mean uncertainty; on the 26 test femurs of the 7 folds, 0.93 (0.57 for the uncertainty).
  Together the two scores flag every noisy, inverted and femur-less image, 85-88 % of the blurred and shifted
  ones, and 38 % of the clean ones: a flag asks for a look, it does not reject the image.

With the 2 test femurs of the `smoke` profile, Pearson r per femur is undefined, and the figures mean little.

## A single new image
`predict.predict_image(path, cfg, return_uncertainty=True)` registers and predicts one image file, writes its
`.particles` and `.std` files, and returns the mean uncertainties and the `uncertain` flag; the command line does
the same: `deepssm-nb predict --config CONFIG IMAGE` prints them.

## Summary
- A stochastic encoder predicts a mean and a log-variance per PCA score, trained with a Gaussian likelihood after an
  MSE burn-in, with gradient clipping; Monte Carlo dropout adds the epistemic part.
- Through the linear PCA decoder the score covariance reaches every particle exactly; the `.std` file holds the
  aleatoric, epistemic and total standard deviation of each particle, in mm.
- Judge an uncertainty by its ranking (Pearson r per femur and per particle), its size (coverage of the 95 %
  interval) and its response to images unlike the training ones (AUROC, the `uncertain` flag).

## Exercises
1. Set `cfg.deepssm.decoder.linear = False` and run again: the decoder becomes an MLP (it starts as the PCA decoder,
   so the first epoch gives the same shapes) and the uncertainty is propagated by sampling. Does the error change?
2. Set `cfg.deepssm.loss.supervised_latent = False`: the loss is on the particles only. Compare the uncertainty.
3. Pass `mc_passes = 1`: only the aleatoric part is left. How much of the out-of-distribution rise was epistemic?

## Next
This is the last notebook of the series. Go back to [00 · Setup](00_setup.ipynb) and run the `full` profile on a GPU,
or point `cfg.data.cohort` at your own ShapeWorks-style folder.
"""),
]

write('09_uncertainty', cells)
