"""Device selection never exits; a missing GPU is a clear error only when requested."""

from __future__ import annotations

import pytest
import torch

from deepssm_nb import ConfigError, get_device
from deepssm_nb.device import cuda_usable


def test_cpu_is_always_available():
    assert get_device('cpu') == torch.device('cpu')


@pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU is present')
def test_auto_falls_back_to_cpu_with_a_warning_once(monkeypatch):
    import warnings

    from deepssm_nb import device

    monkeypatch.setattr(device, '_CPU_WARNING_SHOWN', False)
    with pytest.warns(RuntimeWarning, match='Using the CPU'):
        assert get_device('auto') == torch.device('cpu')
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # a second call in the same process stays quiet
        assert get_device('auto') == torch.device('cpu')
    ok, reason = cuda_usable()
    assert not ok and 'CUDA' in reason


@pytest.mark.bad_input
@pytest.mark.skipif(torch.cuda.is_available(), reason='a GPU is present')
def test_requested_gpu_that_is_not_there():
    with pytest.raises(ConfigError, match=r"device: 'cuda' was requested but no CUDA device .* Set the device"):
        get_device('cuda')


@pytest.mark.bad_input
def test_unknown_device_name():
    with pytest.raises(ConfigError, match=r"device must be one of \['auto', 'cpu', 'cuda'\]; got 'gpu'"):
        get_device('gpu')
