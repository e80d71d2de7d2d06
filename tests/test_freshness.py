"""StageRecord: the one freshness record of every stage."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from deepssm_nb.freshness import StageRecord, file_stamp


def test_a_record_matches_until_a_parameter_or_an_input_file_changes(tmp_path):
    a, b = tmp_path / 'a.csv', tmp_path / 'b.nrrd'
    a.write_text('1\n')
    b.write_text('x')
    rec = StageRecord.of({'seed': 0, 'factor': np.float64(0.5), 'shape': (2, 3)}, {'csv': a, 'images': [a, b]})
    assert rec.parameters == {'seed': 0, 'factor': 0.5, 'shape': [2, 3]}  # JSON-ready
    path = tmp_path / 'stage.json'
    path.write_text(json.dumps({'record': rec.to_dict(), 'other': 1}))
    back = StageRecord.read(path)
    assert rec.matches(back) and back.differences(rec) == []
    assert StageRecord.of({'seed': 1, 'factor': 0.5, 'shape': [2, 3]}, {'csv': a, 'images': [a, b]}).differences(
        back
    ) == ['parameters.seed: 0 -> 1']
    st = a.stat()
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same bytes, touched
    now = StageRecord.of({'seed': 0, 'factor': 0.5, 'shape': [2, 3]}, {'csv': a, 'images': [a, b]})
    assert now.differences(back) == ['inputs.csv: changed', 'inputs.images: changed']
    b.unlink()
    assert StageRecord.of(rec.parameters, {'csv': a}).differences(back) == [
        'inputs.csv: changed',
        'inputs.images: gone',
    ]
    assert not rec.matches(None) and rec.differences(None) == ['no earlier record']


def test_relative_stamps_survive_moving_the_folder(tmp_path):
    (tmp_path / 'one').mkdir()
    f = tmp_path / 'one' / 'best_model.torch'
    f.write_bytes(b'123')
    rec = StageRecord.of({}, {'model': f}, relative=True)
    assert rec.inputs['model'][0] == 'best_model.torch' and rec.inputs['model'][1] == 3
    moved = tmp_path / 'two'
    (tmp_path / 'one').rename(moved)
    assert StageRecord.of({}, {'model': moved / 'best_model.torch'}, relative=True).matches(rec)
    assert file_stamp(tmp_path / 'missing') is None and file_stamp(None) is None


@pytest.mark.bad_input
def test_a_broken_or_older_record_is_no_record(tmp_path):
    path = tmp_path / 'stage.json'
    assert StageRecord.read(path) is None  # no file
    path.write_text('{"record": ')
    assert StageRecord.read(path) is None  # broken JSON
    path.write_text(json.dumps({'csv': [str(path), 1, 2], 'seed': 0}))  # a stamp of an earlier version
    assert StageRecord.read(path) is None
    with pytest.raises(TypeError, match='an input must be a path, a list of paths or None; got int'):
        StageRecord.of({}, {'csv': 3})
