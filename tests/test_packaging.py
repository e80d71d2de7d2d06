"""Packaging: Binder and conda environments agree; the two commands exist."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _conda_packages(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        m = re.match(r'^\s{2}- ([A-Za-z0-9_.\-]+)', line)
        if m and m.group(1) != 'pip':
            names.add(m.group(1).lower())
    return names


def test_binder_lists_the_same_packages_as_the_root_environment():
    root = _conda_packages(ROOT / 'environment.yml')
    binder = _conda_packages(ROOT / 'binder' / 'environment.yml')
    assert root == binder
    assert {'pytorch', 'cpuonly', 'simpleitk', 'pyvista', 'trame', 'jupyterlab', 'ipywidgets'} <= root


def test_binder_is_complete_on_its_own():
    post = (ROOT / 'binder' / 'postBuild').read_text()
    assert 'pip install' in post and '-e .' in post
    start = (ROOT / 'binder' / 'start').read_text()
    assert 'PYVISTA_TRAME_SERVER_PROXY_PREFIX' in start and start.rstrip().endswith('exec "$@"')


def test_pyproject_declares_the_stack_and_a_torch_floor():
    deps = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['dependencies']
    names = {re.split(r'[<>=\[ ]', d)[0].lower() for d in deps}
    assert {
        'torch',
        'simpleitk',
        'scikit-learn',
        'scipy',
        'pyvista',
        'trame',
        'matplotlib',
        'tqdm',
        'ipywidgets',
        'jupyterlab',
    } <= names
    assert 'torch>=2.3' in deps


def test_make_targets_and_ci():
    mk = (ROOT / 'Makefile').read_text()
    for target in ('tutorial:', 'test:', 'lab:', 'setup:'):
        assert target in mk
    assert 'torch==2.13.0' in mk
    assert 'make test' in (ROOT / '.ci' / 'run').read_text()


def test_make_test_lints_first():
    mk = (ROOT / 'Makefile').read_text()
    recipe = mk.split('\ntest: setup\n', 1)[1].split('\n\n', 1)[0]
    lint = recipe.index('$(BIN)/ruff check .'), recipe.index('$(BIN)/ruff format --check .')
    assert max(lint) < recipe.index('-m pytest')
    dev = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['optional-dependencies']['dev']
    assert any(d.startswith('ruff') for d in dev)
