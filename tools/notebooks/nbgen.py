"""Tiny helpers to write the tutorial notebooks from Python generator scripts.

Each ``tools/notebooks/NN_topic.py`` builds a list of cells with :func:`md`,
:func:`code` and :func:`params`, then calls :func:`write`. Outputs are never
stored: notebooks are committed stripped.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

# where the notebooks go: the repository's notebooks/, or $NBGEN_OUT (the test that the committed notebooks are
# what their generators write uses a temporary folder)
NOTEBOOK_DIR = Path(os.environ.get('NBGEN_OUT') or Path(__file__).resolve().parents[2] / 'notebooks')


def md(text: str):
    """A markdown cell (leading/trailing blank lines removed)."""
    return new_markdown_cell(text.strip('\n'))


def code(text: str):
    """A code cell."""
    return new_code_cell(text.strip('\n'))


def params(text: str):
    """The code cell tagged ``parameters`` (papermill convention)."""
    cell = new_code_cell(text.strip('\n'))
    cell.metadata['tags'] = ['parameters']
    return cell


COLAB_INSTALL = (
    '# On Colab, uncomment the next line first (torch is already installed there and is kept):\n'
    '# !pip install -q "deepssm-nb @ git+https://github.com/deepssm-nb/deepssm-nb"\n'
)


def write(name: str, cells: list) -> Path:
    """Write ``notebooks/<name>.ipynb`` with a Python 3 kernel spec.

    The first code cell (the setup cell) gets the Colab install line if it does not have one.
    """
    first = next(c for c in cells if c.cell_type == 'code')
    if 'pip install' not in first.source:
        first.source = COLAB_INSTALL + first.source
    nb = new_notebook(cells=cells)
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating a notebook gives a minimal diff
        cell['id'] = f'{name[:2]}-{i:02d}'
    nb.metadata['kernelspec'] = {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'}
    nb.metadata['language_info'] = {'name': 'python'}
    path = NOTEBOOK_DIR / f'{name}.ipynb'
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path
