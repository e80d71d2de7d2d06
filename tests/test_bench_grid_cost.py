"""The grid-cost benchmark's input shapes: the same field of view at each spacing."""

from __future__ import annotations

import numpy as np
import pytest
from bench_modules import load_bench


@pytest.fixture(scope='module')
def bench():
    return load_bench('grid_cost')


def test_the_reference_spacing_keeps_the_workshop_shape(bench):
    assert bench.shape_at(2.0) == (72, 51, 56)


def test_a_finer_grid_covers_the_same_field_of_view(bench):
    shape = bench.shape_at(1.5)
    assert shape == (96, 68, 75)
    extent_2mm, extent = np.array((72, 51, 56)) * 2.0, np.array(shape) * 1.5
    assert np.all(np.abs(extent - extent_2mm) <= 0.75)  # within half a voxel of the finer grid
    assert np.prod(shape) / np.prod((72, 51, 56)) == pytest.approx((2.0 / 1.5) ** 3, rel=0.01)


@pytest.mark.parametrize('spacing', [0.0, -1.5])
def test_a_spacing_that_is_not_positive_is_refused(bench, spacing):
    with pytest.raises(ValueError, match='spacing must be positive'):
        bench.shape_at(spacing)
