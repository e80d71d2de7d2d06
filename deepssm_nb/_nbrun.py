"""Execute the tutorial notebooks headless with injected parameters.

Used by ``make tutorial`` (``tools/run_tutorial.py``) and the notebook tests.
The cell tagged ``parameters`` keeps its defaults; a cell inserted right after
it overrides them (papermill's convention, without the dependency).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

__all__ = ['execute_notebook', 'list_notebooks']


def list_notebooks(folder: str | Path) -> list[Path]:
    """The numbered notebooks ``NN_*.ipynb`` of ``folder``, in order."""
    return sorted(p for p in Path(folder).glob('[0-9][0-9]_*.ipynb'))


def _inject(nb, overrides: dict[str, Any]) -> None:
    from nbformat.v4 import new_code_cell

    lines = [f'{k} = {v!r}' for k, v in overrides.items()]
    cell = new_code_cell('# Injected parameters\n' + '\n'.join(lines))
    cell.metadata['tags'] = ['injected-parameters']
    for i, c in enumerate(nb.cells):
        if 'parameters' in c.get('metadata', {}).get('tags', []):
            nb.cells.insert(i + 1, cell)
            return
    raise ValueError('notebook has no cell tagged "parameters"; cannot inject ' + ', '.join(overrides))


def execute_notebook(path: str | Path, overrides: dict[str, Any], *, out_path: str | Path | None = None,
                     timeout: int = 1800, cwd: str | Path | None = None) -> tuple[Any, float]:
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
    _inject(nb, overrides)
    client = NotebookClient(nb, timeout=timeout, kernel_name='python3',
                            resources={'metadata': {'path': str(cwd or path.parent)}})
    t0 = time.perf_counter()
    try:
        client.execute()
    finally:
        if out_path is not None:
            Path(out_path).parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, str(out_path))
    return nb, time.perf_counter() - t0
