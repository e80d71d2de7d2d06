"""The committed notebooks are exactly what their generators in tools/notebooks/ write (``make notebooks``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATORS = sorted((ROOT / 'tools' / 'notebooks').glob('[0-9][0-9]_*.py'))


def test_every_notebook_has_a_generator():
    assert [g.stem for g in GENERATORS] == sorted(p.stem for p in (ROOT / 'notebooks').glob('[0-9][0-9]_*.ipynb'))


@pytest.mark.parametrize('generator', GENERATORS, ids=lambda p: p.stem)
def test_committed_notebook_is_what_its_generator_writes(generator, tmp_path):
    env = {**os.environ, 'NBGEN_OUT': str(tmp_path)}
    subprocess.run([sys.executable, str(generator)], cwd=generator.parent, env=env, check=True, timeout=120)
    written = json.loads((tmp_path / f'{generator.stem}.ipynb').read_text())
    committed = json.loads((ROOT / 'notebooks' / f'{generator.stem}.ipynb').read_text())
    for i, (a, b) in enumerate(zip(written['cells'], committed['cells'])):
        assert a == b, (
            f'notebooks/{generator.stem}.ipynb cell {i} differs from what {generator.name} writes; '
            'edit the generator, then run "make notebooks".'
        )
    assert written == committed, (
        f'notebooks/{generator.stem}.ipynb differs from {generator.name}; run "make notebooks".'
    )
