"""A real browser: JupyterLab on 127.0.0.1 driven by headless Chromium (Playwright).

Skipped, with the reason, where Debian's Chromium or the Playwright package is
missing (``make test`` installs both where it can). Screenshots are saved to
``test-artifacts/`` in the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / 'test-artifacts'
CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--enable-unsafe-swiftshader']

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(sync_playwright is None, reason='the playwright package is not installed'),
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason="Debian's chromium is not installed (make test installs it where it runs as root)"),
]

TOKEN = 'deepssm-browser-test'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 over a temporary folder; yields (url, folder)."""
    root = tmp_path_factory.mktemp('lab')
    home = root / '.home'
    env = dict(os.environ)
    for var, sub in (('JUPYTER_CONFIG_DIR', 'cfg'), ('JUPYTER_DATA_DIR', 'data'), ('JUPYTER_RUNTIME_DIR', 'rt'),
                     ('IPYTHONDIR', 'ipy'), ('MPLCONFIGDIR', 'mpl')):
        env[var] = str(home / sub)
    user_settings = home / 'lab-user-settings'
    env['JUPYTERLAB_SETTINGS_DIR'] = str(user_settings)
    notif = user_settings / '@jupyterlab' / 'apputils-extension' / 'notification.jupyterlab-settings'
    notif.parent.mkdir(parents=True)
    notif.write_text(json.dumps({'checkForUpdates': False, 'fetchNews': 'false'}))
    env.pop('PYVISTA_JUPYTER_BACKEND', None)  # a live front-end: let the viewer pick the interactive backend
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, '-m', 'jupyterlab', '--no-browser', '--ip=127.0.0.1', f'--port={port}',
         f'--ServerApp.token={TOKEN}', f'--ServerApp.root_dir={root}', '--allow-root',
         f'--LabApp.workspaces_dir={home / "ws"}'],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f'http://127.0.0.1:{port}'
    for _ in range(120):
        try:
            with urllib.request.urlopen(f'{url}/api/status?token={TOKEN}', timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.terminate()
        pytest.fail('JupyterLab did not start within 60 s')
    yield url, root
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def _prepare(notebook: str, folder: Path, overrides: dict) -> str:
    """Copy a notebook into ``folder`` with its parameters overridden; return its name."""
    import nbformat

    from deepssm_nb._nbrun import _inject

    nb = nbformat.read(str(ROOT / 'notebooks' / notebook), as_version=4)
    _inject(nb, overrides)
    nbformat.write(nb, str(folder / notebook))
    return notebook


def _open_and_run_all(page, url: str, name: str) -> object:
    page.goto(f'{url}/lab/tree/{name}?reset&token={TOKEN}')
    nb = page.locator('.jp-NotebookPanel:visible')
    nb.locator('.jp-CodeCell').first.wait_for(timeout=90_000)
    page.wait_for_function(
        "() => /\\|\\s*Idle/.test(document.querySelector('.jp-StatusBar-Widget')?.innerText || '')",
        timeout=90_000)
    page.locator('.lm-MenuBar-itemLabel', has_text='Run').first.click()
    page.locator('.lm-Menu-itemLabel:text-is("Run All Cells")').first.click()
    return nb


def _wait_idle_after_run(page, timeout_ms: int) -> None:
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputPrompt')]"
        ".every(e => !e.innerText.includes('*'))", timeout=timeout_ms)


def _png_std(png: bytes) -> float:
    import io

    from PIL import Image

    return float(np.asarray(Image.open(io.BytesIO(png)).convert('L'), dtype=float).std())


@pytest.fixture(scope='module')
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


def test_setup_notebook_widgets_edit_the_config(lab, browser):
    url, root = lab
    name = _prepare('00_setup.ipynb', root, {'profile': 'smoke', 'work_dir': str(root / 'work'),
                                             'data_dir': str(root / 'data')})
    page = browser.new_page(viewport={'width': 1280, 'height': 900})
    _open_and_run_all(page, url, name)
    _wait_idle_after_run(page, 120_000)
    nb = page.locator('.jp-NotebookPanel:visible')
    errors = nb.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]:has-text("Traceback")')
    assert errors.count() == 0
    nb.locator('.widget-toggle-buttons').first.wait_for(timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / 'browser_00_setup.png'), full_page=False)
    page.close()
