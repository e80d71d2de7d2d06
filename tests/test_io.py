"""Particle and image I/O, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from deepssm_nb import DataError, read_image, read_particles, write_image, write_particles
from deepssm_nb.io import atomic_path


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float64, st.tuples(st.integers(1, 40), st.just(3)), elements=st.floats(-1e4, 1e4, allow_nan=False, width=64)
    )
)
def test_particles_round_trip(tmp_path_factory, arr):
    path = tmp_path_factory.mktemp('p') / 'a.particles'
    write_particles(path, arr)
    back = read_particles(path, num_particles=len(arr))
    np.testing.assert_allclose(back, arr, rtol=1e-8, atol=1e-9)


@pytest.mark.bad_input
@pytest.mark.parametrize(
    'text, message',
    [
        ('1 2 3\n4 5\n', r'line 2: expected 3 columns \(x y z\); got 2'),
        ('1 2 3 4\n', r'line 1: expected 3 columns \(x y z\); got 4'),
        ('1 2 a\n', r"line 1: expected numbers; got '1 2 a'"),
        ('1 2 3\nnan 0 0\n', r'particle 2 has a NaN or infinite coordinate'),
        ('1 2 inf\n', r'particle 1 has a NaN or infinite coordinate'),
        ('\n\n', r'holds no particles'),
    ],
)
def test_bad_particle_files(tmp_path, text, message):
    p = tmp_path / 'bad.particles'
    p.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        read_particles(p)
    assert 'bad.particles' in str(info.value)


@pytest.mark.bad_input
def test_particle_count_mismatch_and_missing_file(tmp_path):
    p = tmp_path / 'a.particles'
    write_particles(p, np.zeros((5, 3)))
    with pytest.raises(DataError, match=r'holds 5 particles; expected 6'):
        read_particles(p, num_particles=6)
    with pytest.raises(FileNotFoundError, match='nope.particles'):
        read_particles(tmp_path / 'nope.particles')
    with pytest.raises(DataError, match=r'must have shape \(M, 3\); got \(4, 2\)'):
        write_particles(tmp_path / 'b.particles', np.zeros((4, 2)))
    assert not (tmp_path / 'b.particles').exists()


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / 'out.txt'
    target.write_text('old')
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('half')
        raise RuntimeError('interrupted')
    assert target.read_text() == 'old'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['out.txt']


def test_image_round_trip_and_checks(tmp_path):
    arr = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.5, 1.0, 2.0))
    img.SetOrigin((10.0, -3.0, 7.5))
    write_image(tmp_path / 'a.nrrd', img)
    back = read_image(tmp_path / 'a.nrrd')
    assert back.GetSpacing() == (0.5, 1.0, 2.0) and back.GetOrigin() == (10.0, -3.0, 7.5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), arr)


@pytest.mark.bad_input
def test_bad_images(tmp_path):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 6), np.float32)), str(tmp_path / 'flat.nrrd'))
    with pytest.raises(DataError, match=r'flat\.nrrd": image must be 3D; got a 2D image'):
        read_image(tmp_path / 'flat.nrrd')
    vol = np.zeros((3, 4, 5), np.float32)
    vol[1, 1, 1] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(vol), str(tmp_path / 'nan.nrrd'))
    with pytest.raises(DataError, match=r'nan\.nrrd": image contains NaN or infinite voxels'):
        read_image(tmp_path / 'nan.nrrd')
    (tmp_path / 'junk.nrrd').write_bytes(b'NRRD0004\nthis is not an image\n')
    with pytest.raises(DataError, match=r'junk\.nrrd" could not be read as an image'):
        read_image(tmp_path / 'junk.nrrd')
    vec = sitk.GetImageFromArray(np.zeros((3, 4, 5, 2), np.float32), isVector=True)
    sitk.WriteImage(vec, str(tmp_path / 'vec.nrrd'))
    with pytest.raises(DataError, match=r'must have scalar voxels; got 2 components'):
        read_image(tmp_path / 'vec.nrrd')
    with pytest.raises(FileNotFoundError, match=r'Image file not found: ".*none\.nrrd"'):
        read_image(tmp_path / 'none.nrrd')


def test_atomic_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    mask = os.umask(0)
    os.umask(mask)
    write_particles(tmp_path / 'a.particles', np.zeros((2, 3)))
    mode = stat.S_IMODE((tmp_path / 'a.particles').stat().st_mode)
    assert mode == 0o666 & ~mask


@pytest.mark.bad_input
def test_4d_image_is_rejected(tmp_path):
    four = sitk.JoinSeries([sitk.GetImageFromArray(np.zeros((3, 4, 5), np.float32))] * 2)
    sitk.WriteImage(four, str(tmp_path / 'series.nrrd'))
    with pytest.raises(DataError, match=r'series\.nrrd": scan must be 3D; got a 4D image of size \(5, 4, 3, 2\)'):
        read_image(tmp_path / 'series.nrrd', name='scan')
