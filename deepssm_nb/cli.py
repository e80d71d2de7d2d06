"""Command line: run the DeepSSM pipeline headless from a config file.

Examples::

    python -m deepssm_nb write-config --profile workshop -o cfg.json
    python -m deepssm_nb run --config cfg.json --until loaders
    python -m deepssm_nb train --config cfg.json
    python -m deepssm_nb predict scan1.nrrd scan2.nrrd --config cfg.json

Bad configurations and missing or malformed data end with a one-line
``error:`` message and a non-zero exit status (2 for the configuration,
1 for data), not a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .pipeline import STAGES

__all__ = ['build_parser', 'main']


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m deepssm_nb`` (also the ``deepssm-nb`` script)."""
    parser = argparse.ArgumentParser(
        prog='deepssm-nb',
        description='DeepSSM: statistical shape models predicted from 3D images. Runs the '
        'pipeline (cohort, groom, augment, loaders, train, predict, analyze) headless from a config JSON.',
        epilog='Write a starting config with "write-config", edit it, then "run --config FILE".',
    )
    sub = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        g = p.add_mutually_exclusive_group()
        g.add_argument('--config', '-c', metavar='FILE', help='config JSON (from write-config or save_config)')
        g.add_argument(
            '--profile',
            choices=('smoke', 'workshop', 'full'),
            help='use a preset instead of a config file (default: workshop)',
        )
        p.add_argument('--work-dir', metavar='DIR', help="override the config's work_dir (all outputs go there)")

    run = sub.add_parser(
        'run',
        help='run the pipeline up to a stage, skipping finished stages',
        description='Run every stage up to --until whose outputs are missing.',
    )
    with_config(run)
    run.add_argument('--until', choices=STAGES, default='analyze', help='last stage to run (default: analyze)')

    train = sub.add_parser('train', help='run the pipeline up to training (same as run --until train)')
    with_config(train)

    pred = sub.add_parser(
        'predict',
        help='predict the particles of new image files with a trained model',
        description='Register each image to the reference image, predict its particles and '
        "write <stem>.particles in the image's own frame (and, for a stochastic model, <stem>.std with each "
        "particle's uncertainty, and the mean uncertainty and the uncertain flag on the screen).",
    )
    pred.add_argument('images', nargs='+', metavar='IMAGE', help='image files (.nrrd, .nii.gz, ...)')
    with_config(pred)
    pred.add_argument('--out-dir', '-o', metavar='DIR', help='output folder (default: pred_dir/new_predictions)')
    pred.add_argument(
        '--side',
        choices=('L', 'R'),
        help='side of every image (default: from _L/_R in the file '
        'names); an image of the other side than the training reference is reflected and back',
    )

    write = sub.add_parser(
        'write-config',
        help='write a preset config JSON to edit',
        description='Write the config of a profile (to stdout without -o).',
    )
    write.add_argument(
        '--profile', choices=('smoke', 'workshop', 'full'), default='workshop', help='preset (default: workshop)'
    )
    write.add_argument('--work-dir', metavar='DIR', help='work_dir written into the config')
    write.add_argument('--output', '-o', metavar='FILE', help='file to write (default: print to stdout)')
    return parser


def _config(args: argparse.Namespace):
    from .config import get_profile, load_config

    cfg = load_config(args.config) if args.config else get_profile(args.profile or 'workshop')
    if args.work_dir:
        cfg.work_dir = args.work_dir
    return cfg.validate()


def _run(args: argparse.Namespace) -> int:
    if args.command == 'write-config':
        import json

        from .config import get_profile, save_config

        cfg = get_profile(args.profile, **({'work_dir': args.work_dir} if args.work_dir else {}))
        if args.output:
            print(f'Wrote {save_config(cfg, args.output)}')
        else:
            print(json.dumps(cfg.to_dict(), indent=2))
        return 0
    cfg = _config(args)
    if args.command in ('run', 'train'):
        from .pipeline import run_pipeline

        run_pipeline(cfg, until=args.until if args.command == 'run' else 'train')
        return 0
    from .predict import predict_image

    for image in args.images:
        predict_image(image, cfg, out_dir=args.out_dir, side=args.side)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status.

    Returns:
        0 on success, 2 for a bad configuration, 1 for missing or bad data,
        130 when interrupted.
    """
    from ._validation import ConfigError, DataError

    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except ConfigError as e:
        print(f'deepssm-nb: error: {"; ".join(e.problems)}', file=sys.stderr)
        return 2
    except (DataError, FileNotFoundError) as e:
        msg = '; '.join(e.problems) if isinstance(e, DataError) else str(e)
        print(f'deepssm-nb: error: {msg}', file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. piped into `head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print('deepssm-nb: interrupted', file=sys.stderr)
        return 130
