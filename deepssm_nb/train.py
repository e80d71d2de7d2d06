"""Training Base-DeepSSM and TL-DeepSSM.

Longer than most modules: it plans every training stage of both networks (base, fine tuning, the three TL
phases) and their fingerprints; the epoch loop itself is in :mod:`~deepssm_nb.train_loop`.

* :func:`fit` trains a built :class:`~deepssm_nb.models.DeepSSMNet` on two
  loaders (the base stage, or fine tuning with ``stage='fine_tune'``).
* :func:`fit_tl` trains a :class:`~deepssm_nb.models.TLDeepSSMNet` in its
  three phases: the correspondence autoencoder; the image encoder (T-flank)
  with the autoencoder frozen; both jointly with the latent loss weighted by
  ``alpha``.
* :func:`train_deepssm` wires it all from a :class:`~deepssm_nb.config.Config`.

The loss is computed on particles (mm\\ :sup:`2`), through the frozen PCA
decoder for the base network. Errors are logged as **RMSE in mm: the root of
the mean squared per-particle Euclidean distance** (columns ``train_rmse_mm``
and ``val_rmse_mm`` of ``train_log.csv``); the best model is the one with the
lowest ``val_rmse_mm``. Every epoch writes ``checkpoint*.pt`` atomically; a
rerun with the same settings resumes from it and ends with the same weights as
an uninterrupted run (CPU, same seed), and a finished run returns at once.

Files in ``model_dir``: ``best_model.torch``, ``final_model.torch`` (and
``*_ft.torch`` after fine tuning, ``*_ae.torch`` / ``*_tf.torch`` for the
first two TL phases), ``train_log.csv``, ``checkpoint*.pt``.

Example:
    >>> result = train_deepssm(cfg)                      # doctest: +SKIP
    >>> net = model_files.load_trained_model(result.model_dir)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._validation import ConfigError, DataError
from .checkpoints import fingerprint_diffs, load_checkpoint, read_train_log
from .config import Config, DecayLRConfig, TLNetConfig, TrainerConfig, UncertaintyConfig
from .io import plain
from .losses import get_loss
from .model_files import load_model_file
from .models import (
    DeepSSMNet,
    TLDeepSSMNet,
    build_model,
    init_pca_decoder,
    input_box,
    set_input_mask,
)
from .train_loop import (
    FitResult,
    StageSpec,
    resolve_precision,
    run_stage,
    stage_result,
)
from .training_set import shapes_loader

__all__ = [
    'TrainResult',
    'base_spec',
    'fine_tune',
    'fit',
    'fit_tl',
    'train_deepssm',
    'uncertainty_spec',
]

Callback = Callable[[dict], Any]


# --------------------------------------------------------------------------- stage specifications


def _settings(tc: TrainerConfig, **extra: Any) -> dict[str, Any]:
    return {
        'epochs': tc.epochs,
        'learning_rate': tc.learning_rate,
        'decay_lr': dataclasses.asdict(tc.decay_lr),
        'val_freq': tc.val_freq,
        'weight_decay': tc.weight_decay,
        'early_stopping': tc.early_stopping,
        'seed': tc.seed,
        **extra,
    }


def _spec(name: str, suffix: str, tc: TrainerConfig, step, trainable, **extra: Any) -> StageSpec:
    return StageSpec(
        name=name,
        suffix=suffix,
        epochs=tc.epochs,
        learning_rate=tc.learning_rate,
        step=step,
        trainable=trainable,
        decay=tc.decay_lr,
        val_freq=tc.val_freq,
        weight_decay=tc.weight_decay,
        early_stopping=tc.early_stopping,
        seed=tc.seed,
        settings=_settings(tc, **extra),
    )


def _mean_loss(loss_fn, supervised_latent: bool, tied: bool):
    """The particle loss of a batch; with a trainable decoder and a supervised latent, plus the latent's tie.

    The tie compares the PCA decoding of the predicted latent with that of the true whitened scores, so it is in
    mm² like the particle loss, and keeps the latent vector the PCA scores while the decoder learns.
    """

    def mean_loss(net, b, z, pred, target):
        value = loss_fn(pred, target)
        if supervised_latent and tied:
            value = value + loss_fn(net.decoder.pca(z), net.decoder.pca(b.scores))
        return value

    return mean_loss


def _flags(linear: bool, supervised_latent: bool) -> dict[str, Any]:
    """The decoder and latent flags, in a stage's settings only when not the defaults (old runs stay valid)."""
    out: dict[str, Any] = {}
    if not linear:
        out['decoder_linear'] = False
    if not supervised_latent:
        out['supervised_latent'] = False
    return out


def base_spec(
    tc: TrainerConfig,
    stage: str,
    loss: str,
    focal_a: float,
    focal_c: float,
    *,
    linear: bool = True,
    supervised_latent: bool = True,
) -> StageSpec:
    """The base or fine-tuning stage of Base-DeepSSM.

    With the linear decoder and a supervised latent (the defaults) the decoder is the frozen PCA decoder in the
    base stage, so the particle loss is a loss on the PCA scores. A non-linear decoder (``linear=False``) or a
    free latent (``supervised_latent=False``) trains the decoder with the encoder from the start; with a
    supervised latent the loss then adds the latent's tie to the true scores (see :func:`_mean_loss`).
    """
    loss_fn = get_loss(loss, a=focal_a, c=focal_c)
    free_decoder = not (linear and supervised_latent)
    decoder_learns = stage == 'fine_tune' or free_decoder
    mean_loss = _mean_loss(loss_fn, supervised_latent, tied=free_decoder)

    def step(net, b):
        target = b.particles
        z, pred = net(b.images)
        return mean_loss(net, b, z, pred, target), pred, target

    trainable = (lambda net: [net.encoder, net.decoder]) if decoder_learns else (lambda net: [net.encoder])
    extra = {'loss': loss, 'focal_a': focal_a, 'focal_c': focal_c, **_flags(linear, supervised_latent)}
    if stage == 'base':
        return _spec('base', '', tc, step, trainable, **extra)
    if stage == 'fine_tune':
        return dataclasses.replace(_spec('fine_tune', '_ft', tc, step, trainable, **extra), keep_start=True)
    raise ConfigError(f"stage must be 'base' or 'fine_tune'; got {stage!r}.")


_PREDICTION_KEYS = ('mc_passes', 'mc_seed', 'threshold_quantile')  # used at prediction only: no retraining


def uncertainty_spec(
    tc: TrainerConfig,
    uc: UncertaintyConfig,
    loss: str,
    focal_a: float,
    focal_c: float,
    *,
    linear: bool = True,
    supervised_latent: bool = True,
) -> StageSpec:
    """The stage of the stochastic encoder (Uncertain-DeepSSM), started from the trained model.

    Loss: the particle loss of the base stage, plus ``w(epoch)`` times a Gaussian negative log-likelihood, with
    ``w`` 0 for ``burn_in_epochs`` and then rising to 1 over ``ramp_epochs``
    (:func:`~deepssm_nb.uncertainty.nll_weight`). The particle loss stays, so the means keep the objective of
    the deterministic model; the likelihood teaches the variances. With a supervised latent the likelihood is
    that of the true whitened scores; with a free latent it is that of the true particles, each coordinate with
    the variance the decoder propagates from the latent's (its Jacobian at the mean, exact for the linear
    decoder). Gradients are clipped to ``grad_clip``. Only the fully connected layers and both heads learn
    unless ``train_backbone``; the decoder learns too when it learned in the base stage.
    """
    from .uncertainty import gaussian_nll, nll_weight, particle_nll

    loss_fn = get_loss(loss, a=focal_a, c=focal_c)
    decoder_learns = not (linear and supervised_latent)
    mean_loss = _mean_loss(loss_fn, supervised_latent, tied=decoder_learns)

    def step(net, b):
        target = b.particles
        mean, log_var = net.encode(b.images)
        pred = net.decoder(mean)
        value = mean_loss(net, b, mean, pred, target)
        w = nll_weight(b.epoch, uc.burn_in_epochs, uc.ramp_epochs)
        if w > 0:
            if supervised_latent:
                nll = gaussian_nll(mean, log_var, b.scores)
            else:
                nll = particle_nll(pred, net.decoder.jacobian(mean.detach()).detach(), log_var, target)
            value = value + w * nll
        return value, pred, target

    def trainable(net):
        enc = net.encoder
        mods = [enc] if uc.train_backbone else [enc.backbone.fc, enc.head, enc.log_var_head]
        return [*mods, net.decoder] if decoder_learns else mods

    spec = _spec(
        'uncertainty',
        '_unc',
        dataclasses.replace(tc, epochs=uc.epochs, learning_rate=uc.learning_rate),
        step,
        trainable,
        loss=loss,
        focal_a=focal_a,
        focal_c=focal_c,
        uncertainty={k: v for k, v in dataclasses.asdict(uc).items() if k not in _PREDICTION_KEYS},
        **_flags(linear, supervised_latent),
    )
    return dataclasses.replace(spec, grad_clip=uc.grad_clip)


def _tl_specs(tc: TrainerConfig, tl: TLNetConfig, loss: str) -> list[StageSpec]:
    ae_loss = get_loss(loss, a=tl.a_ae, c=tl.c_ae)
    lat_loss = get_loss(loss, a=tl.a_lat, c=tl.c_lat)

    def ae_step(net, b):
        target = b.particles
        _, recon = net.autoencode(target)
        return ae_loss(recon, target), recon, target

    def tf_step(net, b):
        target = b.particles
        with torch.no_grad():
            z_ae = net.encode_particles(target)
        z_img = net.image_encoder(b.images)
        with torch.no_grad():
            pred = net.decode(z_img)
        return lat_loss(z_img, z_ae), pred, target

    def joint_step(net, b):
        target = b.particles
        z_ae, recon = net.autoencode(target)
        z_img = net.image_encoder(b.images)
        with torch.no_grad():
            pred = net.decode(z_img)
        return ae_loss(recon, target) + tl.alpha * lat_loss(z_img, z_ae), pred, target

    extra = {'loss': loss, **dataclasses.asdict(tl)}
    ae = lambda net: [net.ae_encoder, net.ae_decoder]
    return [
        _spec('tl_ae', '_ae', dataclasses.replace(tc, epochs=tl.ae_epochs), ae_step, ae, **extra),
        _spec(
            'tl_tf',
            '_tf',
            dataclasses.replace(tc, epochs=tl.tf_epochs),
            tf_step,
            lambda net: [net.image_encoder],
            **extra,
        ),
        _spec(
            'tl_joint',
            '',
            dataclasses.replace(tc, epochs=tl.joint_epochs),
            joint_step,
            lambda net: [net.image_encoder, *ae(net)],
            **extra,
        ),
    ]


# --------------------------------------------------------------------------- public training functions


def _device(trainer_cfg: TrainerConfig, device: str | torch.device | None) -> torch.device:
    from .device import get_device

    return torch.device(device) if device is not None else get_device(trainer_cfg.device)


def fit(
    net: DeepSSMNet,
    train_loader: Any,
    val_loader: Any,
    *,
    trainer_cfg: TrainerConfig,
    model_dir: str | os.PathLike,
    loss: str = 'MSE',
    focal_a: float = 1.32,
    focal_c: float = 10.0,
    stage: str = 'base',
    normalization: dict | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    restart: bool = False,
    device: str | torch.device | None = None,
) -> FitResult:
    """Train a Base-DeepSSM network on particles through its PCA decoder.

    Args:
        net: A :class:`DeepSSMNet` with its PCA decoder set (:func:`~deepssm_nb.models.init_pca_decoder`).
        train_loader: Yields dicts with ``'image'`` ``(B, 1, D, H, W)`` and ``'particles'`` ``(B, M, 3)`` mm.
        val_loader: The same, for validation (no shuffling needed).
        trainer_cfg: Epochs, learning rate and its decay, ``val_freq``,
            ``weight_decay``, ``early_stopping``, ``device``, ``precision``, ``seed``.
        model_dir: Output folder (model files, log, checkpoint).
        loss: ``'MSE'`` or ``'Focal'`` (with ``focal_a``, ``focal_c`` in mm).
        stage: ``'base'`` (decoder frozen; files ``best_model.torch``...) or
            ``'fine_tune'`` (decoder trained too; files ``*_ft.torch``).
        normalization: The loaders' whitening statistics, stored in the model files.
        callback: Called after every epoch with the log row (plus ``'epochs'``);
            e.g. a :class:`deepssm_nb.viz.training.LivePlot`.
        progress: Show progress bars.
        restart: Ignore an existing checkpoint and train from scratch.
        device: Overrides ``trainer_cfg.device``.

    Returns:
        A :class:`FitResult` (history, best epoch and RMSE, file paths).
    """
    if not isinstance(net, DeepSSMNet):
        raise TypeError(f'fit trains a DeepSSMNet; got {type(net).__name__} (use fit_tl for TL-DeepSSM).')
    dev = _device(trainer_cfg, device)
    spec = base_spec(trainer_cfg, stage, loss, focal_a, focal_c)
    return run_stage(
        net,
        train_loader,
        val_loader,
        spec,
        model_dir=Path(model_dir),
        device=dev,
        precision=resolve_precision(trainer_cfg.precision, dev),
        normalization=normalization,
        callback=callback,
        progress=progress,
        restart=restart,
    )


def fine_tune_config(trainer_cfg: TrainerConfig, fine_tune_cfg: Any) -> TrainerConfig:
    """The trainer settings of fine tuning: its own epochs, rate and cosine decay (over its epochs)."""
    decay = DecayLRConfig(
        enabled=bool(fine_tune_cfg.decay_lr), type='CosineAnnealing', parameters={'T_max': 0, 'eta_min': 0.0}
    )
    return dataclasses.replace(
        trainer_cfg,
        epochs=fine_tune_cfg.epochs,
        learning_rate=fine_tune_cfg.learning_rate,
        decay_lr=decay,
        val_freq=fine_tune_cfg.val_freq,
        seed=trainer_cfg.seed + 1,
    )


def fine_tune(
    net: DeepSSMNet,
    train_loader: Any,
    val_loader: Any,
    *,
    trainer_cfg: TrainerConfig,
    fine_tune_cfg: Any,
    model_dir: str | os.PathLike,
    **kwargs: Any,
) -> FitResult:
    """Fine tuning: train encoder and (freed) PCA decoder with ``fine_tune_cfg``'s loss, epochs and rate.

    Keyword arguments are passed to :func:`fit`; the files end in ``_ft``.
    The incoming model is validated first and counts as epoch 0, so
    ``best_model_ft.torch`` is that model when no fine-tuning epoch validates
    better (``best_epoch == 0``).
    """
    return fit(
        net,
        train_loader,
        val_loader,
        trainer_cfg=fine_tune_config(trainer_cfg, fine_tune_cfg),
        model_dir=model_dir,
        loss=fine_tune_cfg.loss,
        stage='fine_tune',
        **kwargs,
    )


def fit_tl(
    net: TLDeepSSMNet,
    train_loader: Any,
    val_loader: Any,
    *,
    trainer_cfg: TrainerConfig,
    tl_cfg: TLNetConfig,
    model_dir: str | os.PathLike,
    loss: str = 'MSE',
    normalization: dict | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    restart: bool = False,
    device: str | torch.device | None = None,
) -> dict[str, FitResult]:
    """Train TL-DeepSSM in three phases (each a stage with its own checkpoint and schedule).

    1. ``tl_ae``: the correspondence autoencoder (``ae_epochs``); loss on the
       reconstructed particles (Focal with ``a_ae``, ``c_ae`` when ``loss='Focal'``).
    2. ``tl_tf``: the image encoder, autoencoder frozen (``tf_epochs``); loss
       between its latent and the autoencoder's (Focal with ``a_lat``, ``c_lat``).
    3. ``tl_joint``: everything (``joint_epochs``); autoencoder loss + ``alpha``
       x latent loss. Its best and final models are ``best_model.torch`` and
       ``final_model.torch``.

    The logged RMSE is that of the autoencoder's reconstruction in phase 1
    and of the image path (image -> latent -> decoder) in phases 2 and 3.

    Returns:
        ``{'tl_ae': FitResult, 'tl_tf': ..., 'tl_joint': ...}``.
    """
    if not isinstance(net, TLDeepSSMNet):
        raise TypeError(f'fit_tl trains a TLDeepSSMNet; got {type(net).__name__}.')
    dev = _device(trainer_cfg, device)
    precision = resolve_precision(trainer_cfg.precision, dev)
    results = {}
    for spec in _tl_specs(trainer_cfg, tl_cfg, loss):
        results[spec.name] = run_stage(
            net,
            shapes_loader(train_loader) if spec.name == 'tl_ae' else train_loader,
            val_loader,
            spec,
            model_dir=Path(model_dir),
            device=dev,
            precision=precision,
            normalization=normalization,
            callback=callback,
            progress=progress,
            restart=restart,
        )
    return results


# --------------------------------------------------------------------------- from a Config


@dataclass
class TrainResult:
    """What :func:`train_deepssm` produced.

    Attributes:
        model_dir: The output folder.
        kind: ``'base'`` or ``'tl'``.
        stages: One :class:`FitResult` per stage, in training order.
        history: All log rows (``train_log.csv``).
        model_path: The model prediction should use (fine-tuned when fine
            tuning ran; best or final by ``use_best_model``).
        calibration: Its validation calibration record (``alpha``,
            ``val_rmse_mm_before``, ``val_rmse_mm_after``; see
            :mod:`deepssm_nb.calibration`), or None (TL-DeepSSM, or
            ``deepssm.calibrate`` off).
    """

    model_dir: Path
    kind: str
    stages: dict[str, FitResult]
    history: list[dict[str, Any]]
    model_path: Path
    calibration: dict[str, Any] | None = None

    @property
    def main(self) -> FitResult:
        """The base (or TL joint) stage."""
        return self.stages['base' if self.kind == 'base' else 'tl_joint']

    def summary(self) -> str:
        """One line per stage: epochs, best epoch and validation RMSE, time."""
        lines = [
            f'{"stage":<10} {"epochs":>6} {"best epoch":>10} {"best val mm":>11} {"final val mm":>12} {"minutes":>8}'
        ]
        for name, r in self.stages.items():
            lines.append(
                f'{name:<10} {len(r.history):>6} {r.best_epoch:>10} {r.best_val_rmse_mm:>11.3f} '
                f'{r.final_val_rmse_mm:>12.3f} {r.seconds / 60:>8.1f}'
            )
        if self.calibration:
            c = self.calibration
            lines.append(
                f'calibration: validation RMSE {c["val_rmse_mm_before"]:.3f} -> {c["val_rmse_mm_after"]:.3f} '
                f'mm; factors per mode {" ".join(f"{a:.2f}" for a in c["alpha"])}'
            )
        return '\n'.join(lines)


def _seed(cfg: Config, *extra: int) -> int:
    return int(np.random.SeedSequence([cfg.seed, cfg.deepssm.trainer.seed, *extra]).generate_state(1)[0])


def _training_data(cfg: Config) -> dict[str, Any]:
    """The training-time augmentation settings (part of every stage's fingerprint, so a change retrains)."""
    a = cfg.augment
    if not a.fresh_samples and not a.intensity.enabled:
        return {}
    return {
        'fresh_samples': a.fresh_samples,
        'pose_jitter_mm': a.pose_jitter_mm,
        'pose_jitter_deg': a.pose_jitter_deg,
        'warp_from': a.warp_from,
        'intensity': dataclasses.asdict(a.intensity) if a.intensity.enabled else None,
    }


def _plan(cfg: Config) -> tuple[str, TrainerConfig, list[StageSpec]]:
    ds = cfg.deepssm
    tc = dataclasses.replace(ds.trainer, seed=_seed(cfg))
    if ds.tl_net.enabled:
        kind, specs = 'tl', _tl_specs(tc, ds.tl_net, ds.loss.function)
    else:
        flags = {'linear': ds.decoder.linear, 'supervised_latent': ds.loss.supervised_latent}
        kind, specs = 'base', [base_spec(tc, 'base', ds.loss.function, ds.loss.focal_a, ds.loss.focal_c, **flags)]
        if ds.fine_tune.enabled:
            ft = fine_tune_config(tc, ds.fine_tune)
            specs.append(base_spec(ft, 'fine_tune', ds.fine_tune.loss, ds.loss.focal_a, ds.loss.focal_c, **flags))
        if not ds.encoder.deterministic:
            specs.append(
                uncertainty_spec(
                    dataclasses.replace(tc, seed=tc.seed + 2),
                    ds.uncertainty,
                    ds.loss.function,
                    ds.loss.focal_a,
                    ds.loss.focal_c,
                    **flags,
                )
            )
    data = _training_data(cfg)
    if data:
        specs = [dataclasses.replace(s, settings={**s.settings, 'training_data': data}) for s in specs]
    # the encoder's numbers, so that a finished run with other ones is not taken for this one
    encoder = {
        'channels': list(ds.encoder.channels),
        'dropout': ds.encoder.dropout,
        'input_margin_mm': ds.encoder.input_margin_mm,
    }
    specs = [dataclasses.replace(s, settings={**s.settings, 'encoder': encoder}) for s in specs]
    return kind, tc, specs


def input_mask(normalization: dict[str, Any], mean_shape: np.ndarray, margin: float) -> np.ndarray:
    """The encoder's input mask: the voxels of the loader grid within ``margin`` mm of the mean shape.

    Args:
        normalization: The loaders' ``normalization.json`` dict (its ``grid`` and ``image_shape``).
        mean_shape: (M, 3) mean training particles in the groomed frame, mm.
        margin: Half-width of the band around the particles, mm (widened to the particles' spacing).

    Returns:
        (D, H, W) uint8 mask on the loader grid.

    Raises:
        DataError: The loaders hold no grid (built by an older version), or no voxel is that close.
    """
    import SimpleITK as sitk

    from .imageops import ImageGrid
    from .registration import surface_band

    grid = normalization.get('grid')
    if not grid:
        raise DataError('encoder.input_margin_mm needs the loader grid in normalization.json; rebuild the loaders.')
    shape = tuple(int(n) for n in normalization['image_shape'])
    image = ImageGrid(
        shape,
        np.asarray(grid['origin'], float),
        np.asarray(grid['spacing'], float),
        np.asarray(grid['direction'], float).reshape(3, 3),
    ).to_image(np.zeros(shape, np.uint8))
    mask = sitk.GetArrayFromImage(surface_band(image, np.asarray(mean_shape, dtype=np.float64), margin, dense=False))
    if not mask.any():
        raise DataError(
            f'encoder.input_margin_mm={margin}: no voxel of the loader grid lies that close to the mean '
            'shape; the particles and the images are not in the same frame.'
        )
    return mask


def _model_path(model_dir: Path, cfg: Config, stages: dict[str, FitResult]) -> Path:
    last = list(stages.values())[-1]
    if last.stage == 'uncertainty':  # its validation RMSE says nothing of the variances: always the final model
        return last.final_path
    return last.best_path if cfg.deepssm.use_best_model and last.best_path.is_file() else last.final_path


def _finished(cfg: Config, model_dir: Path, kind: str, specs: list[StageSpec], precision: str) -> TrainResult | None:
    """The result of a finished run with these settings, without loading any data; else None."""
    stages = {}
    for spec in specs:
        path = model_dir / f'checkpoint{spec.suffix}.pt'
        if not path.is_file():
            return None
        ckpt = load_checkpoint(path)
        fp = {'stage': spec.name, 'kind': kind, 'precision': precision, **plain(spec.settings)}
        if not ckpt['state']['finished'] or fingerprint_diffs(ckpt['fingerprint'], fp):
            return None
        stages[spec.name] = stage_result(spec, ckpt['state'], model_dir, precision)
    return TrainResult(model_dir, kind, stages, read_train_log(model_dir), _model_path(model_dir, cfg, stages))


def train_deepssm(
    cfg: Config,
    loaders: Any = None,
    *,
    callback: Callback | None = None,
    progress: bool = True,
    restart: bool = False,
) -> TrainResult:
    """Train the network described by ``cfg.deepssm`` on the loaders in ``loader_dir``.

    Uses ``loaders``, or reads them with :func:`deepssm_nb.loaders.load_train_val_loaders`,
    and the PCA with :meth:`deepssm_nb.pca.ShapePCA.load` (from ``aug_dir``),
    builds a Base-DeepSSM (or TL-DeepSSM when ``tl_net.enabled``), trains it
    and, when ``fine_tune.enabled`` (base only), fine-tunes it starting from the
    best or final model (``use_best_model``). Outputs go to
    ``cfg.resolved_paths()['model_dir']``. A rerun resumes an interrupted run
    and returns at once when the run is finished.

    Args:
        cfg: The pipeline configuration.
        loaders: The :class:`~deepssm_nb.loaders.Loaders` of ``cfg`` (train, validation, normalization);
            default: reopened from ``loader_dir``.
        callback: Called after every epoch with the log row (e.g. a ``LivePlot``).
        progress: Show progress bars.
        restart: Train from scratch: first delete the checkpoints, model files
            and log of an earlier run in the model folder.

    Returns:
        A :class:`TrainResult`.

    Raises:
        ConfigError: ``num_latent_dim`` disagrees with the PCA, or a checkpoint
            was written with other settings.
        FileNotFoundError: The loaders or the PCA are missing.
    """
    cfg.validate()
    ds = cfg.deepssm
    paths = cfg.resolved_paths()
    model_dir = Path(paths['model_dir'])
    kind, tc, specs = _plan(cfg)
    dev = _device(tc, None)
    precision = resolve_precision(tc.precision, dev)
    if restart:
        _clear_run(model_dir)
    else:
        done = _finished(cfg, model_dir, kind, specs, precision.name)
        if done is not None:
            return _calibrate(cfg, done, None if loaders is None else loaders.val, dev)

    train_loader, val_loader, norm, pca = _load_inputs(cfg, paths, loaders)
    num_latent = int(pca.components_.shape[0])
    if ds.num_latent_dim not in (0, num_latent):
        raise ConfigError(
            f'config.deepssm.num_latent_dim: the PCA in "{paths["aug_dir"]}" keeps {num_latent} '
            f'modes; got num_latent_dim={ds.num_latent_dim}. Set it to 0 (use the PCA) or {num_latent}.'
        )
    first = train_loader.dataset[0]
    in_shape = [1, *first['image'].shape[-3:]] if isinstance(first, dict) else [1, *norm['image_shape']]
    kwargs = {
        'in_shape': in_shape,
        'num_latent': num_latent,
        'num_correspondences': int(pca.mean_.shape[0]),
        'channels': list(ds.encoder.channels),
        'dropout': ds.encoder.dropout,
    }
    if not ds.decoder.linear:
        kwargs['nonlinear_decoder'] = True
    mask = None
    if ds.encoder.input_margin_mm > 0:
        mask = input_mask(norm, pca.mean_, ds.encoder.input_margin_mm)
        kwargs['input_box'] = input_box(mask)
    torch.manual_seed(tc.seed)
    net = build_model(kind, **kwargs)
    if mask is not None:
        set_input_mask(net, mask)
    init_pca_decoder(net, pca.mean_, pca.components_, norm['score_mean'], norm['score_std'])
    common = {
        'model_dir': model_dir,
        'device': dev,
        'precision': precision,
        'normalization': norm,
        'callback': callback,
        'progress': progress,
        'restart': restart,
    }
    stages: dict[str, FitResult] = {}
    for spec in specs:
        if spec.name == 'fine_tune':
            base = stages['base']
            start = base.best_path if ds.use_best_model and base.best_path.is_file() else base.final_path
            net.load_state_dict(torch.load(start, map_location='cpu', weights_only=True)['state_dict'])
        if spec.name == 'uncertainty':
            net = _stochastic_net(kind, kwargs, ds.uncertainty.dropout, _model_path(model_dir, cfg, stages))
            init_log_variance(net, train_loader, dev, supervised_latent=ds.loss.supervised_latent)
        loader = shapes_loader(train_loader) if spec.name == 'tl_ae' else train_loader
        stages[spec.name] = run_stage(net, loader, val_loader, spec, **common)
    result = TrainResult(model_dir, kind, stages, read_train_log(model_dir), _model_path(model_dir, cfg, stages))
    return _calibrate(cfg, result, val_loader, dev)


def _stochastic_net(kind: str, kwargs: dict[str, Any], dropout: float, start: Path) -> torch.nn.Module:
    """The network of the uncertainty stage: the trained one, plus dropout and a log-variance head at 0."""
    net = build_model(kind, **{**kwargs, 'dropout': dropout, 'stochastic': True})
    missing, unexpected = net.load_state_dict(
        torch.load(start, map_location='cpu', weights_only=True)['state_dict'], strict=False
    )
    if unexpected or any(not k.startswith('encoder.log_var_head.') for k in missing):
        raise DataError(
            f'"{start}" does not fit the stochastic network: missing {missing}, unexpected {unexpected}; '
            'train again with restart=True.'
        )
    return net


INIT_BATCHES = 8  # training batches that set the starting variance of the uncertainty stage


@torch.no_grad()
def init_log_variance(
    net: torch.nn.Module, loader: Any, device: torch.device, *, supervised_latent: bool, batches: int = INIT_BATCHES
) -> torch.Tensor:
    """Start the log-variance head at the residual variance of the trained means.

    A head at ``log σ² = 0`` claims the spread of the training scores, several times the error of a trained
    model, and a few epochs of a small learning rate barely move it. So its bias starts at the log of the mean
    squared residual over the first ``batches`` training batches: per latent dimension, in whitened units, with a
    supervised latent; one value for every dimension, scaled through the decoder's Jacobian to the particle
    residuals, with a free latent. Its weights stay at zero: the stage then learns which inputs are harder.

    Args:
        net: A stochastic :class:`~deepssm_nb.models.DeepSSMNet` (its mean path trained).
        loader: The training loader (batches with ``'image'``, ``'particles'`` and ``'scores'``).
        device: Where the network runs.
        supervised_latent: Whether the latent is the whitened PCA scores.
        batches: How many batches to average over.

    Returns:
        ``(L,)`` the starting log-variances.
    """
    modes = {m: m.training for m in net.modules()}
    net.to(device).eval()
    num, den = None, None
    try:
        for i, batch in enumerate(loader):
            if i >= batches:
                break
            mean, _ = net.encode(batch['image'].to(device))
            mean = mean.float()
            if supervised_latent:
                r2 = ((mean - batch['scores'].to(device).float()) ** 2).sum(0)
                n = torch.full_like(r2, mean.shape[0])
            else:
                resid = (net.decoder(mean) - batch['particles'].to(device).float()) ** 2
                prior = (net.decoder.jacobian(mean) ** 2).sum(-1)  # (B, 3 M): the variance at log σ² = 0
                r2 = resid.sum().expand(mean.shape[1])
                n = prior.sum().expand(mean.shape[1])
            num = r2 if num is None else num + r2
            den = n if den is None else den + n
    finally:
        for m, mode in modes.items():
            m.train(mode)
    if num is None:
        raise DataError('init_log_variance: the training loader yielded no batch.')
    from .uncertainty import LOG_VAR_RANGE

    log_var = torch.log((num / den).clamp_min(1e-12)).clamp(*LOG_VAR_RANGE)
    net.encoder.log_var_head.bias.copy_(log_var)
    return log_var.cpu()


def _calibrate(cfg: Config, result: TrainResult, val_loader: Any, device: torch.device) -> TrainResult:
    """Fit (or reuse) the validation calibration of the model prediction uses (Base-DeepSSM, when enabled)."""
    if result.kind != 'base' or not cfg.deepssm.calibrate:
        return result
    from .calibration import calibrate_model, calibration_record

    record = calibration_record(result.model_path)
    if record is None:
        if val_loader is None:
            _, val_loader, _, _ = _load_inputs(cfg, cfg.resolved_paths())
        record = calibrate_model(
            load_model_file(result.model_path, device=device), result.model_path, val_loader, device=device
        )
    result.calibration = record
    return result


def _clear_run(model_dir: Path) -> None:
    """Remove the files of an earlier run (checkpoints, model files, log) so none of them goes stale."""
    if model_dir.is_dir():
        for pattern in ('checkpoint*.pt', 'best_model*.torch', 'final_model*.torch', 'train_log.csv'):
            for f in model_dir.glob(pattern):
                f.unlink()
        (model_dir / 'calibration.json').unlink(missing_ok=True)


def _load_inputs(cfg: Config, paths: dict[str, Path], loaders: Any = None) -> tuple[Any, Any, dict, Any]:
    from .loaders import load_train_val_loaders
    from .pca import ShapePCA

    if loaders is None:
        train_loader, val_loader, norm = load_train_val_loaders(cfg)
    else:
        train_loader, val_loader, norm = loaders.train, loaders.val, loaders.normalization
    aug_dir = Path(paths['aug_dir'])
    if not aug_dir.is_dir():
        raise FileNotFoundError(f'Augmentation folder not found: "{aug_dir}"; run the augmentation first.')
    pca_dir = aug_dir / 'PCA_Particle_Info'
    pca = ShapePCA.load(pca_dir if pca_dir.is_dir() else aug_dir)
    for key in ('score_mean', 'score_std'):
        if key not in norm:
            raise DataError(f"The loaders' normalization has no {key!r}; found {sorted(norm)}.")
    return train_loader, val_loader, norm, pca
