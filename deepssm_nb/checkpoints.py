"""Files of a training run: the CSV log, checkpoints and the random states they hold (model files: :mod:`.model_files`)."""

from __future__ import annotations

import csv
import io
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._validation import ConfigError, DataError
from .freshness import StageRecord
from .io import atomic_path, atomic_write_text, plain

__all__ = [
    'LOG_COLUMNS',
    'check_fingerprint',
    'fingerprint_diffs',
    'get_rng',
    'load_checkpoint',
    'read_train_log',
    'save_checkpoint',
    'set_rng',
    'write_log',
]

LOG_COLUMNS = ('stage', 'epoch', 'train_loss', 'train_rmse_mm', 'val_rmse_mm', 'lr', 'seconds')
CKPT_FORMAT = 1


def read_train_log(path: str | Path) -> list[dict[str, Any]]:
    """Read ``train_log.csv``; empty cells (epochs without validation) become NaN."""
    path = Path(path)
    if path.is_dir():
        path = path / 'train_log.csv'
    if not path.is_file():
        raise FileNotFoundError(f'Training log not found: "{path}"')
    rows = []
    for r in csv.DictReader(io.StringIO(path.read_text())):
        rows.append(
            {
                k: (
                    r[k]
                    if k == 'stage'
                    else int(r[k])
                    if k == 'epoch'
                    else float(r[k])
                    if r[k] not in ('', None)
                    else math.nan
                )
                for k in LOG_COLUMNS
            }
        )
    return rows


def write_log(path: Path, stage: str, rows: list[dict[str, Any]]) -> None:
    others = [r for r in read_train_log(path) if r['stage'] != stage] if path.is_file() else []
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator='\n')
    w.writeheader()
    for r in others + rows:
        w.writerow({k: ('' if isinstance(r[k], float) and math.isnan(r[k]) else r[k]) for k in LOG_COLUMNS})
    atomic_write_text(path, buf.getvalue())


# --------------------------------------------------------------------------- random states


def loader_generators(loader: Any) -> list[torch.Generator]:
    found: list[torch.Generator] = []
    for obj in (
        loader,
        getattr(loader, 'sampler', None),
        getattr(getattr(loader, 'batch_sampler', None), 'sampler', None),
    ):
        g = getattr(obj, 'generator', None)
        if isinstance(g, torch.Generator) and all(g is not f for f in found):
            found.append(g)
    return found


def get_rng(loader: Any) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss = random.getstate()
    return {
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        'numpy': [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        'python': [version, list(state), gauss],
        'generators': [g.get_state() for g in loader_generators(loader)],
    }


def set_rng(rng: dict[str, Any], loader: Any) -> None:
    torch.set_rng_state(rng['torch'])
    if rng['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng['cuda'])
    name, keys, pos, has_gauss, cached = rng['numpy']
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, state, gauss = rng['python']
    random.setstate((version, tuple(state), gauss))
    gens = loader_generators(loader)
    if len(gens) != len(rng['generators']):
        raise DataError(
            'The training loader does not match the one in the checkpoint '
            f'({len(gens)} random generators instead of {len(rng["generators"])}).'
        )
    for g, s in zip(gens, rng['generators']):
        g.set_state(s)


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path, net, optimizer, scheduler, scaler, state, fingerprint, loader) -> None:
    ckpt = {
        'format': CKPT_FORMAT,
        'fingerprint': fingerprint,
        'model_kwargs': plain(net.model_kwargs),
        'model': net.state_dict(),
        'optimizer': optimizer.state_dict(),
        'scheduler': scheduler.state_dict(),
        'scaler': scaler.state_dict() if scaler is not None else None,
        'state': state,
        'rng': get_rng(loader),
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`run_stage` (on the CPU)."""
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise DataError(
            f'Checkpoint "{path}" cannot be read ({type(e).__name__}: {e}). Delete it or pass restart=True.'
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get('format') != CKPT_FORMAT:
        raise DataError(f'"{path}" is not a checkpoint of this version. Delete it or pass restart=True.')
    return ckpt


# fingerprint keys added after checkpoints were first written, with the value that those checkpoints had
_ADDED_KEYS = {'encoder': {'channels': [12, 24, 48, 96, 192], 'dropout': 0.0, 'input_margin_mm': 0.0}}


def fingerprint_diffs(old: dict, new: dict) -> list[str]:
    """``'key: old -> new'`` for each setting of ``new`` that ``old`` has otherwise.

    The settings are the parameters of a :class:`~deepssm_nb.freshness.StageRecord` (a checkpoint's inputs are its
    own files); keys added later count at the value earlier checkpoints were written with, and keys that only
    ``old`` has are not compared.
    """
    earlier = {k: old.get(k, _ADDED_KEYS.get(k)) for k in new}
    lines = StageRecord(plain(new), {}).differences(StageRecord(plain(earlier), {}))
    return [line.removeprefix('parameters.') for line in lines]


def check_fingerprint(ckpt: dict, fingerprint: dict, model_kwargs: dict, path: Path) -> None:
    diffs = fingerprint_diffs(ckpt['fingerprint'], fingerprint)
    if ckpt['model_kwargs'] != plain(model_kwargs):
        diffs.append(f'model: {ckpt["model_kwargs"]} -> {plain(model_kwargs)}')
    if diffs:
        raise ConfigError(
            f'"{path}" was written with other settings ({"; ".join(diffs)}). '
            'Pass restart=True to train from scratch, or choose another model_name.'
        )
