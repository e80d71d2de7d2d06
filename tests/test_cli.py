"""Tests of the command line (``python -m deepssm_nb``), run as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from deepssm_nb import load_config
from deepssm_nb.cli import build_parser, main


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, '-m', 'deepssm_nb', *args], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


def test_help_lists_the_subcommands():
    res = _cli('--help')
    assert res.returncode == 0
    for word in ('run', 'train', 'predict', 'write-config'):
        assert word in res.stdout
    sub = _cli('run', '--help')
    assert sub.returncode == 0 and '--until' in sub.stdout and 'loaders' in sub.stdout


def test_write_config_round_trips(tmp_path):
    out = tmp_path / 'cfg.json'
    res = _cli('write-config', '--profile', 'smoke', '--work-dir', str(tmp_path / 'w'), '-o', str(out))
    assert res.returncode == 0, res.stderr
    cfg = load_config(out)
    assert cfg.profile == 'smoke' and cfg.work_dir == str(tmp_path / 'w')
    printed = _cli('write-config', '--profile', 'full')
    assert printed.returncode == 0 and json.loads(printed.stdout)['profile'] == 'full'


@pytest.mark.bad_input
def test_bad_config_gives_one_line_error_and_exit_status_2(tmp_path):
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps({'loader': {'batch_sise': 4, 'down_factor': 1.5}}))
    res = _cli('run', '--config', str(bad), '--until', 'cohort')
    assert res.returncode == 2
    assert 'Traceback' not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('deepssm-nb: error:')
    assert "Did you mean 'batch_size'" in lines[0] and 'down_factor' in lines[0]


@pytest.mark.bad_input
def test_missing_files_give_exit_status_1(tmp_path, capsys):
    assert main(['run', '--config', str(tmp_path / 'nope.json')]) == 1
    assert 'nope.json' in capsys.readouterr().err
    (tmp_path / 'broken.json').write_text('{"seed": ')
    assert main(['train', '--config', str(tmp_path / 'broken.json')]) == 2
    assert main(['predict', str(tmp_path / 'scan.nrrd'), '--profile', 'smoke', '--work-dir', str(tmp_path)]) == 1
    assert 'scan.nrrd' in capsys.readouterr().err


@pytest.mark.bad_input
def test_unknown_stage_is_refused_by_argparse():
    with pytest.raises(SystemExit) as err:
        build_parser().parse_args(['run', '--until', 'trian'])
    assert err.value.code == 2


def test_predict_takes_a_side():
    args = build_parser().parse_args(['predict', 'scan.nrrd', '--side', 'R'])
    assert args.side == 'R'
    assert build_parser().parse_args(['predict', 'scan.nrrd']).side is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(['predict', 'scan.nrrd', '--side', 'right'])
