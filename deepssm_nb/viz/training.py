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

__all__ = ['LivePlot', 'plot_calibration', 'plot_focal_loss', 'plot_latent_agreement', 'plot_training_log']

_STAGE_LABELS = {
    'base': 'training',
    'fine_tune': 'fine tuning',
    'tl_ae': 'TL: autoencoder',
    'tl_tf': 'TL: T-flank',
    'tl_joint': 'TL: joint',
}


def _rows(log: Sequence[dict[str, Any]] | str | os.PathLike) -> list[dict[str, Any]]:
    if isinstance(log, (str, os.PathLike)):
        from ..checkpoints import read_train_log

        return read_train_log(Path(log))
    return list(log)


def plot_training_log(
    log: Sequence[dict[str, Any]] | str | os.PathLike,
    *,
    show_lr: bool = True,
    log_scale: bool = True,
    title: str | None = None,
):
    """Train and validation RMSE (mm) per epoch, every stage after the other.

    Args:
        log: Rows of ``train_log.csv`` (``TrainResult.history``), or the CSV
            file or the model folder.
        show_lr: Add a small panel with the learning rate.
        log_scale: Logarithmic error axis (when the errors span more than a factor 5).
        title: Figure title.

    Returns:
        ``matplotlib.figure.Figure``. The x axis counts epochs over all
        stages; dashed lines mark where a stage begins.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

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
        ax.plot(x, [r['train_rmse_mm'] for r in rs], '.-', color=c, label=f'{name}: train')
        xv = [xi for xi, r in zip(x, rs) if not _nan(r['val_rmse_mm'])]
        ax.plot(
            xv,
            [r['val_rmse_mm'] for r in rs if not _nan(r['val_rmse_mm'])],
            'o--',
            color=c,
            ms=4,
            mfc='white',
            label=f'{name}: validation',
        )
        if xv:
            best = min((r for r in rs if not _nan(r['val_rmse_mm'])), key=lambda r: r['val_rmse_mm'])
            ax.plot([offset + best['epoch']], [best['val_rmse_mm']], '*', color=c, ms=12, mec='k', zorder=5)
        if ax_lr is not None:
            ax_lr.plot(x, [r['lr'] for r in rs], '.-', color=c)
        if i > 0:
            for a in (ax, ax_lr):
                if a is not None:
                    a.axvline(offset + 0.5, color='0.6', ls=':', lw=1)
        offset = x[-1] if x else offset
    values = [v for r in rows for v in (r['train_rmse_mm'], r['val_rmse_mm']) if not _nan(v) and v > 0]
    if log_scale and values and max(values) > 5 * min(values):
        ax.set_yscale('log')
        plain = FuncFormatter(lambda v, _: f'{v:g}')
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain if max(values) < 30 * min(values) else NullFormatter())
    (ax_lr or ax).xaxis.set_major_locator(MaxNLocator(integer=True))
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


def plot_focal_loss(a: float = 1.32, c: float = 10.0, *, max_error: float | None = None):
    """The focal loss of one coordinate against its error, next to the squared error.

    Args:
        a: Steepness of the gate.
        c: Error (mm) where the gate is one half.
        max_error: Right end of the error axis (default ``2.5 c``).

    Returns:
        ``matplotlib.figure.Figure`` with two panels: the losses, and the gate
        ``1 / (1 + exp(a (c - l)))`` that multiplies ``l**2``.
    """
    import numpy as np
    from matplotlib.figure import Figure

    err = np.linspace(0.0, max_error or 2.5 * max(c, 1e-3), 400)
    gate = 1.0 / (1.0 + np.exp(np.clip(a * (c - err), -60, 60)))
    fig = Figure(figsize=(8.0, 3.2), layout='constrained')
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(err, err**2, 'k--', label='squared error (MSE)')
    ax1.plot(err, err**2 * gate, 'C3', label=f'focal, a={a:g}, c={c:g}')
    ax1.set_xlabel('error l (mm)')
    ax1.set_ylabel('loss')
    ax1.legend(fontsize=8)
    ax2.plot(err, gate, 'C3')
    ax2.axvline(c, color='0.6', ls=':')
    ax2.set_xlabel('error l (mm)')
    ax2.set_ylabel('weight of l²')
    ax2.set_ylim(-0.03, 1.03)
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
    return fig


def plot_calibration(record: dict[str, Any]):
    """Bar chart of the validation calibration factors, one per PCA mode.

    Args:
        record: A calibration record (``TrainResult.calibration``, or an entry of ``calibration.json``) with
            ``alpha`` (L,), ``val_rmse_mm_before`` and ``val_rmse_mm_after``.

    Returns:
        ``matplotlib.figure.Figure``: 1 means the mode is used as predicted, 0 that the mean is used instead.
    """
    import numpy as np
    from matplotlib.figure import Figure

    alpha = np.asarray(record['alpha'], dtype=float)
    fig = Figure(figsize=(max(4.0, 0.35 * len(alpha) + 2.0), 3.0), layout='constrained')
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(np.arange(1, len(alpha) + 1), alpha, color=['C0' if a > 0.5 else 'C1' for a in alpha])
    ax.axhline(1.0, color='0.6', ls=':')
    ax.set_ylim(0, 1.05)
    ax.set_xlabel('PCA mode')
    ax.set_ylabel('factor (0: mean, 1: as predicted)')
    ax.set_title(
        f'validation RMSE {record["val_rmse_mm_before"]:.2f} -> {record["val_rmse_mm_after"]:.2f} mm', fontsize=10
    )
    return fig


def plot_latent_agreement(net: Any, loader: Any, *, max_dims: int = 4, device: str = 'cpu'):
    """TL-DeepSSM: the image encoder's latent values against the autoencoder's, per latent dimension.

    Points on the diagonal mean the T-flank reproduces the latent code of the
    true particles.

    Args:
        net: A :class:`~deepssm_nb.models.TLDeepSSMNet`.
        loader: Yields dicts with ``'image'`` and ``'particles'`` (e.g. the validation loader).
        max_dims: Panels to draw (the first latent dimensions).
        device: Where to run the network.

    Returns:
        ``matplotlib.figure.Figure``.
    """
    import torch
    from matplotlib.figure import Figure

    net = net.to(device).eval()
    z_ae, z_img = [], []
    with torch.no_grad():
        for batch in loader:
            z_ae.append(net.encode_particles(batch['particles'].to(device)).cpu())
            z_img.append(net(batch['image'].to(device))[0].cpu())
    za, zi = torch.cat(z_ae).numpy(), torch.cat(z_img).numpy()
    k = min(max_dims, za.shape[1])
    fig = Figure(figsize=(2.6 * k, 2.8), layout='constrained')
    axes = fig.subplots(1, k, squeeze=False)[0]
    for d, ax in enumerate(axes):
        lo, hi = float(min(za[:, d].min(), zi[:, d].min())), float(max(za[:, d].max(), zi[:, d].max()))
        ax.plot([lo, hi], [lo, hi], color='0.6', lw=1)
        ax.plot(za[:, d], zi[:, d], 'o', ms=4, alpha=0.7)
        ax.set_title(f'latent {d + 1}', fontsize=9)
        ax.set_xlabel('autoencoder (particles)')
        if d == 0:
            ax.set_ylabel('T-flank (image)')
    return fig
