"""Interruptions (SIGKILL) and end-to-end reproducibility on the smoke pipeline.

A stage is run in a child process, killed with SIGKILL at a chosen point, and
run again to completion; its outputs must be byte-identical to those of an
uninterrupted run, and no partial or corrupt file may remain.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from deepssm_nb import get_profile, save_config
from deepssm_nb.io import read_particles
from deepssm_nb.pipeline import ensure

pytestmark = pytest.mark.slow

CHILD = """
import sys
from deepssm_nb import load_config
from deepssm_nb.pipeline import ensure
ensure(load_config(sys.argv[1]), sys.argv[2], verbose=False)
"""


def _cfg(root: Path, data_dir: Path, **train):
    cfg = get_profile('smoke', work_dir=str(root))
    cfg.data.data_dir = str(data_dir)
    cfg.augment.num_samples = 200
    cfg.augment.processes = 1
    cfg.deepssm.trainer.epochs = train.get('epochs', 4)
    cfg.deepssm.fine_tune.epochs = train.get('ft_epochs', 2)
    return cfg


def _digest(folder: Path, patterns: tuple[str, ...], work_dir: str | None = None) -> dict[str, str]:
    """sha256 of every file; in CSV/JSON files the work folder's own path is replaced by a placeholder."""
    out = {}
    for pattern in patterns:
        for p in sorted(folder.glob(pattern)):
            if p.is_file():
                data = p.read_bytes()
                if work_dir and p.suffix in ('.csv', '.json'):
                    data = data.replace(str(Path(work_dir).resolve()).encode(), b'<work>')
                    data = data.replace(str(work_dir).encode(), b'<work>')
                if p.suffix == '.json':  # the freshness record stamps input locations and times: not content
                    obj = json.loads(data)
                    obj.pop('record', None)
                    data = json.dumps(obj, sort_keys=True).encode()
                out[str(p.relative_to(folder))] = hashlib.sha256(data).hexdigest()
    return out


def _state_digest(path: Path) -> str:
    state = torch.load(path, map_location='cpu', weights_only=True)['state_dict']
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _no_temp_files(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob('*') if p.is_file() and '.tmp' in p.name]


def _run_and_kill(cfg_path: Path, stage: str, ready, timeout: float = 240.0) -> bool:
    """Start ``ensure(cfg, stage)`` in a child; SIGKILL it once ``ready()`` is true. Returns whether it was killed."""
    # the same thread count as this process: CPU reductions depend on it, and results are compared bitwise
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), PYTHONUNBUFFERED='1')
    proc = subprocess.Popen(
        [sys.executable, '-c', CHILD, str(cfg_path), stage],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    t0 = time.perf_counter()
    try:
        while proc.poll() is None and time.perf_counter() - t0 < timeout:
            if ready():
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                return True
            time.sleep(0.02)
        err = proc.stderr.read() if proc.stderr else ''
        assert proc.returncode == 0, f'child failed before the kill point:\n{err[-2000:]}'
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope='module')
def reference_run(smoke_cohort, tmp_path_factory):
    """An uninterrupted smoke pipeline up to prediction, with the digests of every stage's outputs."""
    root = tmp_path_factory.mktemp('reference')
    cfg = _cfg(root / 'work', smoke_cohort.root.parent)
    ensure(cfg, 'predict', verbose=False)
    paths = cfg.resolved_paths()
    return {
        'cfg': cfg,
        'aug': _digest(paths['aug_dir'], ('TotalData.csv', 'augmentation.json', 'Generated-*/*'), cfg.work_dir),
        'model': _state_digest(paths['model_dir'] / 'final_model.torch'),
        'model_ft': _state_digest(paths['model_dir'] / 'final_model_ft.torch'),
        'pred': _digest(paths['pred_dir'], ('local_predictions/*', 'world_predictions/*')),
    }


def _fresh_copy_until(reference, tmp_path: Path, stage_dirs: tuple[str, ...]):
    """A new work folder holding a copy of the reference's outputs of the stages in ``stage_dirs``."""
    cfg = _cfg(tmp_path / 'work', Path(reference['cfg'].data.data_dir))
    src, dst = reference['cfg'].resolved_paths(), cfg.resolved_paths()
    for key in stage_dirs:
        shutil.copytree(src[key], dst[key])
    cfg_path = save_config(cfg, tmp_path / 'cfg.json')
    return cfg, cfg_path


@pytest.mark.parametrize('kill_after', [10, 90])
def test_augmentation_killed_and_rerun_gives_identical_files(reference_run, tmp_path, kill_after):
    cfg, cfg_path = _fresh_copy_until(reference_run, tmp_path, ('groom_dir',))
    images = cfg.resolved_paths()['aug_dir'] / 'Generated-Images'
    killed = _run_and_kill(
        cfg_path, 'augment', lambda: images.is_dir() and len(list(images.glob('*.nrrd'))) >= kill_after
    )
    assert killed, 'the augmentation finished before it could be interrupted'
    done_before = len(list(images.glob('*.nrrd')))
    assert done_before < cfg.augment.num_samples
    ensure(cfg, 'augment', verbose=False)
    aug = cfg.resolved_paths()['aug_dir']
    assert _no_temp_files(aug) == []
    assert _digest(aug, ('TotalData.csv', 'augmentation.json', 'Generated-*/*'), cfg.work_dir) == reference_run['aug']


@pytest.mark.parametrize('point', ['base_epoch_2', 'fine_tune'])
def test_training_killed_and_rerun_gives_identical_weights(reference_run, tmp_path, point):
    cfg, cfg_path = _fresh_copy_until(reference_run, tmp_path, ('groom_dir', 'aug_dir', 'loader_dir'))
    model_dir = cfg.resolved_paths()['model_dir']
    log = model_dir / 'train_log.csv'

    def ready():
        if not log.is_file():
            return False
        rows = log.read_text().splitlines()[1:]
        if point == 'base_epoch_2':
            return sum(r.startswith('base,') for r in rows) >= 2
        return any(r.startswith('fine_tune,') for r in rows)

    assert _run_and_kill(cfg_path, 'train', ready), 'training finished before it could be interrupted'
    assert not (model_dir / 'final_model_ft.torch').exists()
    ensure(cfg, 'train', verbose=False)
    assert _no_temp_files(model_dir) == []
    assert _state_digest(model_dir / 'final_model.torch') == reference_run['model']
    assert _state_digest(model_dir / 'final_model_ft.torch') == reference_run['model_ft']
    rows = log.read_text().splitlines()
    assert len(rows) == 1 + cfg.deepssm.trainer.epochs + cfg.deepssm.fine_tune.epochs


def test_fine_tuning_in_a_new_process_after_the_base_stage_repeats_the_uninterrupted_run(reference_run, tmp_path):
    """A run stopped between the stages: fine tuning starts from its own seed, not from where shuffling stopped."""
    cfg, _ = _fresh_copy_until(reference_run, tmp_path, ('groom_dir', 'aug_dir', 'loader_dir', 'model_dir'))
    model_dir = cfg.resolved_paths()['model_dir']
    for pattern in ('*_ft.*', 'calibration.json'):
        for f in model_dir.glob(pattern):
            f.unlink()
    ensure(cfg, 'train', verbose=False)
    assert _state_digest(model_dir / 'final_model.torch') == reference_run['model']
    assert _state_digest(model_dir / 'final_model_ft.torch') == reference_run['model_ft']


def test_same_seed_gives_identical_augmentation_weights_and_predictions(reference_run, tmp_path):
    """A second run from the same cohort reproduces every byte (CPU, fixed seed)."""
    cfg = _cfg(tmp_path / 'work', Path(reference_run['cfg'].data.data_dir))
    ensure(cfg, 'predict', verbose=False)
    paths = cfg.resolved_paths()
    assert (
        _digest(paths['aug_dir'], ('TotalData.csv', 'augmentation.json', 'Generated-*/*'), cfg.work_dir)
        == reference_run['aug']
    )
    assert _state_digest(paths['model_dir'] / 'final_model_ft.torch') == reference_run['model_ft']
    assert _digest(paths['pred_dir'], ('local_predictions/*', 'world_predictions/*')) == reference_run['pred']
    first = min((paths['pred_dir'] / 'local_predictions').glob('*.particles'))
    assert np.isfinite(read_particles(first)).all()
