"""Shared fixtures: the smoke femur cohort, built once per test session."""

from __future__ import annotations

import os
import time

import matplotlib
import pytest
from hypothesis import settings

# Property tests draw the same examples on every run (a CI failure is then reproducible); set
# HYPOTHESIS_PROFILE=explore locally to search new examples.
settings.register_profile('ci', derandomize=True, deadline=None, print_blob=True)
settings.register_profile('explore', deadline=None, print_blob=True)
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'ci'))

matplotlib.use('agg')  # this process only: notebook kernels started by tests keep their own backend


@pytest.fixture(scope='session')
def _smoke_cohort_build(tmp_path_factory):
    from deepssm_nb.data import build_femur_cohort

    t0 = time.perf_counter()
    cohort = build_femur_cohort(
        num_subjects=10,
        num_particles=128,
        spacing=2.0,
        num_test=2,
        seed=0,
        data_dir=tmp_path_factory.mktemp('smoke_data'),
        progress=False,
    )
    return cohort, time.perf_counter() - t0


@pytest.fixture(scope='session')
def smoke_cohort(_smoke_cohort_build):
    """The smoke femur cohort (10 subjects, 128 particles, 2 mm; 8 train, 2 test) in a temporary data folder."""
    return _smoke_cohort_build[0]


@pytest.fixture(scope='session')
def smoke_cohort_seconds(_smoke_cohort_build):
    """Seconds it took to build the smoke cohort from scratch (imports of the builder's modules included)."""
    return _smoke_cohort_build[1]


@pytest.fixture(scope='module')
def one_torch_thread():
    """Tiny volumes gain nothing from threads, and spinning threads slow them down on a busy machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
