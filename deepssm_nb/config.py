"""One typed configuration tree for the whole pipeline.

Long by design: the whole tree is in one place, so every key, default, rule and profile is read in one file.

``Config`` holds every knob, from the cohort to the network. Its ``deepssm``
branch (:class:`DeepSSMConfig`) has exactly the keys of the DeepSSM JSON
config file (``model_name``, ``num_latent_dim``, ``paths``, ``encoder``,
``decoder``, ``loss``, ``trainer``, ``fine_tune``, ``tl_net``,
``use_best_model``), plus a few documented extras.

Three presets are available through :func:`get_profile`:

* ``smoke``: seconds per notebook (CI).
* ``workshop``: a 2-core laptop or Binder; the whole series in about 20 min.
* ``full``: the use case's real sizes, for a GPU.

Example:
    >>> cfg = get_profile('smoke')
    >>> cfg.augment.num_samples = 8
    >>> Config.from_dict(cfg.to_dict()) == cfg
    True
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._validation import ConfigError, nearest_spelling

__all__ = [
    'PROFILES',
    'AugmentConfig',
    'Config',
    'DataConfig',
    'DecayLRConfig',
    'DecoderConfig',
    'DeepSSMConfig',
    'EncoderConfig',
    'FineTuneConfig',
    'GroomConfig',
    'IntensityConfig',
    'LoaderConfig',
    'LossConfig',
    'PathsConfig',
    'TLNetConfig',
    'TrainerConfig',
    'UncertaintyConfig',
    'get_field',
    'get_profile',
    'load_config',
    'notebook_config',
    'profile_table',
    'save_config',
    'set_field',
]

PROFILES = ('smoke', 'workshop', 'full')


def _f(default: Any = dataclasses.MISSING, *, factory: Any = None, doc: str = '', **rules: Any) -> Any:
    """A dataclass field with validation rules in its metadata.

    Rules: ``low``/``high`` (inclusive bounds), ``gt`` (strict lower bound),
    ``options`` (allowed strings), ``nullable`` (None allowed).
    """
    meta = {'doc': doc, **rules}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------- data and preprocessing


@dataclass
class DataConfig:
    """Where the cohort comes from and how the embedded femur cohort is built."""

    cohort: str = _f(
        'femur', doc="'femur' (the embedded cohort), a cohort folder, or a ShapeWorks project (.swproj, .xlsx)"
    )
    domain: str | None = _f(
        None, nullable=True, doc='the domain of a ShapeWorks project to read (needed when it has several)'
    )
    image_column: str | None = _f(
        None, nullable=True, doc='the image column (image_<name>) of a ShapeWorks project with several'
    )
    data_dir: str | None = _f(
        None, nullable=True, doc='cache folder; None means $DEEPSSM_DATA_DIR or ~/.cache/deepssm_nb'
    )
    num_subjects: int = _f(26, low=4, high=26, doc='subjects of the embedded cohort to build')
    num_particles: int = _f(512, low=16, high=8192, doc='particles (correspondence points) per shape')
    spacing: float = _f(1.0, gt=0.0, high=10.0, doc='voxel size of the synthetic CT volumes, mm')
    num_test: int = _f(4, low=1, doc='real subjects held out as test images (the rest are training subjects)')
    seed: int = _f(0, low=0, doc='seed of every random choice in the cohort')


@dataclass
class GroomConfig:
    """Alignment of training shapes and images, and registration of new images."""

    spacing: float = _f(2.0, gt=0.0, high=10.0, doc='voxel size of the groomed images, mm')
    padding: float = _f(10.0, low=0.0, high=200.0, doc='margin around the union bounding box, mm')
    reference: str = _f('medoid', doc="'medoid' or a subject id used as the alignment reference")
    registration_iterations: int = _f(200, low=1, high=10000, doc='optimizer iterations per registration stage')
    mask_margin: float = _f(
        8.0, low=0.0, high=100.0, doc='registration uses voxels this close to the reference femur, mm; 0 = whole box'
    )
    procrustes_scaling: bool = _f(True, doc='similarity (True) or rigid (False) Procrustes of the training shapes')
    train_alignment: str = _f(
        'registration',
        options=('registration', 'procrustes'),
        doc='how training images are aligned: registered like new images, or by their particles',
    )
    processes: int = _f(2, low=1, high=64, doc='worker processes')


@dataclass
class IntensityConfig:
    """Random intensity changes of every training image, drawn anew each time an image is used.

    Amounts are in units of the whitened image (the training set's intensity standard deviation), except ``blur_mm``.
    All zero (or ``enabled`` false) leaves the images as they are. See :mod:`deepssm_nb.intensity`.
    """

    enabled: bool = _f(False, doc='apply the random intensity changes to training images')
    scale: float = _f(0.15, low=0.0, high=0.9, doc='contrast factor drawn log-uniformly in [1 / (1 + s), 1 + s]')
    shift: float = _f(0.2, low=0.0, high=5.0, doc='offset drawn uniformly in [-s, s]')
    gamma: float = _f(0.3, low=0.0, high=2.0, doc='gamma exponent exp(U(-g, g)) on the image rescaled to [0, 1]')
    noise: float = _f(0.15, low=0.0, high=2.0, doc='Gaussian noise with a standard deviation drawn in [0, n]')
    blur_mm: float = _f(1.0, low=0.0, high=10.0, doc='Gaussian blur with a sigma drawn in [0, b] mm')
    bias: float = _f(0.2, low=0.0, high=2.0, doc='smooth additive field with an amplitude drawn in [0, b]')


@dataclass
class AugmentConfig:
    """Shape PCA, sampling and image generation."""

    num_samples: int = _f(300, low=0, doc='generated samples')
    num_dim: int = _f(0, low=0, doc='PCA modes kept; 0 means choose by percent_variability')
    percent_variability: float = _f(0.95, gt=0.0, high=1.0, doc='variance fraction kept when num_dim is 0')
    sampler: str = _f('kde', options=('gaussian', 'mixture', 'kde'), doc='score sampler')
    mixture_num: int = _f(0, low=0, doc='mixture components; 0 means choose by BIC/AIC')
    landmark_step: int = _f(2, low=1, doc='every k-th particle defines the thin-plate spline')
    grid_step: float = _f(4.0, gt=0.0, high=50.0, doc='spacing of the coarse warp grid, voxels')
    warp_from: str = _f(
        'groomed',
        options=('groomed', 'original'),
        doc="warp each base subject's original scan through its grooming transform (one "
        'interpolation, as real groomed images), or its groomed image (two)',
    )
    fresh_samples: int = _f(
        0,
        low=0,
        doc='new samples drawn and warped for every training epoch (in the loader), '
        'in place of the stored ones; 0 replays the stored samples',
    )
    pose_jitter_mm: float = _f(
        0.0, low=0.0, high=20.0, doc='random translation of each fresh sample (image and particles), std per axis, mm'
    )
    pose_jitter_deg: float = _f(
        0.0, low=0.0, high=20.0, doc='random rotation of each fresh sample about its centroid, std of the angle, deg'
    )
    intensity: IntensityConfig = _f(factory=IntensityConfig)
    processes: int = _f(2, low=1, high=64, doc='worker processes')


@dataclass
class LoaderConfig:
    """Train/validation loaders."""

    batch_size: int = _f(8, low=1, high=4096, doc='training batch size')
    down_factor: float = _f(1.0, gt=0.0, high=1.0, doc='image downsampling factor (1 = none)')
    val_fraction: float = _f(0.2, gt=0.0, high=0.9, doc='fraction of training subjects used for validation')
    num_workers: int = _f(0, low=0, high=64, doc='DataLoader worker processes')


# --------------------------------------------------------------------------- the DeepSSM JSON config


@dataclass
class PathsConfig:
    """Output folders. Empty strings are filled from ``Config.work_dir``."""

    out_dir: str = _f('', doc='models and predictions')
    loader_dir: str = _f('', doc='loader arrays and whitening statistics')
    aug_dir: str = _f('', doc='augmentation output')


@dataclass
class EncoderConfig:
    deterministic: bool = _f(
        True,
        doc='false: a stochastic encoder (Uncertain-DeepSSM): it also predicts the variance of every latent '
        'score, trained in an extra stage (deepssm.uncertainty)',
    )
    channels: list[int] = _f(factory=lambda: [12, 24, 48, 96, 192], doc='channels of the 5 conv layers')
    dropout: float = _f(0.0, low=0.0, high=0.9, doc='dropout before each fully connected layer')
    input_margin_mm: float = _f(
        0.0,
        low=0.0,
        high=100.0,
        doc='> 0: the encoder reads only voxels this close to the mean training '
        'shape (the rest set to the mean intensity, the input cropped to '
        'them); 0 = the whole image',
    )


@dataclass
class DecoderConfig:
    deterministic: bool = _f(True, doc='only deterministic decoders are implemented')
    linear: bool = _f(
        True,
        doc='true: the linear PCA decoder; false: the PCA decoder plus a small MLP (latent -> particles) '
        'that starts at zero, trained with the encoder',
    )


@dataclass
class LossConfig:
    function: str = _f('MSE', options=('MSE', 'Focal'), doc='training loss on particles')
    supervised_latent: bool = _f(
        True,
        doc='true: the latent vector is tied to the whitened PCA scores; false: the loss is on the particles '
        'only and the decoder trains from the start',
    )
    focal_a: float = _f(1.32, low=0.0, doc='focal loss steepness a')
    focal_c: float = _f(10.0, low=0.0, doc='focal loss threshold c, mm')


@dataclass
class DecayLRConfig:
    enabled: bool = _f(True)
    type: str = _f('CosineAnnealing', options=('CosineAnnealing', 'Step'))
    parameters: dict[str, float] = _f(
        factory=lambda: {'T_max': 0, 'eta_min': 0.0, 'step_size': 1, 'gamma': 0.99},
        doc='T_max 0 means the whole run; step_size and gamma for Step',
    )


@dataclass
class TrainerConfig:
    epochs: int = _f(20, low=1, doc='training epochs')
    learning_rate: float = _f(1e-3, gt=0.0, high=1.0)
    decay_lr: DecayLRConfig = _f(factory=DecayLRConfig)
    val_freq: int = _f(1, low=1, doc='validate every val_freq epochs')
    weight_decay: float = _f(0.0, low=0.0, doc='L2 penalty of Adam')
    early_stopping: int = _f(0, low=0, doc='stop after this many validations without improvement; 0 = off')
    device: str = _f('auto', options=('auto', 'cpu', 'cuda'))
    precision: str = _f(
        'auto',
        options=('auto', 'fp32', 'bf16', 'fp16'),
        doc='auto: mixed precision on GPU, bf16 + channels-last on CPU where it helps',
    )
    seed: int = _f(0, low=0, doc='seed of the weights and of the batch order (every stage starts from it)')


@dataclass
class FineTuneConfig:
    enabled: bool = _f(False)
    loss: str = _f('MSE', options=('MSE', 'Focal'))
    epochs: int = _f(2, low=1)
    learning_rate: float = _f(1e-4, gt=0.0, high=1.0)
    decay_lr: bool = _f(True)
    val_freq: int = _f(1, low=1)


@dataclass
class TLNetConfig:
    enabled: bool = _f(False)
    ae_epochs: int = _f(100, low=1)
    tf_epochs: int = _f(100, low=1)
    joint_epochs: int = _f(25, low=1)
    alpha: float = _f(1.0, low=0.0)
    a_ae: float = _f(10.0, low=0.0)
    c_ae: float = _f(1.32, low=0.0)
    a_lat: float = _f(10.0, low=0.0)
    c_lat: float = _f(6.3, low=0.0)


@dataclass
class UncertaintyConfig:
    """The stochastic encoder's stage (``encoder.deterministic: false``) and its Monte Carlo prediction.

    The stage starts from the trained (and fine-tuned) model, adds the log-variance head and dropout, and
    trains for ``epochs``: the particle loss alone for ``burn_in_epochs``, then the Gaussian negative
    log-likelihood blended in linearly over ``ramp_epochs``, with the gradient norm clipped.
    """

    epochs: int = _f(3, low=1, doc='epochs of the uncertainty stage')
    burn_in_epochs: int = _f(1, low=0, doc='epochs with the particle loss only, before the likelihood')
    ramp_epochs: int = _f(1, low=0, doc='epochs over which the likelihood term rises from 0 to 1')
    learning_rate: float = _f(1e-4, gt=0.0, high=1.0)
    grad_clip: float = _f(1.0, gt=0.0, doc='largest gradient norm of a step (the likelihood can spike)')
    train_backbone: bool = _f(
        False, doc='false: only the fully connected layers and the heads learn (cheap); true: the whole encoder'
    )
    dropout: float = _f(0.1, low=0.0, high=0.9, doc='dropout before each fully connected layer, kept on for MC')
    mc_passes: int = _f(20, low=1, doc='Monte Carlo dropout passes at prediction (1: no epistemic part)')
    mc_seed: int = _f(0, low=0, doc='seed of the dropout masks of the passes (the same for every image)')
    threshold_quantile: float = _f(
        0.95,
        gt=0.0,
        high=0.999,
        doc='a prediction is flagged uncertain when its mean uncertainty is above this quantile of the '
        'validation images',
    )


@dataclass
class DeepSSMConfig:
    """The DeepSSM training config, with the keys of the DeepSSM JSON file."""

    model_name: str = _f('femur_deepssm', doc='outputs go to paths.out_dir/model_name')
    num_latent_dim: int = _f(0, low=0, doc='latent size; 0 means the number of PCA modes kept')
    paths: PathsConfig = _f(factory=PathsConfig)
    encoder: EncoderConfig = _f(factory=EncoderConfig)
    decoder: DecoderConfig = _f(factory=DecoderConfig)
    loss: LossConfig = _f(factory=LossConfig)
    trainer: TrainerConfig = _f(factory=TrainerConfig)
    fine_tune: FineTuneConfig = _f(factory=FineTuneConfig)
    use_best_model: bool = _f(True)
    calibrate: bool = _f(
        True,
        doc='shrink each predicted PCA score towards the mean by the factor that minimises '
        'the validation error (Base-DeepSSM; see deepssm_nb.calibration)',
    )
    tl_net: TLNetConfig = _f(factory=TLNetConfig)
    uncertainty: UncertaintyConfig = _f(factory=UncertaintyConfig)


# --------------------------------------------------------------------------- the whole tree


@dataclass
class Config:
    """The whole pipeline's configuration (single source of truth)."""

    profile: str = _f('workshop', options=PROFILES)
    seed: int = _f(0, low=0, doc='master seed; each stage derives its own from it')
    work_dir: str = _f('deepssm_output', doc='folder for every output of the pipeline')
    data: DataConfig = _f(factory=DataConfig)
    groom: GroomConfig = _f(factory=GroomConfig)
    augment: AugmentConfig = _f(factory=AugmentConfig)
    loader: LoaderConfig = _f(factory=LoaderConfig)
    deepssm: DeepSSMConfig = _f(factory=DeepSSMConfig)

    # ------------------------------------------------------------------ conversion
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready nested dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """Build and validate a Config from a nested dict.

        Missing keys take their defaults. Every problem (unknown key, wrong
        type, value out of range, unknown option) is collected and raised at
        once.

        Raises:
            ConfigError: With one line per problem, each with its dotted path.
        """
        problems: list[str] = []
        cfg = _build(cls, d, 'config', problems)
        problems += cfg._problems()
        if problems:
            raise ConfigError(problems)
        return cfg

    def validate(self) -> Config:
        """Check every value and cross-field rule; raise all problems at once.

        Returns:
            ``self``, for chaining.

        Raises:
            ConfigError: With one line per problem, each with its dotted path.
        """
        problems = self._problems()
        if problems:
            raise ConfigError(problems)
        return self

    def _problems(self) -> list[str]:
        problems: list[str] = []
        _check_tree(self, 'config', problems)
        if not problems:
            if self.data.num_test > self.data.num_subjects - 3 and self.data.cohort == 'femur':
                problems.append(
                    f'config.data.num_test: must leave at least 3 training subjects out of '
                    f'num_subjects={self.data.num_subjects}; got num_test={self.data.num_test}.'
                )
            ds = self.deepssm
            if not ds.decoder.deterministic:
                problems.append(
                    'config.deepssm.decoder.deterministic: only deterministic decoders are implemented (the '
                    'uncertainty comes from the encoder: set encoder.deterministic=false); expected true, got false.'
                )
            if ds.tl_net.enabled and not (ds.encoder.deterministic and ds.decoder.linear and ds.loss.supervised_latent):
                problems.append(
                    'config.deepssm.tl_net.enabled: TL-DeepSSM has its own non-linear decoder and latent space, '
                    'and no stochastic encoder; expected encoder.deterministic, decoder.linear and '
                    'loss.supervised_latent all true with it, got '
                    f'{ds.encoder.deterministic}, {ds.decoder.linear} and {ds.loss.supervised_latent}.'
                )
            u = ds.uncertainty
            if not ds.encoder.deterministic and u.mc_passes > 1 and u.dropout == 0:
                problems.append(
                    f'config.deepssm.uncertainty.mc_passes: {u.mc_passes} passes with uncertainty.dropout=0 would '
                    'all be the same; expected dropout > 0, or mc_passes=1 (no epistemic part).'
                )
            a = self.augment
            if (a.pose_jitter_mm or a.pose_jitter_deg) and not a.fresh_samples:
                problems.append(
                    'config.augment.pose_jitter_mm / pose_jitter_deg: the pose jitter is applied to fresh '
                    f'samples; expected augment.fresh_samples > 0, got {a.fresh_samples}.'
                )
            if len(self.deepssm.encoder.channels) != 5 or any(
                isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in self.deepssm.encoder.channels
            ):
                problems.append(
                    'config.deepssm.encoder.channels: expected a list of 5 positive integers; '
                    f'got {self.deepssm.encoder.channels!r}.'
                )
            params = self.deepssm.trainer.decay_lr.parameters
            for key in params:
                if key not in ('T_max', 'eta_min', 'step_size', 'gamma'):
                    near = nearest_spelling(key, ['T_max', 'eta_min', 'step_size', 'gamma'])
                    hint = f" Did you mean '{near}'?" if near else ''
                    problems.append(f'config.deepssm.trainer.decay_lr.parameters.{key}: unknown key.{hint}')
                elif isinstance(params[key], bool) or not isinstance(params[key], (int, float)) or params[key] < 0:
                    problems.append(
                        f'config.deepssm.trainer.decay_lr.parameters.{key}: expected a number >= 0; '
                        f'got {params[key]!r}.'
                    )
        return problems

    # ------------------------------------------------------------------ paths
    def resolved_paths(self) -> dict[str, Path]:
        """Folders of every stage, derived from ``work_dir`` unless set.

        Returns:
            Dict with keys ``work_dir``, ``data_dir``, ``groom_dir``, ``aug_dir``,
            ``loader_dir``, ``out_dir``, ``model_dir``, ``pred_dir`` and
            ``analysis_dir`` (``test_predictions_uncertain`` and ``analysis_uncertain`` for a stochastic
            encoder, so that its outputs sit beside those of the deterministic model it starts from).
        """
        work = Path(self.work_dir)
        p = self.deepssm.paths
        out = Path(p.out_dir) if p.out_dir else work / 'model'
        model_dir = out / self.deepssm.model_name
        suffix = '' if self.deepssm.encoder.deterministic else '_uncertain'  # beside the deterministic model's
        return {
            'work_dir': work,
            'data_dir': default_data_dir(self.data.data_dir),
            'groom_dir': work / 'groomed',
            'aug_dir': Path(p.aug_dir) if p.aug_dir else work / 'augmentation',
            'loader_dir': Path(p.loader_dir) if p.loader_dir else work / 'loaders',
            'out_dir': out,
            'model_dir': model_dir,
            'pred_dir': model_dir / f'test_predictions{suffix}',
            'analysis_dir': model_dir / f'analysis{suffix}',
        }

    def deepssm_json(self) -> dict[str, Any]:
        """The DeepSSM JSON config, with the paths filled in."""
        d = dataclasses.asdict(self.deepssm)
        paths = self.resolved_paths()
        d['paths'] = {k: str(paths[k]) for k in ('out_dir', 'loader_dir', 'aug_dir')}
        return d


def default_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The cohort cache folder: the argument, else ``$DEEPSSM_DATA_DIR``, else ``~/.cache/deepssm_nb``."""
    if data_dir:
        return Path(data_dir)
    env = os.environ.get('DEEPSSM_DATA_DIR')
    if env:
        return Path(env)
    return Path.home() / '.cache' / 'deepssm_nb'


# --------------------------------------------------------------------------- profiles


def get_profile(name: str = 'workshop', **overrides: Any) -> Config:
    """Return a fresh Config preset.

    Args:
        name: ``'smoke'``, ``'workshop'`` or ``'full'``.
        **overrides: Top-level fields to replace (e.g. ``work_dir='out'``).

    Raises:
        ConfigError: Unknown profile name (the nearest spelling is suggested).
    """
    from ._validation import look_up_option

    name = look_up_option(name, PROFILES, name='profile')
    cfg = Config(profile=name)
    if name == 'smoke':
        cfg.data = DataConfig(num_subjects=10, num_particles=128, spacing=2.0, num_test=2)
        cfg.groom = GroomConfig(spacing=4.0, padding=8.0, registration_iterations=40)
        cfg.augment = AugmentConfig(num_samples=12, percent_variability=0.9, grid_step=3.0)
        cfg.loader = LoaderConfig(batch_size=4)
        cfg.deepssm.trainer = TrainerConfig(epochs=2, learning_rate=1e-3)
        cfg.deepssm.encoder.channels = [4, 8, 8, 16, 16]
        cfg.deepssm.fine_tune = FineTuneConfig(enabled=True, epochs=1)
        cfg.deepssm.tl_net = TLNetConfig(ae_epochs=2, tf_epochs=2, joint_epochs=1)
        cfg.deepssm.uncertainty = UncertaintyConfig(epochs=2, mc_passes=4)
    elif name == 'workshop':
        cfg.data = DataConfig(num_subjects=26, num_particles=512, spacing=1.0, num_test=4)
        cfg.groom = GroomConfig(spacing=2.0, padding=10.0)
        cfg.augment = AugmentConfig(
            num_samples=400,
            warp_from='original',
            fresh_samples=352,
            pose_jitter_mm=1.0,
            pose_jitter_deg=1.0,
            intensity=IntensityConfig(enabled=True),
        )
        cfg.loader = LoaderConfig(batch_size=8)
        cfg.deepssm.trainer = TrainerConfig(epochs=9, learning_rate=1e-3)
        cfg.deepssm.encoder.channels = [8, 16, 32, 64, 128]
        cfg.deepssm.fine_tune = FineTuneConfig(enabled=True, epochs=1, learning_rate=1e-4)
        cfg.deepssm.tl_net = TLNetConfig(ae_epochs=10, tf_epochs=2, joint_epochs=1)
    else:  # full
        cfg.data = DataConfig(num_subjects=26, num_particles=1024, spacing=1.0, num_test=4)
        cfg.groom = GroomConfig(spacing=1.0, padding=10.0, registration_iterations=500)
        cfg.augment = AugmentConfig(num_samples=4000, grid_step=4.0, processes=8)
        cfg.loader = LoaderConfig(batch_size=8, num_workers=4)
        cfg.deepssm.trainer = TrainerConfig(epochs=100, learning_rate=1e-3)
        cfg.deepssm.fine_tune = FineTuneConfig(enabled=True, epochs=10, learning_rate=1e-4)
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            near = nearest_spelling(key, [f.name for f in dataclasses.fields(cfg)])
            hint = f" Did you mean '{near}'?" if near else ''
            raise ConfigError(f'get_profile: unknown override {key!r}.{hint}')
        setattr(cfg, key, value)
    return cfg.validate()


# --------------------------------------------------------------------------- JSON files


def save_config(cfg: Config, path: str | os.PathLike) -> Path:
    """Write the whole config tree as JSON (atomically)."""
    from .io import atomic_write_text

    return atomic_write_text(path, json.dumps(cfg.to_dict(), indent=2) + '\n')


def load_config(path: str | os.PathLike) -> Config:
    """Read a config JSON file written by :func:`save_config`.

    A file that holds only the DeepSSM keys (``model_name``, ``trainer``, ...)
    is accepted too: it becomes the ``deepssm`` branch of a workshop Config.

    Raises:
        FileNotFoundError: The file does not exist.
        ConfigError: Invalid JSON or invalid values (all problems at once).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'Config file not found: "{path}"')
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f'"{path}" is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}.') from None
    if not isinstance(d, dict):
        raise ConfigError(f'"{path}" must hold a JSON object; got {type(d).__name__}.')
    if 'model_name' in d and 'deepssm' not in d:
        d = {'deepssm': d}
    return Config.from_dict(d)


# --------------------------------------------------------------------------- generic machinery


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, inner) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, tp)


def _type_name(tp: Any) -> str:
    names = {bool: 'a boolean', int: 'an integer', float: 'a number', str: 'a string'}
    if tp in names:
        return names[tp]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is list:
        return f'a list of {_type_name(args[0])}s' if args else 'a list'
    if typing.get_origin(tp) is dict:
        return 'an object'
    if len(args) == 1:
        return f'{_type_name(args[0])} or null'
    return str(tp)


def _build(cls: type, d: Any, path: str, problems: list[str]) -> Any:
    if not isinstance(d, dict):
        problems.append(f'{path}: expected an object; got {d!r}.')
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in d.items():
        if key not in fields:
            near = nearest_spelling(str(key), fields)
            hint = f" Did you mean '{near}'?" if near else f' Valid keys: {sorted(fields)}.'
            problems.append(f'{path}.{key}: unknown key.{hint}')
            continue
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f'{path}.{key}', problems)
        else:
            kwargs[key] = copy.deepcopy(value)
    obj = cls(**kwargs)
    return obj


def _check_tree(obj: Any, path: str, problems: list[str]) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        where = f'{path}.{f.name}'
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, tp):
                problems.append(f'{where}: expected an object ({tp.__name__}); got {value!r}.')
            else:
                _check_tree(value, where, problems)
            continue
        meta = f.metadata
        if value is None and meta.get('nullable'):
            continue
        if not _type_ok(value, tp):
            problems.append(f'{where}: expected {_type_name(tp)}; got {value!r} ({type(value).__name__}).')
            continue
        if 'options' in meta and value not in meta['options']:
            near = nearest_spelling(value, meta['options']) if isinstance(value, str) else None
            hint = f" Did you mean '{near}'?" if near else ''
            problems.append(f'{where}: expected one of {list(meta["options"])}; got {value!r}.{hint}')
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):  # NaN or infinite (an int always is finite)
                problems.append(f'{where}: expected a finite number; got {value!r}.')
                continue
            lo, hi, gt = meta.get('low'), meta.get('high'), meta.get('gt')
            if (lo is not None and value < lo) or (hi is not None and value > hi) or (gt is not None and value <= gt):
                left = f'[{lo}' if lo is not None else (f'({gt}' if gt is not None else '(-inf')
                right = f'{hi}]' if hi is not None else 'inf)'
                problems.append(f'{where}: expected a value in {left}, {right}; got {value!r}.')


def get_field(config: Any, dotted: str) -> Any:
    """The field at a dotted path of a config tree, e.g. ``get_field(cfg, 'deepssm.trainer.epochs')``."""
    obj = config
    for part in dotted.split('.'):
        obj = getattr(obj, part)
    return obj


def set_field(config: Any, dotted: str, value: Any) -> None:
    """Set the field at a dotted path of a config tree, e.g. ``set_field(cfg, 'deepssm.trainer.epochs', 20)``.

    The value is not checked here; ``config.validate()`` reports every bad value at once.

    Raises:
        ConfigError: No such key (the nearest spelling is suggested).
    """
    obj, parts = config, dotted.split('.')
    for depth, part in enumerate(parts):
        if not dataclasses.is_dataclass(obj) or part not in {f.name for f in dataclasses.fields(obj)}:
            known = [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []
            near = nearest_spelling(part, known)
            where = '.'.join(parts[:depth]) or 'the config'
            hint = f" Did you mean '{near}'?" if near else f' Known: {known}.' if known else ''
            raise ConfigError(f'{dotted!r}: {where} has no key {part!r}.{hint}')
        if depth == len(parts) - 1:
            setattr(obj, part, value)
        else:
            obj = getattr(obj, part)


def notebook_config(
    profile: str, work_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None, settings=None
) -> Config:
    """The config of a notebook's parameters cell: a profile, its folders, and the cell's own settings.

    Args:
        profile: ``'smoke'``, ``'workshop'`` or ``'full'``.
        work_dir: Folder of every output.
        data_dir: Cohort cache folder (default: ``$DEEPSSM_DATA_DIR``, else ``~/.cache/deepssm_nb``).
        settings: ``{dotted key: value}``, e.g. ``{'deepssm.trainer.epochs': max_epochs}``; a value of None keeps
            the profile's.

    Returns:
        The validated :class:`Config`.

    Raises:
        ConfigError: An unknown key, or bad values (every problem at once).

    Example:
        >>> cfg = notebook_config('smoke', 'out', settings={'deepssm.trainer.epochs': 3, 'loader.batch_size': None})
        >>> cfg.deepssm.trainer.epochs, cfg.loader.batch_size
        (3, 4)
    """
    cfg = get_profile(profile, work_dir=str(work_dir))
    cfg.data.data_dir = None if data_dir is None else str(data_dir)
    for key, value in (settings or {}).items():
        if value is not None:
            set_field(cfg, key, value)
    return cfg.validate()


def profile_table(
    keys: tuple[str, ...] = (
        'data.num_subjects',
        'data.num_particles',
        'data.spacing',
        'groom.spacing',
        'augment.num_samples',
        'loader.batch_size',
        'deepssm.trainer.epochs',
        'deepssm.fine_tune.epochs',
    ),
) -> dict:
    """Print the values that differ between profiles, one row per key.

    Returns:
        ``{key: {profile: value}}``.
    """
    table = {}
    profiles = {p: get_profile(p) for p in PROFILES}
    for key in keys:
        row = {}
        for p, cfg in profiles.items():
            row[p] = get_field(cfg, key)
        table[key] = row
    width = max(len(k) for k in keys)
    print(f'{"":{width}}  ' + ''.join(f'{p:>10}' for p in PROFILES))
    for key, row in table.items():
        print(f'{key:{width}}  ' + ''.join(f'{row[p]!s:>10}' for p in PROFILES))
    return table
