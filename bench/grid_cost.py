"""What a finer input grid costs a training step: the workshop input at 2 mm against the same field of view at 1.5 mm.

The accuracy ablation names a 1.5 mm grid as a lever ("resolution where the shape lives"). Before a proxy run is
spent on it, this benchmark measures its price on the machine at hand: the training step of
:func:`deepssm_nb.train.fit` (``bench/train_speed.py``'s speed worker, each size in its own subprocess) on synthetic
volumes of the workshop input size and of the same field of view at each finer spacing, in the chosen precision.
It writes ``bench/results/grid_cost.json`` with, per spacing, the input shape, the voxels, the samples per second,
the seconds an epoch of the workshop profile takes (its fresh samples and real training subjects) and its whole
training (base and fine-tuning epochs; validation and data loading not counted), and the ratio to 2 mm.

Usage::

    python bench/grid_cost.py                          # fp32 (the ordinary-CPU stand-in), 2 and 1.5 mm
    python bench/grid_cost.py --precision auto --spacings 2 1.75 1.5
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_speed

import deepssm_nb
from deepssm_nb.io import write_json
from deepssm_nb.loaders import split_by_subject

RESULTS = Path(__file__).resolve().parent / 'results'
BASE_SPACING = 2.0


def shape_at(spacing: float, base_shape: tuple[int, ...] = train_speed.WORKSHOP_SHAPE) -> tuple[int, ...]:
    """The input shape of the same field of view as ``base_shape`` (at 2 mm) on a grid of ``spacing`` mm."""
    if spacing <= 0:
        raise ValueError(f'spacing must be positive; got {spacing}.')
    return tuple(round(n * BASE_SPACING / spacing) for n in base_shape)


def _speed(shape: tuple[int, ...], precision: str, iters: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(train_speed.__file__)),
        '--worker',
        'speed',
        '--shape',
        ','.join(map(str, shape)),
        '--variant',
        precision,
        '--iters',
        str(iters),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f'speed worker failed for shape {shape}:\n{out.stderr[-2000:]}')
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--spacings', type=float, nargs='+', default=[2.0, 1.5])
    parser.add_argument('--precision', default='fp32', help="a speed variant of bench/train_speed.py ('fp32', 'auto')")
    parser.add_argument('--iters', type=int, default=6)
    parser.add_argument('--note', default=None)
    parser.add_argument('--output', default=str(RESULTS / 'grid_cost.json'))
    args = parser.parse_args(argv)
    if BASE_SPACING not in args.spacings:
        parser.error(f'--spacings must include {BASE_SPACING} (the reference); got {args.spacings}.')
    cfg = deepssm_nb.get_profile('workshop')
    # An epoch of the workshop profile: its fresh samples and the real training subjects (the non-test subjects
    # less those the loaders' split puts in validation).
    subjects = [f's{i}' for i in range(cfg.data.num_subjects - cfg.data.num_test)]
    train_rows, _ = split_by_subject(subjects, cfg.loader.val_fraction, random_state=cfg.seed)
    per_epoch = cfg.augment.fresh_samples + len(train_rows)
    epochs = cfg.deepssm.trainer.epochs + (cfg.deepssm.fine_tune.epochs if cfg.deepssm.fine_tune.enabled else 0)
    rows = []
    for spacing in args.spacings:
        shape = shape_at(spacing)
        r = _speed(shape, args.precision, args.iters)
        rows.append(
            {
                'spacing_mm': spacing,
                'input_shape': list(shape),
                'voxels': int(np.prod(shape)),
                'samples_per_s': r['samples_per_s'],
                'median_step_s': r['median_step_s'],
                'precision': r['precision'],
                'threads': r.get('threads'),
            }
        )
        print(f'{spacing} mm {shape}: {r["samples_per_s"]:.2f} samples/s', flush=True)
    ref = next(r for r in rows if r['spacing_mm'] == BASE_SPACING)
    for r in rows:
        r['voxel_ratio_to_2mm'] = r['voxels'] / ref['voxels']
        r['step_cost_ratio_to_2mm'] = ref['samples_per_s'] / r['samples_per_s']
        r['epoch_s_workshop'] = per_epoch / r['samples_per_s']
        r['training_s_workshop'] = epochs * per_epoch / r['samples_per_s']
    result = {
        'what': 'training-step cost of the workshop input field of view at each grid spacing (synthetic volumes, '
        'the encoder of bench/train_speed.py)',
        'samples_per_epoch_workshop': per_epoch,
        'epochs_workshop': epochs,
        'grids': rows,
        'machine': {'python': platform.python_version(), 'platform': platform.platform()},
    }
    if args.note:
        result['note'] = args.note
    print(f'written: {write_json(args.output, result)}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
