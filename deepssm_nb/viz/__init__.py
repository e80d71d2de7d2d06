"""Plots and interactive views (matplotlib figures, pyvista plotters, ipywidgets).

Every plotting function returns its object (a matplotlib ``Figure``, a ``pyvista.Plotter`` or a widget) so that a
notebook shows it as the last expression of a cell and a test can inspect it. Importing this package lets IPython
display bare ``Figure`` objects as PNG even where pyplot was never imported.
"""

from __future__ import annotations

__all__ = ['enable_figure_display']


def enable_figure_display() -> None:
    """Let IPython show ``matplotlib.figure.Figure`` objects as PNG even if pyplot was never imported.

    Without pyplot, the inline backend never registers its formatter and a returned Figure prints as text.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return
    shell = get_ipython()
    if shell is None:
        return
    from matplotlib.figure import Figure

    formatter = shell.display_formatter.formatters['image/png']
    if formatter.for_type(Figure) is None:
        formatter.for_type(Figure, _figure_png)


def _figure_png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=80)
    return buf.getvalue()


enable_figure_display()
