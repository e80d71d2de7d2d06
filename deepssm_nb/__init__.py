"""deepssm_nb: DeepSSM, taught and run in notebooks, on a real femur cohort.

The pipeline, one module per step (see each module's docstring):

``data`` (cohorts) -> ``groom`` -> ``pca`` / ``samplers`` / ``tps`` / ``augment`` -> ``loaders`` ->
``models`` / ``losses`` / ``train`` -> ``predict`` -> ``surface`` / ``analyze``; ``viz`` and ``widgets`` for
notebooks; ``config`` holds every knob; ``pipeline.ensure`` runs whatever is missing.

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
