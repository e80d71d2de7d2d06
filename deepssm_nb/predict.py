"""Predict correspondence particles for test images and for new image files.

The network returns particles in the world (groomed) frame: its decoder holds
the score un-whitening and the PCA reconstruction. Each prediction is written
twice: ``world_predictions/<id>.particles`` (reference frame) and
``local_predictions/<id>.particles`` (the image's own frame, mapped back with
``inv(T)`` where ``p_world = T @ [p_orig, 1]`` is the image's registration).

A stochastic encoder (``encoder.deterministic: false``) also gives each particle's uncertainty, written next to
its ``.particles`` file as ``<id>.std``: a text file with the header line ``# aleatoric_mm epistemic_mm total_mm``
and then one row per particle, in the order of the ``.particles`` file. Each value is the predicted root mean
squared distance of the particle from its predicted position, ``sqrt(trace(Cov))`` in mm (see
:mod:`deepssm_nb.uncertainty`); ``total² = aleatoric² + epistemic²``. The local file is in the image's own units
(the world values divided by the registration's scale). ``predictions.json`` gets each subject's mean uncertainty,
its feature distance (how far the encoder's features of the image lie from the training images',
:mod:`deepssm_nb.novelty`) and its ``uncertain`` flag: a mean total uncertainty **or** a feature distance above the
level fitted on the validation images (:func:`fit_uncertainty_threshold`); ``uncertain_by`` names which.

Example:
    >>> cfg = get_profile('smoke', work_dir='out')             # doctest: +SKIP
    >>> local_files = test_deepssm(cfg)                          # doctest: +SKIP
    >>> particles = predict_image('new_scan.nrrd', cfg)          # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._validation import DataError
from .freshness import StageRecord
from .io import read_image, read_particles, write_json, write_particles

__all__ = [
    'STD_HEADER',
    'Predictions',
    'fit_uncertainty_threshold',
    'format_errors',
    'is_stochastic',
    'predict_image',
    'predict_loader',
    'predict_uncertainty',
    'prediction_errors',
    'read_std',
    'test_deepssm',
    'write_std',
]

STD_HEADER = '# aleatoric_mm epistemic_mm total_mm'
FEATURE_FILE = 'feature_distance.npz'  # in model_dir: the training images' feature statistics
DECODER_SAMPLES = 64  # latent draws per pass to propagate the variance through a non-linear decoder


@dataclass(frozen=True)
class Predictions:
    """What the prediction stage hands on: the predicted particles of every test subject.

    Attributes:
        folder: ``pred_dir``; ``predictions.json`` there records the model file, the calibration applied and the
            seconds per image.
        ids: The test subjects, in order.
        local: Each subject's particles in its own image's coordinates (``local_predictions/<id>.particles``),
            the ones compared with its surface.
        world: The same particles in the groomed (world) frame (``world_predictions/<id>.particles``).
    """

    folder: Path
    ids: list[str]
    local: list[Path]
    world: list[Path]


def _apply(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    T = np.asarray(T, dtype=float)
    return points @ T[:3, :3].T + T[:3, 3]


def _scale(T: np.ndarray) -> float:
    """The isotropic scale of a similarity transform's linear part."""
    return float(abs(np.linalg.det(np.asarray(T, dtype=float)[:3, :3])) ** (1.0 / 3.0))


def is_stochastic(net: torch.nn.Module) -> bool:
    """Whether ``net`` has a stochastic encoder (a log-variance head)."""
    enc = getattr(net, 'encoder', None)
    return bool(getattr(enc, 'stochastic', False))


@torch.no_grad()
def predict_uncertainty(net: torch.nn.Module, images: torch.Tensor, *, passes: int = 20, seed: int = 0):
    """Particles and their uncertainty for a batch of images (Monte Carlo dropout, propagated variances).

    Args:
        net: A :class:`~deepssm_nb.models.DeepSSMNet` (stochastic encoder, or deterministic with dropout).
        images: ``(B, 1, D, H, W)`` whitened images.
        passes: Monte Carlo dropout passes (1: no epistemic part).
        seed: Seed of the dropout masks (the same masks for every image) and of the decoder samples.

    Returns:
        A :class:`~deepssm_nb.uncertainty.ParticleUncertainty` (particles ``(B, M, 3)``, uncertainties
        ``(B, M)`` in mm). The aleatoric part propagates exactly through the linear PCA decoder, and by
        ``DECODER_SAMPLES`` seeded draws through a non-linear one.
    """
    from .uncertainty import combine_passes, propagate_linear, propagate_sampled

    means, log_vars = net.encode_passes(images, passes, seed)  # (T, B, L)
    t, b, lat = means.shape
    flat = means.reshape(t * b, lat)
    particles = net.decoder(flat).float()
    cov = None
    if log_vars is not None:
        lv = log_vars.reshape(t * b, lat).float()
        dec = net.decoder
        if dec.nonlinear:
            gen = torch.Generator(device=flat.device).manual_seed(int(seed))
            cov = propagate_sampled(dec, flat.float(), lv, num_samples=DECODER_SAMPLES, generator=gen)
        else:
            from .uncertainty import LOG_VAR_RANGE

            cov = propagate_linear(torch.exp(lv.clamp(*LOG_VAR_RANGE)), dec.linear.weight.float(), dec.score_std)
        cov = cov.reshape(t, b, *cov.shape[1:])
    return combine_passes(particles.reshape(t, b, *particles.shape[1:]), cov)


def write_std(path: str | os.PathLike, aleatoric: np.ndarray, epistemic: np.ndarray, total: np.ndarray) -> Path:
    """Write per-particle uncertainties (each ``(M,)``, mm) as a ``.std`` file (see the module docstring)."""
    arr = np.stack([np.asarray(a, dtype=float).ravel() for a in (aleatoric, epistemic, total)], axis=1)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise DataError(f'uncertainties for "{path}" must be finite and >= 0.')
    from .io import atomic_write_text

    body = '\n'.join(f'{a:.6g} {e:.6g} {t:.6g}' for a, e, t in arr)
    return atomic_write_text(path, f'{STD_HEADER}\n{body}\n')


def read_std(path: str | os.PathLike, *, num_particles: int | None = None) -> dict[str, np.ndarray]:
    """Read a ``.std`` file: ``{'aleatoric_mm', 'epistemic_mm', 'total_mm'}``, each ``(M,)``.

    Raises:
        FileNotFoundError: No such file.
        DataError: Not three columns of numbers >= 0, or not ``num_particles`` rows.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'Uncertainty file not found: "{path}".')
    try:
        arr = np.loadtxt(path, comments='#', ndmin=2)
    except ValueError as e:
        raise DataError(f'"{path}" is not a .std file of three numbers a row: {e}') from None
    if arr.shape[1] != 3 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise DataError(f'"{path}" must hold 3 columns of finite numbers >= 0; got shape {arr.shape}.')
    if num_particles is not None and arr.shape[0] != num_particles:
        raise DataError(f'"{path}" has {arr.shape[0]} rows; expected {num_particles} (one per particle).')
    return dict(zip(('aleatoric_mm', 'epistemic_mm', 'total_mm'), arr.T.copy()))


@torch.no_grad()
def predict_loader(
    net: torch.nn.Module,
    loader,
    pred_dir: str | os.PathLike,
    *,
    transforms: Mapping[str, np.ndarray] | None = None,
    device: str | torch.device = 'cpu',
    verbose: bool = True,
    mc_passes: int | None = None,
    mc_seed: int = 0,
    threshold_mm: float | None = None,
    features: Any = None,
    feature_threshold: float | None = None,
) -> dict[str, dict[str, Any]]:
    """Run a network over a test loader and write the predicted particles.

    With a stochastic encoder (or ``mc_passes``), the uncertainties are written too (``<name>.std`` next to each
    ``.particles`` file) and each entry gets ``mean_aleatoric_mm``, ``mean_epistemic_mm``, ``mean_total_mm``, with
    ``features`` the ``feature_distance``, and, when ``threshold_mm`` is given, ``uncertain`` and ``uncertain_by``.

    Args:
        net: ``net(images (B, 1, D, H, W)) -> (latent (B, L), particles (B, M, 3))``, in eval mode.
        loader: Yields ``{'image', 'name'}`` batches (e.g. :func:`deepssm_nb.loaders.get_test_loader`).
        pred_dir: Output folder; gets ``world_predictions/`` and ``local_predictions/``.
        transforms: ``{name: T (4, 4)}``, each image's original -> world matrix.
            Names without one get no local prediction.
        device: Where to run the network.
        verbose: Print the seconds per image.
        mc_passes: Monte Carlo dropout passes; None: 20 for a stochastic encoder, else no uncertainty.
        mc_seed: Seed of the passes.
        threshold_mm: Flag a subject ``uncertain`` when its mean total uncertainty is above this.
        features: A fitted :class:`~deepssm_nb.novelty.FeatureDistance` of the training images' features.
        feature_threshold: Also flag a subject whose feature distance is above this.

    Returns:
        ``{name: {'world': Path, 'local': Path | None, 'seconds': float, ...}}`` in loader order.

    Raises:
        DataError: The network returned non-finite particles.
    """
    pred_dir = Path(pred_dir)
    transforms = dict(transforms or {})
    net.eval()
    out: dict[str, dict[str, Any]] = {}
    if mc_passes is None and is_stochastic(net):
        mc_passes = 20
    for batch in loader:
        t0 = time.perf_counter()
        images = batch['image'].to(device)
        unc = distances = None
        if mc_passes is not None:
            unc = predict_uncertainty(net, images, passes=mc_passes, seed=mc_seed)
            particles = unc.particles
            if features is not None:
                from .novelty import encoder_features

                distances = features.score(encoder_features(net, images))
        else:
            _, particles = net(images)
        particles = particles.float().cpu().numpy().astype(np.float64)
        seconds = (time.perf_counter() - t0) / len(batch['name'])
        for i, (name, world) in enumerate(zip(batch['name'], particles)):
            if not np.all(np.isfinite(world)):
                raise DataError(f'the network predicted NaN or infinite particles for "{name}".')
            entry = {
                'world': write_particles(pred_dir / 'world_predictions' / f'{name}.particles', world),
                'local': None,
                'seconds': seconds,
            }
            parts = None
            if unc is not None:
                parts = [x[i].double().cpu().numpy() for x in (unc.aleatoric_mm, unc.epistemic_mm, unc.total_mm)]
                write_std(pred_dir / 'world_predictions' / f'{name}.std', *parts)
                d = None if distances is None else float(distances[i])
                entry.update(_uncertainty_entry(parts, threshold_mm, d, feature_threshold))
            if name in transforms:
                local = _apply(np.linalg.inv(transforms[name]), world)
                entry['local'] = write_particles(pred_dir / 'local_predictions' / f'{name}.particles', local)
                if parts is not None:
                    scale = _scale(np.linalg.inv(transforms[name]))
                    write_std(pred_dir / 'local_predictions' / f'{name}.std', *(p * scale for p in parts))
            out[name] = entry
            if verbose:
                extra = ''
                if parts is not None:
                    flag = ' (uncertain)' if entry.get('uncertain') else ''
                    extra = f', mean uncertainty {entry["mean_total_mm"]:.2f} mm{flag}'
                print(f'{name}: {world.shape[0]} particles in {seconds:.3f} s{extra}')
    return out


def _uncertainty_entry(
    parts: list[np.ndarray],
    threshold_mm: float | None,
    feature_distance: float | None = None,
    feature_threshold: float | None = None,
) -> dict[str, Any]:
    a, e, t = (float(np.mean(p)) for p in parts)
    entry: dict[str, Any] = {'mean_aleatoric_mm': a, 'mean_epistemic_mm': e, 'mean_total_mm': t}
    if feature_distance is not None:
        entry['feature_distance'] = feature_distance
    if threshold_mm is not None:
        by = ['uncertainty'] if t > threshold_mm else []
        if feature_distance is not None and feature_threshold is not None and feature_distance > feature_threshold:
            by.append('feature_distance')
        entry['uncertain'] = bool(by)
        entry['uncertain_by'] = by
    return entry


def fit_uncertainty_threshold(cfg, net: torch.nn.Module | None = None, *, verbose: bool = True) -> dict[str, Any]:
    """The levels above which a prediction is flagged ``uncertain``, fitted on the validation images.

    Two scores, each with its own level, the ``threshold_quantile`` of the validation images' values:

    * the mean total uncertainty of an image, with the Monte Carlo passes of ``cfg.deepssm.uncertainty``;
    * its feature distance: the Mahalanobis distance of the encoder's features from those of the stored training
      images (:class:`~deepssm_nb.novelty.FeatureDistance`, fitted here and kept in ``model_dir/``
      :data:`FEATURE_FILE`). The predicted uncertainty is learnt on training-like images and barely rises on images
      unlike them; this distance does.

    The record is kept in ``model_dir/uncertainty.json`` and reused while the model file and the settings are
    unchanged.

    Returns:
        ``{'threshold_mm', 'feature_threshold', 'quantile', 'validation_mean_total_mm' and
        'validation_feature_distance' (one per image), 'mc_passes', 'mc_seed', 'model', 'feature_file'}``.
    """
    from .corruptions import fit_threshold
    from .loaders import load_train_val_loaders
    from .novelty import encoder_features, fit_feature_distance

    u = cfg.deepssm.uncertainty
    device = _device(cfg)
    net = _load_net(cfg, device=device) if net is None else net
    model_path = Path(net.model_info['path'])
    model_dir = Path(cfg.resolved_paths()['model_dir'])
    path, feature_path = model_dir / 'uncertainty.json', model_dir / FEATURE_FILE
    params = {
        'mc_passes': u.mc_passes,
        'mc_seed': u.mc_seed,
        'quantile': u.threshold_quantile,
        'scores': ['mean_total_mm', 'feature_distance'],
    }
    stage = StageRecord.of({**params, 'calibration': net.model_info.get('calibration')}, {'model': model_path})
    if feature_path.is_file() and stage.matches(StageRecord.read(path)):
        import json

        return json.loads(path.read_text())
    train_loader, val_loader, _ = load_train_val_loaders(cfg, augmented=False)
    features = fit_feature_distance(net, train_loader.dataset, device=device)
    values, distances = [], []
    for batch in val_loader:
        images = batch['image'].to(device)
        unc = predict_uncertainty(net, images, passes=u.mc_passes, seed=u.mc_seed)
        values += unc.total_mm.double().mean(dim=1).cpu().tolist()
        distances += features.score(encoder_features(net, images)).tolist()
    threshold = fit_threshold(np.asarray(values), u.threshold_quantile)
    feature_threshold = fit_threshold(np.asarray(distances), u.threshold_quantile)
    features.save(feature_path)
    record = {
        'threshold_mm': threshold,
        'feature_threshold': feature_threshold,
        **params,
        'validation_mean_total_mm': values,
        'validation_feature_distance': distances,
        'training_images': features.n_samples_,
        'model': model_path.name,
        'feature_file': FEATURE_FILE,
        'record': stage.to_dict(),
    }
    write_json(path, record)
    if verbose:
        print(
            f'uncertain above {threshold:.3f} mm of mean uncertainty or a feature distance of '
            f'{feature_threshold:.2f}: the {u.threshold_quantile:.0%} quantiles of {len(values)} validation images '
            f'(features of {features.n_samples_} training images)'
        )
    return record


def _load_net(cfg, *, fine_tuned: bool | None = None, device: str | torch.device = 'cpu') -> torch.nn.Module:
    """The trained network of ``cfg`` (the ``_ft`` files when fine tuning is enabled)."""
    from .model_files import load_trained_model

    if fine_tuned is None:
        fine_tuned = bool(cfg.deepssm.fine_tune.enabled)
    return load_trained_model(
        cfg.resolved_paths()['model_dir'],
        use_best=cfg.deepssm.use_best_model,
        fine_tuned=fine_tuned,
        calibrated=cfg.deepssm.calibrate,
        uncertain=not cfg.deepssm.encoder.deterministic,
        device=device,
    )


def _normalization(net: torch.nn.Module, cfg) -> dict[str, Any]:
    norm = getattr(net, 'normalization', None)
    if norm:
        return norm
    from .normalization import load_normalization

    return load_normalization(cfg.resolved_paths()['loader_dir'])


def test_deepssm(cfg, groomed=None, *, overwrite: bool = False, verbose: bool = True) -> Predictions:
    """Predict the particles of every groomed test image of a pipeline run.

    The test images are whitened with the TRAINING statistics saved with the
    model. Outputs go to ``pred_dir``: ``world_predictions/<id>.particles``,
    ``local_predictions/<id>.particles`` and ``predictions.json`` (model file,
    calibration factors applied, seconds per image). A rerun with the same
    model and images reuses them.

    Args:
        cfg: The pipeline :class:`~deepssm_nb.config.Config`.
        groomed: The :class:`~deepssm_nb.groom.GroomResult` whose test images to predict; default: read from
            ``groom_dir``.
        overwrite: Predict again even if the outputs are up to date.
        verbose: Print the seconds per image.

    Returns:
        :class:`Predictions`, in test-subject order.

    Raises:
        FileNotFoundError: No trained model, grooming output or loaders.
        DataError: No test subjects in the grooming output.
    """
    from .groom import load_groomed
    from .loaders import get_test_loader

    paths = cfg.resolved_paths()
    pred_dir = paths['pred_dir']
    groomed = load_groomed(paths['groom_dir']) if groomed is None else groomed
    subjects = [s for s in groomed.subjects if s.split == 'test']
    if not subjects:
        raise DataError(f'"{paths["groom_dir"]}" holds no test subjects; nothing to predict.')
    device = _device(cfg)
    net = _load_net(cfg, device=device)
    model_path = Path(net.model_info['path'])
    u = cfg.deepssm.uncertainty
    params: dict[str, Any] = {'calibration': net.model_info.get('calibration')}
    if is_stochastic(net):
        params.update(mc_passes=u.mc_passes, mc_seed=u.mc_seed, threshold_quantile=u.threshold_quantile)
    stage = StageRecord.of(params, {'model': model_path, 'images': [s.image for s in subjects]})
    record = {'model': str(model_path), 'calibration': net.model_info.get('calibration'), 'record': stage.to_dict()}
    info_path = pred_dir / 'predictions.json'
    local = [pred_dir / 'local_predictions' / f'{s.id}.particles' for s in subjects]
    found = Predictions(
        pred_dir,
        [s.id for s in subjects],
        local,
        [pred_dir / 'world_predictions' / f'{s.id}.particles' for s in subjects],
    )
    wanted = local + ([p.with_suffix('.std') for p in local] if is_stochastic(net) else [])
    if not overwrite and all(p.is_file() for p in wanted) and stage.matches(StageRecord.read(info_path)):
        if verbose:
            print(f'Predictions up to date in "{pred_dir}" ({len(local)} test images).')
        return found
    norm = _normalization(net, cfg)
    loader = get_test_loader(
        paths['loader_dir'],
        [s.image for s in subjects],
        float(norm.get('down_factor', cfg.loader.down_factor)),
        normalization=norm,
    )
    extra: dict[str, Any] = {}
    mc: dict[str, Any] = {}
    if is_stochastic(net):
        fitted = fit_uncertainty_threshold(cfg, net, verbose=verbose)
        mc = {
            'mc_passes': u.mc_passes,
            'mc_seed': u.mc_seed,
            'threshold_mm': fitted['threshold_mm'],
            'feature_threshold': fitted['feature_threshold'],
        }
    features = _features(cfg) if mc else None
    results = predict_loader(
        net,
        loader,
        pred_dir,
        transforms={s.id: s.transform for s in subjects},
        device=device,
        verbose=verbose,
        features=features,
        **mc,
    )
    if mc:
        keys = (
            'mean_aleatoric_mm',
            'mean_epistemic_mm',
            'mean_total_mm',
            'feature_distance',
            'uncertain',
            'uncertain_by',
        )
        extra = {'uncertainty': {**mc, 'subjects': {n: {k: r[k] for k in keys} for n, r in results.items()}}}
    seconds = {name: r['seconds'] for name, r in results.items()}
    write_json(
        info_path, {**record, 'seconds': seconds, 'mean_seconds': float(np.mean(list(seconds.values()))), **extra}
    )
    if verbose:
        print(f'{len(results)} test images, {np.mean(list(seconds.values())):.3f} s per image (network only).')
    return found


test_deepssm.__test__ = False  # a pipeline stage, not a pytest test


def _device(cfg) -> torch.device:
    """The configured device; with 'auto', the CPU without a warning when no GPU is usable."""
    from .device import cuda_usable, get_device

    if cfg.deepssm.trainer.device == 'auto':
        return torch.device('cuda' if cuda_usable()[0] else 'cpu')
    return get_device(cfg.deepssm.trainer.device)


_CACHE: dict[tuple, Any] = {}


def _cached(key: tuple, make):
    if key not in _CACHE:
        if len(_CACHE) > 8:
            _CACHE.clear()
        _CACHE[key] = make()
    return _CACHE[key]


def predict_image(
    image_path: str | os.PathLike,
    cfg,
    *,
    out_dir: str | os.PathLike | None = None,
    net: torch.nn.Module | None = None,
    stages: tuple[str, ...] | str | None = 'fast',
    iterations: int | None = None,
    side: str | None = None,
    verbose: bool = True,
    return_uncertainty: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict[str, Any]]:
    """Predict the particles of one new image file, in that image's own frame.

    The image is registered to the groomed reference image (as the test images
    were), whitened with the training statistics, passed through the network,
    and the world particles are mapped back through ``inv(T)``. The result is
    written to ``<out_dir>/<stem>.particles``. An image of the other side than
    the grooming reference is reflected across physical x first, as grooming
    does, and the reflection is part of ``T``: its particles come back on its
    own side.

    Args:
        image_path: A 3D image (``.nrrd``, ``.nii.gz``, ...) of the same anatomy.
        cfg: The pipeline config of a trained model.
        out_dir: Output folder (default ``pred_dir/new_predictions``).
        net: A network to use instead of the trained model of ``cfg``.
        stages: Registration stages. The default ``'fast'`` runs only
            grooming's last stage (similarity, or rigid when grooming was
            rigid) after centring: on the femur cohort it reached the same
            transforms as grooming's three stages in a fraction of the time;
            if it fails, the grooming stages are tried. ``None`` uses the
            grooming stages.
        iterations: Optimizer iterations per stage (default: as grooming).
        side: ``'L'`` or ``'R'``, the image's side; None reads it from ``_L`` / ``_R`` tokens of the file name
            (no token: no reflection). Ignored when grooming had no sides.
        verbose: Print the seconds taken (registration included), and the mean uncertainty.
        return_uncertainty: Also return a dict: ``particles`` (the file written) and, for a stochastic
            encoder, ``std`` (the ``<stem>.std`` file beside it), ``mean_aleatoric_mm``, ``mean_epistemic_mm``,
            ``mean_total_mm``, ``feature_distance``, ``threshold_mm`` and ``feature_threshold`` (None before
            :func:`test_deepssm` fitted them), ``uncertain`` and ``uncertain_by``.

    Returns:
        (M, 3) particles in the image's physical frame (mm); with ``return_uncertainty``, ``(particles, info)``.

    Raises:
        FileNotFoundError: The image, the reference image or the model is missing.
        DataError: Unreadable image or failed registration.
    """
    t0 = time.perf_counter()
    if side is not None and side not in ('L', 'R'):
        raise DataError(f"predict_image: side must be 'L', 'R' or None (read from the file name); got {side!r}.")
    image_path = Path(image_path)
    paths = cfg.resolved_paths()
    image = read_image(image_path, name='image')
    if net is None:
        from .model_files import model_file

        fine = bool(cfg.deepssm.fine_tune.enabled)
        mfile = model_file(
            paths['model_dir'],
            use_best=cfg.deepssm.use_best_model,
            fine_tuned=fine,
            uncertain=not cfg.deepssm.encoder.deterministic,
        )
        calib = mfile.parent / 'calibration.json'
        net = _cached(
            (
                'net',
                str(mfile),
                mfile.stat().st_mtime_ns,
                bool(cfg.deepssm.calibrate),
                calib.stat().st_mtime_ns if calib.is_file() else None,
            ),
            lambda: _load_net(cfg, fine_tuned=fine, device=_device(cfg)),
        )
    norm = _normalization(net, cfg)
    flip = _reflection(image_path, cfg, side)
    if flip is not None:
        from .groom import reflect_image

        image = reflect_image(image, flip)
    try:
        registered, T = _register(image, cfg, name=f'"{image_path}"', stages=stages, iterations=iterations)
    except DataError:
        if stages is None:
            raise
        registered, T = _register(image, cfg, name=f'"{image_path}"', stages=None, iterations=iterations)
    if flip is not None:
        T = T @ flip
    t_reg = time.perf_counter() - t0
    from .normalization import prepare_image

    x = prepare_image(registered, norm, name=f'"{image_path}"')
    device = next(net.parameters()).device
    info: dict[str, Any] = {}
    parts = None
    if is_stochastic(net):
        u = cfg.deepssm.uncertainty
        unc = predict_uncertainty(net.eval(), x.to(device), passes=u.mc_passes, seed=u.mc_seed)
        particles = unc.particles
        world_parts = [v[0].double().cpu().numpy() for v in (unc.aleatoric_mm, unc.epistemic_mm, unc.total_mm)]
        levels = _levels(cfg)  # fitted in the world frame, as these means are
        features = _features(cfg)
        distance = None
        if features is not None:
            from .novelty import encoder_features

            distance = float(features.score(encoder_features(net, x.to(device)))[0])
        info = _uncertainty_entry(world_parts, levels['threshold_mm'], distance, levels['feature_threshold']) | levels
        parts = [p * _scale(np.linalg.inv(T)) for p in world_parts]
    else:
        with torch.no_grad():
            _, particles = net.eval()(x.to(device))
    world = particles[0].float().cpu().numpy().astype(np.float64)
    local = _apply(np.linalg.inv(T), world)
    out_dir = Path(out_dir) if out_dir is not None else paths['pred_dir'] / 'new_predictions'
    stem = image_path.name.split('.')[0]
    info['particles'] = write_particles(out_dir / f'{stem}.particles', local)
    if parts is not None:
        info['std'] = write_std(out_dir / f'{stem}.std', *parts)
    if verbose:
        total = time.perf_counter() - t0
        mirrored = ', reflected to the reference side and back' if flip is not None else ''
        print(f'{image_path.name}: {local.shape[0]} particles in {total:.2f} s (registration {t_reg:.2f} s{mirrored})')
        if parts is not None:
            flag = 'uncertain: true' if info.get('uncertain') else 'uncertain: false'
            if info.get('uncertain'):
                flag += f' by {" and ".join(info["uncertain_by"])}'
            limit = '' if info['threshold_mm'] is None else f', threshold {info["threshold_mm"]:.2f} mm'
            dist = ''
            if info.get('feature_distance') is not None:
                dist = f'; feature distance {info["feature_distance"]:.2f}'
                if info['feature_threshold'] is not None:
                    dist += f' (threshold {info["feature_threshold"]:.2f})'
            print(
                f'  mean uncertainty {info["mean_total_mm"]:.2f} mm ({flag}{limit}){dist}; per particle in '
                f'{info["std"]}'
            )
    return (local, info) if return_uncertainty else local


def _levels(cfg) -> dict[str, float | None]:
    """The fitted levels of the ``uncertain`` flag of the run's model: ``{'threshold_mm', 'feature_threshold'}``,
    each None when it was not fitted."""
    import json

    path = Path(cfg.resolved_paths()['model_dir']) / 'uncertainty.json'
    record = json.loads(path.read_text()) if path.is_file() else {}
    return {k: (None if record.get(k) is None else float(record[k])) for k in ('threshold_mm', 'feature_threshold')}


def _features(cfg):
    """The run's fitted :class:`~deepssm_nb.novelty.FeatureDistance`, or None when none was fitted."""
    from .novelty import FeatureDistance

    path = Path(cfg.resolved_paths()['model_dir']) / FEATURE_FILE
    return FeatureDistance.load(path) if path.is_file() else None


def _groomed(cfg):
    """The run's :class:`~deepssm_nb.groom.GroomResult`, read again only when ``groom.json`` changes."""
    from .groom import load_groomed

    info_path = Path(cfg.resolved_paths()['groom_dir']) / 'groom.json'
    stamp = info_path.stat().st_mtime_ns if info_path.is_file() else None
    return _cached(('groom', str(info_path), stamp), lambda: load_groomed(info_path.parent))


def _reflection(image_path: Path, cfg, side: str | None) -> np.ndarray | None:
    """The (4, 4) reflection grooming would apply to an image of ``side`` (None when none is due)."""
    from .data.shapeworks import infer_side
    from .groom import image_x_reflection

    ref_side = _groomed(cfg).info.get('reference_side')
    if ref_side is None and side is not None:
        warnings.warn(
            f'predict_image: side={side!r} is ignored for "{image_path}": the training shapes were groomed '
            'without sides, so nothing says which side the model was trained on.',
            stacklevel=3,
        )
    side = side or infer_side(image_path.name)
    if ref_side is None or side is None or side == ref_side:
        return None
    return image_x_reflection(image_path)


def _register(image, cfg, *, name: str, stages: tuple[str, ...] | str | None = None, iterations: int | None = None):
    """Register ``image`` to the groomed reference as grooming did, on a copy at the reference spacing.

    See :func:`~deepssm_nb.groom.register_to_reference` (``coarse=True``); returns ``(registered, T)``.
    """
    from .groom import register_to_reference

    groomed = _groomed(cfg)
    if iterations is None:
        iterations = int(groomed.info.get('registration_iterations', cfg.groom.registration_iterations))
    return register_to_reference(
        image, groomed, iterations=iterations, stages=stages, random_state=cfg.seed, name=name, coarse=True
    )


def prediction_errors(cfg) -> list[dict[str, Any]]:
    """Per test subject: particle RMSE of the prediction against the true particles.

    ``rmse_mm`` compares ``local_predictions`` with the true particles in the
    image's own frame; ``rmse_world_mm`` compares ``world_predictions`` with
    the true particles mapped to the world frame by the registration. RMSE is
    ``sqrt(mean_i |p_i - q_i|^2)`` over the M particles.

    Returns:
        One dict per subject: ``id``, ``rmse_mm``, ``rmse_world_mm``,
        ``max_mm`` (largest particle distance, own frame), ``registration_error_mm``.
    """
    from .groom import load_groomed

    paths = cfg.resolved_paths()
    rows = []
    for s in load_groomed(paths['groom_dir']).subjects:
        if s.split != 'test':
            continue
        true_world = read_particles(s.particles)
        pred_world = read_particles(
            paths['pred_dir'] / 'world_predictions' / f'{s.id}.particles', num_particles=true_world.shape[0]
        )
        pred_local = read_particles(
            paths['pred_dir'] / 'local_predictions' / f'{s.id}.particles', num_particles=true_world.shape[0]
        )
        true_local = _apply(np.linalg.inv(s.transform), true_world)
        d_local = np.linalg.norm(pred_local - true_local, axis=1)
        d_world = np.linalg.norm(pred_world - true_world, axis=1)
        rows.append(
            {
                'id': s.id,
                'rmse_mm': float(np.sqrt(np.mean(d_local**2))),
                'rmse_world_mm': float(np.sqrt(np.mean(d_world**2))),
                'max_mm': float(d_local.max()),
                'registration_error_mm': s.registration_error_mm,
            }
        )
    return rows


def format_errors(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`prediction_errors` rows, with a mean row."""
    cols = [
        ('id', 'subject'),
        ('rmse_mm', 'RMSE (mm)'),
        ('max_mm', 'max (mm)'),
        ('rmse_world_mm', 'RMSE world (mm)'),
        ('registration_error_mm', 'registration (mm)'),
    ]

    def cell(v: Any) -> str:
        return '-' if v is None else (f'{v:.2f}' if isinstance(v, float) else str(v))

    mean = {
        k: float(np.mean([r[k] for r in rows])) for k, _ in cols[1:] if rows and all(r.get(k) is not None for r in rows)
    }
    table = [[h for _, h in cols]] + [[cell(r.get(k)) for k, _ in cols] for r in rows]
    table.append(['mean'] + [cell(mean.get(k)) for k, _ in cols[1:]])
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    return '\n'.join('  '.join(c.rjust(w) for c, w in zip(row, widths)) for row in table)
