"""The DeepSSM pipeline as a chain of resumable stages.

Each stage writes its outputs atomically under ``cfg.resolved_paths()`` and
returns quickly when they are already there, so :func:`ensure` can be called
at the top of any notebook: it runs only what is missing.

Stages, in order: ``cohort``, ``groom``, ``augment``, ``loaders``, ``train``,
``predict``, ``analyze``.

Example:
    >>> cfg = get_profile('smoke', work_dir='out')          # doctest: +SKIP
    >>> groomed = ensure(cfg, 'groom')                       # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

from ._validation import look_up_option
from .config import Config

__all__ = ['STAGES', 'ensure', 'key_figures', 'run_pipeline']

# stage -> (module, function, the config section it takes, the earlier results it takes, in order).
# Each function returns the typed result the later stages take: Cohort, GroomResult, AugmentResult, Loaders,
# TrainResult, Predictions, AnalysisResult. A stage whose result nothing takes still runs first (predict needs
# the trained model file that train writes).
STAGE_TABLE: dict[str, tuple[str, str, str | None, tuple[str, ...]]] = {
    'cohort': ('data', 'cohort_from_config', 'data', ()),
    'groom': ('groom', 'run_grooming', None, ('cohort',)),
    'augment': ('augment', 'run_augmentation', None, ('groom',)),
    'loaders': ('loaders', 'build_loaders', None, ('groom', 'augment')),
    'train': ('train', 'train_deepssm', None, ('loaders',)),
    'predict': ('predict', 'test_deepssm', None, ('groom',)),
    'analyze': ('analyze', 'run_analysis', None, ('cohort', 'groom', 'predict')),
}
STAGES = tuple(STAGE_TABLE)


def _run_stage(cfg: Config, stage: str, results: dict[str, Any]) -> Any:
    module, function, section, inputs = STAGE_TABLE[stage]
    run = getattr(importlib.import_module(f'.{module}', __package__), function)
    return run(cfg if section is None else getattr(cfg, section), *(results[name] for name in inputs))


def ensure(cfg: Config, stage: str, *, verbose: bool = True) -> Any:
    """Run every stage up to and including ``stage`` whose outputs are missing.

    Args:
        cfg: The pipeline configuration.
        stage: One of :data:`STAGES`.
        verbose: Print one line per stage with its time.

    Returns:
        The result of ``stage`` (e.g. a ``Cohort``, a ``GroomResult``).
    """
    stage = look_up_option(stage, STAGES, name='stage')
    cfg.validate()
    results: dict[str, Any] = {}
    for name in STAGES[: STAGES.index(stage) + 1]:
        t0 = time.perf_counter()
        results[name] = _run_stage(cfg, name, results)
        if verbose:
            print(f'[{name}] ready ({time.perf_counter() - t0:.1f} s)')
    return results[stage]


def run_pipeline(cfg: Config, *, until: str = 'analyze', verbose: bool = True) -> Any:
    """Run the whole pipeline headless (same as ``ensure(cfg, until)``)."""
    return ensure(cfg, until, verbose=verbose)


def key_figures(cfg: Config) -> dict[str, Any]:
    """The headline numbers of a (partial) pipeline run, read from its output files.

    Missing stages are simply absent from the result.
    """
    import csv
    import json

    paths = cfg.resolved_paths()
    figures: dict[str, Any] = {}

    def _json(path):
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    groom = _json(paths['groom_dir'] / 'groom.json')
    reg = (groom or {}).get('registration_error') or {}
    if reg.get('mean_mm') is not None:
        figures['registration_error_mm (mean over test images)'] = round(reg['mean_mm'], 3)
    aug = _json(paths['aug_dir'] / 'augmentation.json')
    if aug:
        figures['pca_modes_kept'] = aug.get('num_dim') or aug.get('n_components')
        figures['generated_samples'] = aug.get('num_samples')
    log = paths['model_dir'] / 'train_log.csv'
    if log.is_file():
        with log.open() as fh:
            vals = [float(r['val_rmse_mm']) for r in csv.DictReader(fh) if r.get('val_rmse_mm')]
        if vals:
            figures['best_val_rmse_mm'] = round(min(vals), 3)
    calib = _json(paths['model_dir'] / 'calibration.json') or {}
    used = _json(paths['pred_dir'] / 'predictions.json') or {}
    record = calib.get(Path(used.get('model', '')).name) if used.get('calibration') else None
    if record:
        figures['calibrated_val_rmse_mm'] = round(record['val_rmse_mm_after'], 3)
    summary = _json(paths['analysis_dir'] / 'summary.json')
    if summary:
        for key in (
            'mean_surface_distance_mm',
            'hausdorff_mm',
            'particle_rmse_mm',
            'mean_shape_baseline_mm',
            'pca_floor_mm',
        ):
            if key in summary:
                figures[key] = summary[key]
    return figures
