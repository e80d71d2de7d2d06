"""The package's structure: stages do not know the pipeline, each name has one home, nothing private leaks."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import numpy as np
import pytest

import deepssm_nb
from deepssm_nb import ConfigError, pipeline
from deepssm_nb._validation import check_random_state

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'deepssm_nb'
FACES = {'deepssm_nb', 'deepssm_nb.data', 'deepssm_nb.viz'}  # package faces hand names on


def _modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(deepssm_nb.__path__, 'deepssm_nb.')]


def _imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, as an absolute dotted name (relative imports resolved)."""
    parts = path.relative_to(ROOT).with_suffix('').parts
    package = parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = '.'.join(package[: len(package) - node.level + 1]) if node.level else ''
            mod = '.'.join(p for p in (base, node.module or '') if p)
            found.add(mod)
            found |= {f'{mod}.{a.name}' for a in node.names}
    return found


def test_no_stage_module_imports_the_pipeline():
    allowed = {'pipeline.py', 'cli.py', '__init__.py', '__main__.py'}
    offenders = [
        str(p.relative_to(ROOT))
        for p in PACKAGE.rglob('*.py')
        if p.name not in allowed and 'deepssm_nb.pipeline' in _imported_modules(p)
    ]
    assert offenders == []


def test_every_stage_takes_only_the_results_of_earlier_stages():
    order = list(pipeline.STAGES)
    assert order == ['cohort', 'groom', 'augment', 'loaders', 'train', 'predict', 'analyze']
    for stage, (module, function, _, inputs) in pipeline.STAGE_TABLE.items():
        assert callable(getattr(importlib.import_module(f'deepssm_nb.{module}'), function)), stage
        assert all(order.index(i) < order.index(stage) for i in inputs), stage


def test_each_public_name_is_exported_by_one_module():
    owners: dict[str, list[str]] = {}
    for name in _modules():
        if name in FACES:
            continue
        for exported in getattr(importlib.import_module(name), '__all__', []):
            owners.setdefault(exported, []).append(name)
    assert {n: m for n, m in owners.items() if len(m) > 1} == {}


def test_no_test_benchmark_or_notebook_imports_a_private_name():
    files = [*ROOT.glob('tests/**/*.py'), *ROOT.glob('bench/*.py'), *ROOT.glob('tools/**/*.py')]
    offenders = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('deepssm_nb'):
                private_module = any(p.startswith('_') for p in node.module.split('.')) and node.module != (
                    'deepssm_nb._validation'  # the validators are tested where they are defined
                )
                names = [a.name for a in node.names if a.name.startswith('_')]
                if private_module or names:
                    offenders.append(f'{path.relative_to(ROOT)}: from {node.module} import {names or "..."}')
    for nb in ROOT.glob('notebooks/*.ipynb'):
        if 'deepssm_nb._' in nb.read_text() or 'import _' in nb.read_text():
            offenders.append(str(nb.relative_to(ROOT)))
    assert offenders == []


def test_check_random_state_is_the_one_way_to_a_seed():
    assert check_random_state(7) == 7 and check_random_state(np.int64(3)) == 3
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    assert check_random_state(a) == check_random_state(b) and 0 <= check_random_state(a) < 2**31 - 1
    assert check_random_state(a) != check_random_state(np.random.default_rng(5))  # the generator moved on
    assert 0 <= check_random_state(None) < 2**31


@pytest.mark.bad_input
@pytest.mark.parametrize('bad', [-1, 1.5, '3', True, [1]])
def test_check_random_state_names_what_arrived(bad):
    with pytest.raises(ConfigError, match=r'seed must be (an integer|in).*got'):
        check_random_state(bad, name='seed')
