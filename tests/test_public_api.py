"""Every public name resolves; importing the package stays light."""

from __future__ import annotations

import subprocess
import sys

import deepssm_nb


def test_every_public_name_resolves():
    missing = [name for name in deepssm_nb.__all__ if not hasattr(deepssm_nb, name)]
    assert missing == []


def test_import_does_not_pull_torch_or_pyvista():
    code = 'import sys, deepssm_nb; print("torch" in sys.modules, "pyvista" in sys.modules)'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ['False', 'False']
