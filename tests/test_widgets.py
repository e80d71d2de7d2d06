"""Widgets edit the Config in place; callbacks are tested by setting values."""

from __future__ import annotations

from deepssm_nb import get_profile
from deepssm_nb.widgets import config_panel, run_button


def test_panel_writes_into_the_config():
    cfg = get_profile('smoke')
    panel = config_panel(cfg)
    panel.field_widgets['augment.num_samples'].value = 33
    panel.field_widgets['deepssm.loss.function'].value = 'Focal'
    panel.field_widgets['deepssm.fine_tune.enabled'].value = False
    assert cfg.augment.num_samples == 33
    assert cfg.deepssm.loss.function == 'Focal'
    assert cfg.deepssm.fine_tune.enabled is False


def test_invalid_value_is_refused_and_reverted():
    cfg = get_profile('smoke')
    panel = config_panel(cfg, sections=('loader',))
    panel.field_widgets['loader.down_factor'].value = 2.0
    assert cfg.loader.down_factor == 1.0
    assert panel.field_widgets['loader.down_factor'].value == 1.0
    assert 'down_factor' in panel.message.value
    panel.field_widgets['loader.down_factor'].value = 0.5
    assert cfg.loader.down_factor == 0.5 and panel.message.value == ''


def test_profile_picker_rewrites_config_and_widgets():
    cfg = get_profile('smoke', work_dir='somewhere')
    panel = config_panel(cfg)
    panel.profile.value = 'full'
    assert cfg.profile == 'full' and cfg.work_dir == 'somewhere'
    assert cfg.augment.num_samples == get_profile('full').augment.num_samples
    assert panel.field_widgets['augment.num_samples'].value == cfg.augment.num_samples


def test_run_button_runs_only_on_click():
    calls = []
    box = run_button('Run', lambda: calls.append(1) or len(calls))
    assert calls == [] and box.result is None
    box.button.click()
    box.button.click()
    assert box.result == 2


def test_run_button_shows_what_the_action_returns(capsys):
    box = run_button('Summarise', lambda: 'best epoch 7, 1.23 mm')
    box.button.click()
    assert box.result == 'best epoch 7, 1.23 mm'
    assert 'best epoch 7, 1.23 mm' in capsys.readouterr().out
    assert not box.button.disabled


def test_run_button_is_usable_again_after_a_failing_action(caplog):
    calls = []

    def boom():
        calls.append(1)
        raise ValueError('bad knob')

    box = run_button('Run', boom)
    box.button.click()  # the widget's dispatcher reports the error (outside a kernel: in the log)
    assert not box.button.disabled and box.result is None and calls == [1]
    assert 'bad knob' in caplog.text
    box.button.click()  # and a second click runs the action again
    assert calls == [1, 1] and not box.button.disabled
