"""ipywidgets panels that are views over a :class:`~deepssm_nb.config.Config`.

The config object stays the single source of truth: every widget writes its
value straight into the config (after validation) and a profile change
rewrites the config and then refreshes the widgets. Expensive work never runs
from a slider: it sits behind :func:`run_button`.

Example:
    >>> cfg = get_profile('smoke')
    >>> panel = config_panel(cfg, sections=('augment',))
    >>> panel.field_widgets['augment.num_samples'].value = 20
    >>> cfg.augment.num_samples
    20
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as W
from IPython.display import display

from ._validation import ConfigError
from .config import PROFILES, Config, get_field, get_profile

__all__ = ['ConfigPanel', 'config_panel', 'run_button']

#: Panels shown by default, with the fields a learner is expected to change.
DEFAULT_SECTIONS: dict[str, tuple[str, ...]] = {
    'augment': ('num_samples', 'num_dim', 'percent_variability', 'sampler', 'landmark_step', 'grid_step', 'processes'),
    'loader': ('batch_size', 'down_factor', 'val_fraction'),
    'deepssm.trainer': ('epochs', 'learning_rate', 'val_freq', 'weight_decay', 'early_stopping', 'device', 'precision'),
    'deepssm.loss': ('function', 'focal_a', 'focal_c'),
    'deepssm.fine_tune': ('enabled', 'epochs', 'learning_rate'),
    'deepssm.tl_net': ('enabled', 'ae_epochs', 'tf_epochs', 'joint_epochs', 'alpha'),
}


def _widget_for(f: dataclasses.Field, tp: Any, value: Any, description: str) -> W.Widget:
    style = {'description_width': '150px'}
    layout = W.Layout(width='340px')
    tip = f.metadata.get('doc', '')
    if 'options' in f.metadata:
        return W.Dropdown(
            options=list(f.metadata['options']),
            value=value,
            description=description,
            style=style,
            layout=layout,
            tooltip=tip,
        )
    if tp is bool:
        return W.Checkbox(value=value, description=description, style=style, layout=layout, indent=False)
    if tp is int:
        return W.BoundedIntText(
            value=value,
            min=int(f.metadata.get('low', 0)),
            max=int(f.metadata.get('high', 10**9)),
            description=description,
            style=style,
            layout=layout,
        )
    if tp is float:
        return W.FloatText(value=value, description=description, style=style, layout=layout, step=None)
    return W.Text(value=str(value), description=description, style=style, layout=layout)


class ConfigPanel(W.VBox):
    """A VBox of editors bound to fields of a Config.

    Attributes:
        config: The Config being edited (modified in place).
        field_widgets: ``{'augment.num_samples': widget, ...}``.
        message: An HTML widget showing the last validation error (empty when valid).
    """

    def __init__(self, config: Config, sections: Sequence[str] | None = None):
        self.config = config
        self.field_widgets: dict[str, W.Widget] = {}
        self.message = W.HTML('')
        self._updating = False
        names = list(sections) if sections is not None else list(DEFAULT_SECTIONS)
        self.profile = W.ToggleButtons(options=list(PROFILES), value=config.profile, description='profile')
        self.profile.observe(self._on_profile, names='value')
        tabs = []
        for section in names:
            if section not in DEFAULT_SECTIONS:
                raise ConfigError(
                    f'config_panel: unknown section {section!r}; expected one of {list(DEFAULT_SECTIONS)}.'
                )
            tabs.append(self._section(section))
        accordion = W.Accordion(children=tabs, titles=tuple(names))
        super().__init__([self.profile, accordion, self.message])

    def _section(self, section: str) -> W.Widget:
        obj = get_field(self.config, section)
        hints = typing.get_type_hints(type(obj))
        fields = {f.name: f for f in dataclasses.fields(obj)}
        rows = []
        for name in DEFAULT_SECTIONS[section]:
            w = _widget_for(fields[name], hints[name], getattr(obj, name), name)
            key = f'{section}.{name}'
            w.observe(lambda change, key=key: self._on_change(key, change), names='value')
            self.field_widgets[key] = w
            rows.append(w)
        return W.VBox(rows)

    def _on_change(self, key: str, change: dict) -> None:
        if self._updating:
            return
        section, name = key.rsplit('.', 1)
        obj = get_field(self.config, section)
        old = getattr(obj, name)
        setattr(obj, name, change['new'])
        try:
            self.config.validate()
        except ConfigError as e:
            setattr(obj, name, old)
            self.message.value = f'<span style="color:#b00">{e}</span>'
            self._updating = True
            try:
                self.field_widgets[key].value = old
            finally:
                self._updating = False
            return
        self.message.value = ''

    def _on_profile(self, change: dict) -> None:
        fresh = get_profile(change['new'], work_dir=self.config.work_dir)
        fresh.data.data_dir = self.config.data.data_dir
        for f in dataclasses.fields(fresh):
            setattr(self.config, f.name, getattr(fresh, f.name))
        self.refresh()

    def refresh(self) -> None:
        """Re-read every widget value from the config."""
        self._updating = True
        try:
            for key, w in self.field_widgets.items():
                w.value = get_field(self.config, key)
        finally:
            self._updating = False
        self.message.value = ''


def config_panel(config: Config, sections: Sequence[str] | None = None) -> ConfigPanel:
    """Editors for the knobs of ``config``, organised by section.

    Args:
        config: Edited in place.
        sections: Subset of ``'augment'``, ``'loader'``, ``'deepssm.trainer'``, ``'deepssm.loss'``,
            ``'deepssm.fine_tune'``, ``'deepssm.tl_net'`` (default: all).

    Returns:
        A :class:`ConfigPanel` (display it as the last expression of a cell).
    """
    return ConfigPanel(config, sections)


def run_button(description: str, action: Callable[[], Any], *, output: W.Output | None = None) -> W.VBox:
    """A button that runs ``action()`` once per click, showing its output below.

    Args:
        description: Button label, e.g. ``'Train'``.
        action: Called with no arguments; its return value is kept in ``box.result`` and, unless None,
            displayed below the button (a figure, a table, a summary string).
        output: Where prints and plots go (a new ``Output`` by default).

    Returns:
        A VBox with attributes ``button``, ``output`` and ``result``.
    """
    button = W.Button(description=description, button_style='primary', icon='play')
    out = output or W.Output()
    box = W.VBox([button, out])
    box.button, box.output, box.result = button, out, None

    def _click(_):
        button.disabled = True
        try:
            with out:
                box.result = action()
                if box.result is not None:
                    display(box.result)
        finally:
            button.disabled = False

    button.on_click(_click)
    return box
