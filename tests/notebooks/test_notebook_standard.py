"""Every tutorial notebook follows the same teaching structure.

Title and purpose, "You will learn" (3-5 points), a setup cell, a
``parameters`` cell with every knob, thin code cells, a summary, exercises and
a link to the next notebook; outputs are stripped in git.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from deepssm_nb.nbrun import list_notebooks

NB_DIR = Path(__file__).resolve().parents[2] / 'notebooks'
NOTEBOOKS = list_notebooks(NB_DIR)
MAX_CODE_LINES = 12


def _load(path):
    return nbformat.read(str(path), as_version=4)


def _md(nb):
    return '\n'.join(c.source for c in nb.cells if c.cell_type == 'markdown')


def test_the_series_is_complete_and_numbered():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(len(numbers)))
    assert len(numbers) >= 2


@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_structure(path):
    nb = _load(path)
    first = nb.cells[0]
    assert first.cell_type == 'markdown'
    title = first.source.splitlines()[0]
    assert re.match(rf'^# {path.name[:2]} · \S', title), f'{path.name}: title must be "# NN · Title", got {title!r}'
    purpose = [ln for ln in first.source.splitlines()[1:] if ln.strip() and not ln.startswith(('**', '-', '#'))]
    assert purpose, f'{path.name}: a short purpose must follow the title'
    learn = first.source.split('**You will learn**', 1)
    assert len(learn) == 2, f'{path.name}: the first cell needs a "**You will learn**" list'
    bullets = re.findall(r'^- .+', learn[1].strip().split('\n\n')[0], re.MULTILINE)
    assert 3 <= len(bullets) <= 5, f'{path.name}: "You will learn" has {len(bullets)} points; expected 3 to 5'
    text = _md(nb)
    for heading in ('## Setup', '## Parameters', '## Summary', '## Exercises', '## Next'):
        assert heading in text, f'{path.name}: missing section {heading!r}'


@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_parameters_cell_and_setup(path):
    nb = _load(path)
    code = [c for c in nb.cells if c.cell_type == 'code']
    tagged = [c for c in code if 'parameters' in c.metadata.get('tags', [])]
    assert len(tagged) == 1, f'{path.name}: expected exactly one cell tagged "parameters", found {len(tagged)}'
    for knob in ('profile', 'work_dir', 'data_dir'):
        assert re.search(rf'^{knob}\s*=', tagged[0].source, re.MULTILINE), (
            f'{path.name}: parameters cell lacks {knob!r}'
        )
    setup = code[0].source
    assert 'import deepssm_nb' in setup and 'print_config()' in setup, (
        f'{path.name}: setup cell must import deepssm_nb and end with deepssm_nb.print_config()'
    )


@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_cells_are_thin_and_outputs_stripped(path):
    nb = _load(path)
    for i, c in enumerate(nb.cells):
        if c.cell_type != 'code':
            continue
        assert not c.get('outputs'), f'{path.name}: cell {i} has stored outputs; strip them before committing'
        assert c.get('execution_count') is None, f'{path.name}: cell {i} has an execution count'
        lines = [ln for ln in c.source.splitlines() if ln.strip() and not ln.strip().startswith('#')]
        assert len(lines) <= MAX_CODE_LINES, f'{path.name}: cell {i} has {len(lines)} code lines (max {MAX_CODE_LINES})'
        assert not re.search(r'^\s*for .* in .*epoch', c.source, re.MULTILINE), (
            f'{path.name}: cell {i} loops over epochs'
        )


@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_next_links_to_the_following_notebook(path):
    text = _md(_load(path))
    later = [p for p in NOTEBOOKS if p.name > path.name]
    if later:
        assert f'({later[0].name})' in text, f'{path.name}: "## Next" must link to {later[0].name}'


@pytest.mark.parametrize('stem', ['03_data_augmentation', '05_train_base_deepssm', '06_tl_deepssm'])
def test_expensive_steps_can_be_rerun_from_a_button(stem):
    """The notebooks with the long steps offer a config panel over a copy of the config plus a Run button."""
    nb = _load(NB_DIR / f'{stem}.ipynb')
    cells = [c.source for c in nb.cells if c.cell_type == 'code' and 'run_button(' in c.source]
    assert len(cells) == 1, f'{stem}: expected one cell with a run_button, found {len(cells)}'
    assert 'config_panel(trial' in cells[0] and 'Config.from_dict(cfg.to_dict())' in cells[0], (
        f'{stem}: the Run button must act on a copy of the config, edited by a config panel'
    )
