"""Training curves: the log as a figure, and a live plot updated every epoch.

Example:
    >>> live = LivePlot()                                   # doctest: +SKIP
    >>> result = train_deepssm(cfg, callback=live)          # doctest: +SKIP
    >>> fig = plot_training_log(result.history)             # doctest: +SKIP
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ['LivePlot', 'plot_training_log']

_STAGE_LABELS = {'base': 'training', 'fine_tune': 'fine tuning', 'tl_ae': 'TL: autoencoder',
                 'tl_tf': 'TL: T-flank', 'tl_joint': 'TL: joint'}


def _rows(log: Sequence[dict[str, Any]] | str | os.PathLike) -> list[dict[str, Any]]:
    if isinstance(log, (str, os.PathLike)):
        from .._train_loop import read_train_log

        return read_train_log(Path(log))
    return list(log)


def plot_training_log(log: Sequence[dict[str, Any]] | str | os.PathLike, *, show_lr: bool = True,
                      log_scale: bool = True, title: str | None = None):
    """Train and validation RMSE (mm) per epoch, every stage after the other.

    Args:
        log: Rows of ``train_log.csv`` (``TrainResult.history``), or the CSV
            file or the model folder.
        show_lr: Add a small panel with the learning rate.
        log_scale: Logarithmic error axis.
        title: Figure title.

    Returns:
        ``matplotlib.figure.Figure``. The x axis counts epochs over all
        stages; dashed lines mark where a stage begins.
    """
    from matplotlib.figure import Figure

    rows = _rows(log)
    fig = Figure(figsize=(7.5, 4.8 if show_lr else 3.8), layout='constrained')
    if show_lr:
        ax, ax_lr = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    else:
        ax, ax_lr = fig.subplots(1, 1), None
    offset, colors = 0, ['C0', 'C3', 'C2', 'C4', 'C1']
    stages = list(dict.fromkeys(r['stage'] for r in rows))
    for i, stage in enumerate(stages):
        rs = [r for r in rows if r['stage'] == stage]
        x = [offset + r['epoch'] for r in rs]
        c = colors[i % len(colors)]
        name = _STAGE_LABELS.get(stage, stage)
        ax.plot(x, [r['train_rmse_mm'] for r in rs], '-', color=c, label=f'{name}: train')
        xv = [xi for xi, r in zip(x, rs) if not _nan(r['val_rmse_mm'])]
        ax.plot(xv, [r['val_rmse_mm'] for r in rs if not _nan(r['val_rmse_mm'])], 'o--', color=c, ms=4,
                mfc='white', label=f'{name}: validation')
        if xv:
            best = min((r for r in rs if not _nan(r['val_rmse_mm'])), key=lambda r: r['val_rmse_mm'])
            ax.plot([offset + best['epoch']], [best['val_rmse_mm']], '*', color=c, ms=12, mec='k', zorder=5)
        if ax_lr is not None:
            ax_lr.plot(x, [r['lr'] for r in rs], '-', color=c)
        if i > 0:
            for a in (ax, ax_lr):
                if a is not None:
                    a.axvline(offset + 0.5, color='0.6', ls=':', lw=1)
        offset = x[-1] if x else offset
    if log_scale and any(r['train_rmse_mm'] > 0 for r in rows):
        ax.set_yscale('log')
    ax.set_ylabel('RMSE per particle (mm)')
    ax.grid(True, which='both', alpha=0.3)
    if rows:
        ax.legend(fontsize=8, ncols=2 if len(stages) > 1 else 1)
    if title:
        ax.set_title(title)
    (ax_lr or ax).set_xlabel('epoch (all stages)')
    if ax_lr is not None:
        ax_lr.set_ylabel('learning rate')
        ax_lr.grid(True, alpha=0.3)
    return fig


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and 'IPKernelApp' in getattr(ip, 'config', {})


class LivePlot:
    """A training curve that redraws after every epoch (use as ``callback``).

    In a notebook it shows one image that is replaced at every update; outside
    a notebook (a script, a headless test) it only collects the rows, and
    :meth:`figure` draws the final curve.

    Args:
        every: Redraw every ``every`` epochs (and at the last epoch of a stage).
        **plot_kwargs: Passed to :func:`plot_training_log`.

    Attributes:
        rows: The log rows received so far.
    """

    def __init__(self, every: int = 1, **plot_kwargs: Any):
        self.every = max(int(every), 1)
        self.plot_kwargs = plot_kwargs
        self.rows: list[dict[str, Any]] = []
        self._handle = None
        self._live = _in_kernel()

    def __call__(self, row: dict[str, Any]) -> None:
        self.rows.append(dict(row))
        last = row.get('epochs') is not None and row['epoch'] >= row['epochs']
        if self._live and (row['epoch'] % self.every == 0 or last):
            self._show()

    def figure(self):
        """The curve of every row so far (``matplotlib.figure.Figure``)."""
        return plot_training_log(self.rows, **self.plot_kwargs)

    def _show(self) -> None:
        from IPython.display import Image, display

        buf = io.BytesIO()
        self.figure().savefig(buf, format='png', dpi=90)
        img = Image(data=buf.getvalue(), format='png')
        if self._handle is None:
            self._handle = display(img, display_id=True)
        else:
            self._handle.update(img)
