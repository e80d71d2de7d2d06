"""The benchmark scripts of ``bench/``, imported as modules by their tests (they are scripts, not a package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / 'bench'


def load_bench(name: str) -> ModuleType:
    """The script ``bench/<name>.py`` as a module named ``bench_<name>``."""
    spec = importlib.util.spec_from_file_location(f'bench_{name}', BENCH / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
