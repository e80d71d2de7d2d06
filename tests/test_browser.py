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
FLAGS = [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--enable-unsafe-swiftshader',
]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(sync_playwright is None, reason='the playwright package is not installed'),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Debian's chromium is not installed (make test installs it where it runs as root)",
    ),
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
    for var, sub in (
        ('JUPYTER_CONFIG_DIR', 'cfg'),
        ('JUPYTER_DATA_DIR', 'data'),
        ('JUPYTER_RUNTIME_DIR', 'rt'),
        ('IPYTHONDIR', 'ipy'),
        ('MPLCONFIGDIR', 'mpl'),
    ):
        env[var] = str(home / sub)
    user_settings = home / 'lab-user-settings'
    env['JUPYTERLAB_SETTINGS_DIR'] = str(user_settings)
    notif = user_settings / '@jupyterlab' / 'apputils-extension' / 'notification.jupyterlab-settings'
    notif.parent.mkdir(parents=True)
    notif.write_text(json.dumps({'checkForUpdates': False, 'fetchNews': 'false'}))
    env.pop('PYVISTA_JUPYTER_BACKEND', None)  # a live front-end: let the viewer pick the interactive backend
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            '-m',
            'jupyterlab',
            '--no-browser',
            '--ip=127.0.0.1',
            f'--port={port}',
            f'--ServerApp.token={TOKEN}',
            f'--ServerApp.root_dir={root}',
            '--allow-root',
            f'--LabApp.workspaces_dir={home / "ws"}',
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
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

    from deepssm_nb.nbrun import inject_parameters

    nb = nbformat.read(str(ROOT / 'notebooks' / notebook), as_version=4)
    inject_parameters(nb, overrides)
    nbformat.write(nb, str(folder / notebook))
    return notebook


def _open_and_run_all(page, url: str, name: str) -> object:
    page.goto(f'{url}/lab/tree/{name}?reset&token={TOKEN}')
    nb = page.locator('.jp-NotebookPanel:visible')
    nb.locator('.jp-CodeCell').first.wait_for(timeout=90_000)
    page.wait_for_function(
        "() => /\\|\\s*Idle/.test(document.querySelector('.jp-StatusBar-Widget')?.innerText || '')", timeout=90_000
    )
    page.locator('.lm-MenuBar-itemLabel', has_text='Run').first.click()
    page.locator('.lm-Menu-itemLabel:text-is("Run All Cells")').first.click()
    return nb


def _wait_idle_after_run(page, timeout_ms: int) -> None:
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-InputPrompt')]"
        ".every(e => !e.innerText.includes('*'))",
        timeout=timeout_ms,
    )


def _run_in_lab(browser, lab, notebook: str, overrides: dict, *, timeout_ms: int, height: int = 1000):
    """Open ``notebook`` (with ``overrides``) in JupyterLab, run all cells, wait, and check no cell raised.

    Returns:
        ``(page, notebook panel locator)``.
    """
    url, root = lab
    name = _prepare(notebook, root, overrides)
    page = browser.new_page(viewport={'width': 1280, 'height': height})
    _open_and_run_all(page, url, name)
    _wait_idle_after_run(page, timeout_ms)
    nb = page.locator('.jp-NotebookPanel:visible')
    tracebacks = nb.locator('.jp-OutputArea-output:has-text("Traceback")')
    assert tracebacks.count() == 0, tracebacks.first.text_content()[-3000:]
    return page, nb


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
    root = lab[1]
    page, nb = _run_in_lab(
        browser,
        lab,
        '00_setup.ipynb',
        {'profile': 'smoke', 'work_dir': str(root / 'work'), 'data_dir': str(root / 'data')},
        timeout_ms=120_000,
        height=900,
    )
    nb.locator('.widget-toggle-buttons').first.wait_for(timeout=60_000)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / 'browser_00_setup.png'), full_page=False)
    page.close()


@pytest.fixture(scope='module')
def smoke_folders(lab, smoke_cohort):
    """Work and data folders for the notebooks: the session's smoke cohort, prepared pipeline up to prediction."""
    from deepssm_nb import get_profile
    from deepssm_nb.pipeline import ensure

    _, root = lab
    cfg = get_profile('smoke', work_dir=str(root / 'work'))
    cfg.data.data_dir = str(smoke_cohort.root.parent)
    ensure(cfg, 'predict', verbose=False)
    return {'profile': 'smoke', 'work_dir': cfg.work_dir, 'data_dir': cfg.data.data_dir}


def _viewer_image_src(nb) -> str:
    img = (
        nb.locator('.widget-slider')
        .first.locator('xpath=ancestor::div[contains(@class,"widget-vbox")][1]')
        .locator('.jp-OutputArea-output img')
        .first
    )
    img.wait_for(timeout=60_000)
    return img.get_attribute('src') or ''


def test_femur_data_slice_slider_changes_the_image(lab, browser, smoke_folders):
    page, nb = _run_in_lab(browser, lab, '01_femur_data.ipynb', smoke_folders, timeout_ms=240_000)
    slider = nb.locator('.widget-slider').first
    slider.scroll_into_view_if_needed()
    before = _viewer_image_src(nb)
    readout = slider.locator('.widget-readout').first.text_content().strip()
    handle = slider.locator('.noUi-handle').first
    handle.focus()
    for _ in range(8):
        page.keyboard.press('ArrowRight')
    page.wait_for_function(
        '([sel, old]) => { const s = document.querySelector(sel); return s && s.textContent.trim() !== old; }',
        arg=['.jp-NotebookPanel:not(.lm-mod-hidden) .widget-slider .widget-readout', readout],
        timeout=30_000,
    )
    page.wait_for_timeout(500)
    deadline = time.time() + 30
    after = before
    while time.time() < deadline and after == before:
        page.wait_for_timeout(300)
        after = _viewer_image_src(nb)
    ARTIFACTS.mkdir(exist_ok=True)
    slider.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / 'browser_01_slice_viewer.png'))
    assert after != before, 'moving the slice slider did not change the image'
    page.close()


def test_analysis_notebook_draws_the_3d_view(lab, browser, smoke_folders):
    page, nb = _run_in_lab(browser, lab, '08_analyze_results.ipynb', smoke_folders, timeout_ms=300_000)
    views = nb.locator('.jp-OutputArea-output iframe, .jp-OutputArea-output img')
    views.first.wait_for(timeout=120_000)
    target = nb.locator('.jp-OutputArea-output iframe').first
    if target.count():  # interactive (trame): wait for the remote view's canvas to show pixels
        target.scroll_into_view_if_needed()
        frame = target.content_frame
        frame.locator('canvas, img').first.wait_for(timeout=120_000)
        page.wait_for_timeout(3000)
    else:
        target = nb.locator('.jp-OutputArea-output img').first
        target.scroll_into_view_if_needed()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / 'browser_08_analysis.png'))
    shot = target.screenshot(path=str(ARTIFACTS / 'browser_08_view.png'))
    assert _png_std(shot) > 10.0, '3D view is blank'
    page.close()
