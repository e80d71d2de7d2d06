"""Compute device selection and an environment report.

A CUDA device is used only when a real kernel launch on it succeeds (a wheel
built without kernels for the installed GPU reports ``is_available()`` but
fails at the first launch). Otherwise the CPU is used with a one-line warning;
nothing here ever exits the interpreter.
"""

from __future__ import annotations

import platform
import warnings

from ._validation import ConfigError, look_up_option

__all__ = ['cuda_usable', 'get_device', 'print_config']


def cuda_usable() -> tuple[bool, str]:
    """Whether CUDA works here, checked by a real kernel launch.

    Returns:
        ``(usable, reason)``; ``reason`` says why not, or names the GPU.
    """
    import torch

    if not torch.cuda.is_available():
        return False, 'no CUDA device is visible to PyTorch'
    try:
        x = torch.arange(8, device='cuda', dtype=torch.float32)
        y = float((x * 2).sum().item())
        if y != 56.0:
            return False, f'a test kernel on the GPU returned {y}, expected 56.0'
        return True, torch.cuda.get_device_name(0)
    except Exception as e:  # noqa: BLE001 - any failure means "not usable"
        return False, f'a test kernel failed on the GPU: {str(e).splitlines()[0]}'


_CPU_WARNING_SHOWN = False


def get_device(requested: str = 'auto'):
    """Pick the torch device.

    Args:
        requested: ``'auto'`` (CUDA when usable, else CPU, with a RuntimeWarning the
            first time in a process), ``'cpu'`` or ``'cuda'``.

    Returns:
        ``torch.device``.

    Raises:
        ConfigError: ``requested`` is unknown, or ``'cuda'`` was requested and
            no usable GPU is present (the message says why and what to set).
    """
    import torch

    requested = look_up_option(requested, ('auto', 'cpu', 'cuda'), name='device')
    if requested == 'cpu':
        return torch.device('cpu')
    ok, reason = cuda_usable()
    if ok:
        return torch.device('cuda')
    if requested == 'cuda':
        raise ConfigError(f"device: 'cuda' was requested but {reason}. Set the device to 'auto' or 'cpu'.")
    global _CPU_WARNING_SHOWN
    if not _CPU_WARNING_SHOWN:  # once per process: a notebook calls this in many cells
        _CPU_WARNING_SHOWN = True
        warnings.warn(f'Using the CPU ({reason}); training will be slower than on a GPU.', RuntimeWarning, stacklevel=2)
    return torch.device('cpu')


def print_config() -> None:
    """Print the versions of the main dependencies and the compute device."""
    import importlib.metadata as md

    import torch

    from . import __version__

    print(f'deepssm_nb {__version__} | Python {platform.python_version()} | {platform.platform(terse=True)}')
    names = ['torch', 'numpy', 'scipy', 'SimpleITK', 'scikit-learn', 'pyvista', 'vtk', 'matplotlib', 'ipywidgets']
    vers = []
    for n in names:
        try:
            vers.append(f'{n} {md.version(n)}')
        except md.PackageNotFoundError:
            vers.append(f'{n} (not installed)')
    print(' | '.join(vers))
    ok, reason = cuda_usable()
    if ok:
        print(f'Device: CUDA ({reason})')
    else:
        print(
            f'Device: CPU, {torch.get_num_threads()} threads ({reason}). Everything runs on the CPU; '
            'the workshop profile is sized for it.'
        )
