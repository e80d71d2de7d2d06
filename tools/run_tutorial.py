"""Execute the numbered notebooks in order and print a one-screen summary.

Usage: python tools/run_tutorial.py --profile workshop --out tutorial_output

Writes ``<out>/executed/NN_*.ipynb`` (with outputs), ``<out>/summary.json`` and
``<out>/summary.txt``: seconds per notebook, peak memory (of the largest
kernel, and of everything this run started summed: kernels and their worker
processes), and the key figures read back from the pipeline's own outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--profile', default='workshop', choices=['smoke', 'workshop', 'full'])
    ap.add_argument('--out', default='tutorial_output')
    ap.add_argument('--only', nargs='*', help='notebook name prefixes to run (default: all)')
    ap.add_argument('--data-dir', default=None, help='cohort cache (default: <out>/data)')
    ap.add_argument(
        '--precision',
        choices=['fp32', 'bf16', 'fp16'],
        default=None,
        help="what precision='auto' trains in, in every notebook (sets DEEPSSM_PRECISION); fp32 stands in for a "
        'CPU without bfloat16 units',
    )
    args = ap.parse_args(argv)
    if args.precision:
        os.environ['DEEPSSM_PRECISION'] = args.precision

    from deepssm_nb import get_profile
    from deepssm_nb.nbrun import ProcessTreeMemory, execute_notebook, list_notebooks
    from deepssm_nb.pipeline import key_figures

    out = Path(args.out).resolve()
    work_dir, data_dir = out / 'work', Path(args.data_dir).resolve() if args.data_dir else out / 'data'
    overrides = {'profile': args.profile, 'work_dir': str(work_dir), 'data_dir': str(data_dir)}
    rows, t_start, failed = [], time.perf_counter(), None
    with ProcessTreeMemory() as memory:
        for nb_path in list_notebooks(ROOT / 'notebooks'):
            if args.only and not any(nb_path.stem.startswith(p) for p in args.only):
                continue
            print(f'running {nb_path.name} ...', flush=True)
            try:
                _, seconds = execute_notebook(
                    nb_path, overrides, out_path=out / 'executed' / nb_path.name, timeout=3600
                )
            except Exception as e:  # noqa: BLE001 - report which notebook failed, then stop
                reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                failed = f'{nb_path.name}: {reason}'
                rows.append((nb_path.stem, float('nan')))
                break
            rows.append((nb_path.stem, seconds))
            print(f'  {seconds:7.1f} s', flush=True)
    total = time.perf_counter() - t_start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    tree_gb = memory.peak_gb
    cfg = get_profile(args.profile, work_dir=str(work_dir))
    cfg.data.data_dir = str(data_dir)
    figures = key_figures(cfg)
    summary = {
        'profile': args.profile,
        'precision': os.environ.get('DEEPSSM_PRECISION') or 'auto',
        'notebooks': dict(rows),
        'total_s': round(total, 1),
        'peak_kernel_rss_gb': round(peak_gb, 2),
        'peak_total_rss_gb': None if tree_gb is None else round(tree_gb, 2),
        'key_figures': figures,
        'failed': failed,
    }
    (out / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    lines = [f'deepssm-nb tutorial, profile {args.profile!r}, precision {summary["precision"]!r}', '-' * 48]
    lines += [f'{name:32s} {s:8.1f} s' for name, s in rows]
    lines += ['-' * 48, f'{"total":32s} {total:8.1f} s', f'{"peak memory of one kernel":32s} {peak_gb:8.2f} GB']
    if tree_gb is not None:
        lines += [f'{"peak memory, all processes":32s} {tree_gb:8.2f} GB']
    lines += ['']
    lines += [f'{k}: {v}' for k, v in figures.items()]
    if failed:
        lines += ['', f'FAILED: {failed}']
    text = '\n'.join(lines) + '\n'
    (out / 'summary.txt').write_text(text)
    print('\n' + text)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
