"""Execute the tutorial notebooks headless with injected parameters.

Used by ``make tutorial`` (``tools/run_tutorial.py``) and the notebook tests.
The cell tagged ``parameters`` keeps its defaults; a cell inserted right after
it overrides them (papermill's convention, without the dependency).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ['ProcessTreeMemory', 'execute_notebook', 'inject_parameters', 'list_notebooks']


def list_notebooks(folder: str | Path) -> list[Path]:
    """The numbered notebooks ``NN_*.ipynb`` of ``folder``, in order."""
    return sorted(p for p in Path(folder).glob('[0-9][0-9]_*.ipynb'))


def inject_parameters(nb, overrides: dict[str, Any]) -> None:
    """Put ``overrides`` (``name = repr(value)`` lines) into a new cell after the ``parameters`` cell of ``nb``."""
    from nbformat.v4 import new_code_cell

    lines = [f'{k} = {v!r}' for k, v in overrides.items()]
    cell = new_code_cell('# Injected parameters\n' + '\n'.join(lines))
    cell.metadata['tags'] = ['injected-parameters']
    for i, c in enumerate(nb.cells):
        if 'parameters' in c.get('metadata', {}).get('tags', []):
            nb.cells.insert(i + 1, cell)
            return
    raise ValueError('notebook has no cell tagged "parameters"; cannot inject ' + ', '.join(overrides))


def execute_notebook(
    path: str | Path,
    overrides: dict[str, Any],
    *,
    out_path: str | Path | None = None,
    timeout: int = 1800,
    cwd: str | Path | None = None,
) -> tuple[Any, float]:
    """Execute a notebook with parameter overrides.

    Args:
        path: The notebook.
        overrides: Names and values assigned after the ``parameters`` cell.
        out_path: Where to save the executed notebook (optional).
        timeout: Seconds allowed per cell.
        cwd: Working directory of the kernel (default: the notebook's folder).

    Returns:
        ``(executed notebook, seconds)``.

    Raises:
        nbclient.exceptions.CellExecutionError: A cell raised; the message shows the cell and the traceback.
    """
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(str(path), as_version=4)
    inject_parameters(nb, overrides)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(cwd or path.parent)}}
    )
    t0 = time.perf_counter()
    try:
        client.execute()
    finally:
        if out_path is not None:
            Path(out_path).parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, str(out_path))
    return nb, time.perf_counter() - t0


class ProcessTreeMemory:
    """Peak of the summed resident memory of this process and all its descendants (Linux ``/proc``).

    A notebook kernel runs in a child process and starts its own workers (grooming, augmentation); a container
    limit such as Binder's 2 GB applies to their sum. A background thread samples every ``interval`` seconds.
    Shared pages are counted once per process, so the figure errs on the high side.

    Example:
        >>> with ProcessTreeMemory() as mem:                     # doctest: +SKIP
        ...     run_notebooks()
        >>> mem.peak_gb                                          # doctest: +SKIP
    """

    def __init__(self, interval: float = 0.25, root_pid: int | None = None):
        self.interval = float(interval)
        self.root_pid = os.getpid() if root_pid is None else int(root_pid)
        self.peak_bytes = 0
        self.available = Path('/proc/self/status').is_file()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def peak_gb(self) -> float | None:
        """The peak in GB (1024**3 bytes), or None where ``/proc`` is missing."""
        return self.peak_bytes / 1024**3 if self.available else None

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir('/proc'):
            if entry.isdigit():
                try:
                    fields = Path(f'/proc/{entry}/stat').read_text().rsplit(')', 1)[1].split()
                except OSError:
                    continue
                children.setdefault(int(fields[1]), []).append(int(entry))
        tree, todo = [], [self.root_pid]
        while todo:
            pid = todo.pop()
            tree.append(pid)
            todo.extend(children.get(pid, []))
        return tree

    def sample(self) -> int:
        """Summed resident bytes of the tree now (and update the peak)."""
        total = 0
        for pid in self._tree():
            try:
                for line in Path(f'/proc/{pid}/status').read_text().splitlines():
                    if line.startswith('VmRSS:'):
                        total += int(line.split()[1]) * 1024
                        break
            except OSError:
                continue
        self.peak_bytes = max(self.peak_bytes, total)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> Self:
        if self.available:
            self.sample()
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self.sample()
