"""deepssm_nb: DeepSSM, taught and run in notebooks, on a real femur cohort.

The stages, in the order the pipeline runs them (each returns one typed result that the next takes; the table
that threads them is in ``pipeline``):

1. ``data`` -> ``Cohort``: the embedded femur cohort, ShapeWorks folders and projects; ``cohort_from_config``.
2. ``groom`` -> ``GroomResult``: one reference grid; training shapes aligned, test images registered
   (``registration``), with the grids, resampling and downsampling of ``imageops``.
3. ``augment`` -> ``AugmentResult``: the shape PCA (``pca``), score samplers (``samplers``), thin-plate-spline
   warps (``tps``, ``synthesis``) and the table of every sample (``TotalData``).
4. ``loaders`` -> ``Loaders``: the split by subject, the whitening (``normalization``), the ``.npy`` arrays
   (``datasets``), and fresh samples and intensity changes while training (``training_set``, ``intensity``).
5. ``train`` -> ``TrainResult``: the networks (``models``), losses (``losses``), the epoch loop (``train_loop``),
   checkpoints (``checkpoints``), model files (``model_files``), the validation calibration (``calibration``)
   and the uncertainty arithmetic of Uncertain-DeepSSM (``uncertainty``).
6. ``predict`` -> ``Predictions``: the test images, and any new image (``predict_image``).
7. ``analyze`` -> ``AnalysisResult``: surfaces and distances (``surface``, ``meshio``), both baselines, the report.

Around them: ``config`` (every knob, one typed tree), ``freshness`` (the record that lets each stage reuse its
outputs), ``io``, ``device``, ``viz`` and ``widgets`` for notebooks, ``nbrun`` (notebooks run headless), ``cli``.

Heavy modules (torch, pyvista) are imported on first use of their names, so ``import deepssm_nb`` is quick.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = '0.1.0'

from ._validation import ConfigError, DataError, NotFittedError
from .config import Config, DeepSSMConfig, get_profile, load_config, notebook_config, save_config
from .device import get_device, print_config
from .io import read_image, read_particles, write_image, write_particles

# Public names provided by submodules, imported lazily: name -> module.
_LAZY = {
    'Cohort': 'data',
    'Subject': 'data',
    'build_femur_cohort': 'data',
    'load_cohort': 'data',
    'load_femur_cohort': 'data',
    'groom_cohort': 'groom',
    'load_groomed': 'groom',
    'register_image': 'registration',
    'run_grooming': 'groom',
    'ShapePCA': 'pca',
    'sample_scores': 'samplers',
    'ThinPlateSpline': 'tps',
    'run_augmentation': 'augment',
    'run_data_augmentation': 'augment',
    'build_loaders': 'loaders',
    'get_test_loader': 'loaders',
    'get_train_val_loaders': 'loaders',
    'DeepSSMNet': 'models',
    'TLDeepSSMNet': 'models',
    'init_pca_decoder': 'models',
    'focal_loss': 'losses',
    'load_trained_model': 'model_files',
    'train_deepssm': 'train',
    'predict_image': 'predict',
    'test_deepssm': 'predict',
    'surface_distance': 'surface',
    'symmetric_surface_distance': 'surface',
    'warp_mesh': 'surface',
    'analyze_results': 'analyze',
    'run_analysis': 'analyze',
    'ensure': 'pipeline',
    'run_pipeline': 'pipeline',
    'config_panel': 'widgets',
}

__all__ = [  # noqa: PLE0604 - *sorted(_LAZY) adds the lazy names, strings too
    'Config',
    'ConfigError',
    'DataError',
    'DeepSSMConfig',
    'NotFittedError',
    'get_device',
    'get_profile',
    'load_config',
    'notebook_config',
    'print_config',
    'read_image',
    'read_particles',
    'save_config',
    'write_image',
    'write_particles',
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'deepssm_nb' has no attribute {name!r}")
    value = getattr(importlib.import_module(f'.{module}', __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
