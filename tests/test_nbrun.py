"""The tutorial runner's memory meter sums a process tree."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepssm_nb.nbrun import ProcessTreeMemory

pytestmark = pytest.mark.skipif(not Path('/proc/self/status').is_file(), reason='needs Linux /proc')


def test_peak_includes_children_and_grandchildren():
    # a child that starts a grandchild; each holds about 150 MB for a moment
    hold = 'import time; b = bytearray(150 * 2**20); b[::4096] = b"x" * len(b[::4096]); time.sleep(1.5)'
    child = f'import subprocess, sys; p = subprocess.Popen([sys.executable, "-c", {hold!r}]); exec({hold!r}); p.wait()'
    with ProcessTreeMemory(interval=0.05) as mem:
        baseline = mem.peak_bytes
        subprocess.run([sys.executable, '-c', child], check=True)
    assert mem.peak_bytes - baseline > 250 * 2**20, (mem.peak_bytes - baseline) / 2**20
    assert mem.peak_gb == pytest.approx(mem.peak_bytes / 1024**3)


def test_a_process_without_children_is_its_own_rss():
    p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3)'])
    try:
        time.sleep(0.5)
        status = Path(f'/proc/{p.pid}/status').read_text()
        rss = int(next(ln for ln in status.splitlines() if ln.startswith('VmRSS:')).split()[1]) * 1024
        assert ProcessTreeMemory(root_pid=p.pid).sample() == pytest.approx(rss, rel=0.2)
    finally:
        p.kill()
        p.wait()
