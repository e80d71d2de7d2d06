"""Run every tutorial notebook, in order, in the smoke profile.

The notebooks share one work folder and one data folder, as a learner's
session does; each notebook must also be able to build what it needs on its
own (``deepssm_nb.pipeline.ensure``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deepssm_nb.nbrun import execute_notebook, list_notebooks

NOTEBOOKS = list_notebooks(Path(__file__).resolve().parents[2] / 'notebooks')


@pytest.fixture(scope='session')
def nb_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp('nbrun')
    return {'work_dir': str(root / 'work'), 'data_dir': str(root / 'data'), 'out': root / 'executed'}


@pytest.mark.notebook
@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_smoke_profile(path, nb_dirs):
    overrides = {'profile': 'smoke', 'work_dir': nb_dirs['work_dir'], 'data_dir': nb_dirs['data_dir']}
    nb, seconds = execute_notebook(path, overrides, out_path=nb_dirs['out'] / path.name, timeout=600)
    errors = [
        o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []) if o.get('output_type') == 'error'
    ]
    assert not errors
    if path.stem != '00_setup':  # every later notebook shows at least one figure in the saved file
        pngs = [
            o
            for c in nb.cells
            if c.cell_type == 'code'
            for o in c.get('outputs', [])
            if 'image/png' in o.get('data', {})
        ]
        assert pngs, f'{path.name}: no figure was saved in the executed notebook'
    assert seconds < 300, f'{path.name} took {seconds:.0f} s in the smoke profile'
    # an optional retry sits behind a Run button: running top to bottom must not start it
    work = Path(nb_dirs['work_dir'])
    assert not (work / 'augmentation_try').exists() and not list(work.glob('model/*_try')), (
        f'{path.name}: a "try other settings" step ran without its button being pressed'
    )
