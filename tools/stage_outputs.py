"""Fingerprint every stage's data outputs of one smoke-profile run, to prove a restructuring changed no behaviour.

Runs the ``smoke`` profile through ``analyze`` in a fresh work folder and writes one SHA-256 per data file:
the groomed images and particles, the augmentation samples and their table, the loader arrays, the model weights and
checkpoints (tensor bytes, so the container's layout does not count) and the predicted particles. Timings, dates and absolute
paths are not data, so the JSON records of each stage are left out.

Usage::

    python tools/stage_outputs.py --work-dir /tmp/smoke_before --output before.json
    python tools/stage_outputs.py --work-dir /tmp/smoke_after --output after.json --compare before.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

DATA_SUFFIXES = ('.nrrd', '.nii.gz', '.mha', '.particles', '.npy', '.csv', '.vtk', '.ply')
SKIP_NAMES = ('train_log.csv',)  # holds wall-clock seconds per epoch


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tensor_digest(path: Path) -> str:
    import torch

    obj = torch.load(path, map_location='cpu', weights_only=False)
    h = hashlib.sha256()

    def visit(prefix: str, value) -> None:
        if isinstance(value, torch.Tensor):
            h.update(prefix.encode())
            h.update(value.detach().contiguous().numpy().tobytes())
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                visit(f'{prefix}/{key}', value[key])
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                visit(f'{prefix}/{i}', item)

    visit('', obj)
    return h.hexdigest()


def fingerprint(work: Path) -> dict[str, str]:
    """SHA-256 of every data file under ``work``, keyed by its path relative to ``work``."""
    out: dict[str, str] = {}
    for path in sorted(work.rglob('*')):
        if not path.is_file() or path.name in SKIP_NAMES:
            continue
        rel = path.relative_to(work).as_posix()
        if path.suffix in ('.pt', '.pth', '.torch'):
            out[rel] = _tensor_digest(path)
        elif path.suffix == '.csv':  # tables name files by absolute path: compare them relative to the work folder
            out[rel] = _sha(path.read_bytes().replace(str(work.resolve()).encode(), b'<work>'))
        elif path.name.endswith(DATA_SUFFIXES):
            out[rel] = _sha(path.read_bytes())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work-dir', required=True, type=Path)
    parser.add_argument('--data-dir', type=Path, default=None)
    parser.add_argument('--output', required=True, type=Path)
    parser.add_argument('--compare', type=Path, default=None, help='an earlier output of this tool')
    args = parser.parse_args(argv)

    from deepssm_nb import get_profile, run_pipeline

    cfg = get_profile('smoke', work_dir=str(args.work_dir))
    if args.data_dir:
        cfg.data.data_dir = str(args.data_dir)
    run_pipeline(cfg, until='analyze')
    prints = fingerprint(args.work_dir)
    args.output.write_text(json.dumps(prints, indent=1, sort_keys=True) + '\n')
    print(f'{len(prints)} data files fingerprinted -> {args.output}')
    if args.compare is None:
        return 0
    before = json.loads(args.compare.read_text())
    changed = sorted(k for k in before.keys() & prints.keys() if before[k] != prints[k])
    missing = sorted(before.keys() - prints.keys())
    added = sorted(prints.keys() - before.keys())
    for label, names in (('changed', changed), ('missing', missing), ('new', added)):
        for name in names:
            print(f'{label}: {name}')
    same = not (changed or missing or added)
    print('identical' if same else f'{len(changed)} changed, {len(missing)} missing, {len(added)} new')
    return 0 if same else 1


if __name__ == '__main__':
    sys.exit(main())
