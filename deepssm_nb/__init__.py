"""deepssm_nb: DeepSSM, taught and run in notebooks, on a real femur cohort."""

from __future__ import annotations

__version__ = '0.1.0'

from ._validation import ConfigError, DataError, NotFittedError
from .config import Config, DeepSSMConfig, get_profile, load_config, save_config
from .device import get_device, print_config
from .io import read_image, read_particles, write_image, write_particles

__all__ = [
    'Config',
    'ConfigError',
    'DataError',
    'DeepSSMConfig',
    'NotFittedError',
    'get_device',
    'get_profile',
    'load_config',
    'print_config',
    'read_image',
    'read_particles',
    'save_config',
    'write_image',
    'write_particles',
]
