"""Per-femur accuracy: DeepSSM against the mean shape placed by the same registration.

Example:
    >>> result = run_analysis(cfg)                          # doctest: +SKIP
    >>> fig = plot_against_mean_shape(result)               # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ['per_femur_errors', 'plot_against_mean_shape']


def per_femur_errors(
    result: Any, *, method: str = 'deepssm', baseline: str = 'mean_shape', stat: str = 'mean'
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The per-femur errors of ``method`` and ``baseline``.

    Args:
        result: An :class:`~deepssm_nb.analyze.AnalysisResult`, or rows with the keys ``id``, ``method`` and
            ``stat`` (``distances.csv``, or a benchmark's ``per_subject``; rows with a ``seed`` are kept apart, as
            ``'<id> (seed <s>)'``).
        method: The method on the y axis.
        baseline: The method on the x axis.
        stat: The column compared (the symmetric mean surface distance by default).

    Returns:
        ``(labels, baseline_mm (N,), method_mm (N,))`` for the femurs that have both.

    Raises:
        ValueError: No femur has both methods (the message lists the methods found).
    """
    rows = result.rows if hasattr(result, 'rows') else list(result)
    table: dict[str, dict[str, float]] = {}
    for row in rows:
        label = str(row['id']) if row.get('seed') is None else f'{row["id"]} (seed {row["seed"]})'
        table.setdefault(label, {})[str(row['method'])] = float(row[stat])
    labels = [k for k, v in table.items() if method in v and baseline in v]
    if not labels:
        found = sorted({m for v in table.values() for m in v})
        raise ValueError(f'no femur has both {method!r} and {baseline!r}; methods found: {found}.')
    return (labels, np.array([table[k][baseline] for k in labels]), np.array([table[k][method] for k in labels]))


def plot_against_mean_shape(
    result: Any,
    *,
    method: str = 'deepssm',
    baseline: str = 'mean_shape',
    stat: str = 'mean',
    annotate: bool | None = None,
    title: str | None = None,
):
    """Each femur as a point: its baseline error (x) against its DeepSSM error (y), with the diagonal.

    A point below the diagonal is a femur on which the network beat the mean shape; the legend counts them.

    Args:
        result: See :func:`per_femur_errors`.
        method: The method on the y axis.
        baseline: The method on the x axis.
        stat: The column compared.
        annotate: Write each femur's id next to its point (default: when there are at most 12).
        title: Figure title (default: the counts and the two means).

    Returns:
        ``matplotlib.figure.Figure``.
    """
    from matplotlib.figure import Figure

    labels, x, y = per_femur_errors(result, method=method, baseline=baseline, stat=stat)
    wins = y < x
    fig = Figure(figsize=(5.2, 5.0), layout='constrained')
    ax = fig.subplots()
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    pad = 0.05 * (hi - lo or 1.0)
    lims = (lo - pad, hi + pad)
    ax.plot(lims, lims, color='0.5', lw=1, ls='--', label='equal error')
    ax.scatter(x[wins], y[wins], color='C2', s=28, label=f'{method} better: {int(wins.sum())} of {len(x)}')
    ax.scatter(x[~wins], y[~wins], color='C3', s=28, label=f'{baseline} better: {int((~wins).sum())} of {len(x)}')
    if annotate if annotate is not None else len(labels) <= 12:
        for name, xi, yi in zip(labels, x, y):
            ax.annotate(name, (xi, yi), textcoords='offset points', xytext=(4, 3), fontsize=7)
    ax.set(
        xlim=lims,
        ylim=lims,
        aspect='equal',
        xlabel=f'{baseline} error, mm ({stat} surface distance)',
        ylabel=f'{method} error, mm',
    )
    ax.set_title(title or f'{method} {y.mean():.3f} mm vs {baseline} {x.mean():.3f} mm (mean of {len(x)})', fontsize=10)
    ax.legend(loc='upper left', fontsize=8)
    return fig
