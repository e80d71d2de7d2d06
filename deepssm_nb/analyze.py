"""How good are the predicted shapes? Surface distances, baselines and a report.

A little over 400 lines: the analysis, both baselines and the report belong together, so that every figure has
its context in one place.

:func:`analyze_results` keeps the seed's arguments (``out_dir, DT_dir,
prediction_dir, mean_prefix``): it meshes every true segmentation (or distance
transform, or mesh), builds every predicted surface by warping the mean mesh
from the mean particles to the predicted particles, and measures the distance
between the two surfaces in both directions. Predictions are paired with truths
by subject id (the file name without extension), never by sorted order.

Two baselines put the numbers in context (:func:`run_analysis` builds them):

* ``mean_shape``: the training mean shape, placed by the same registration as
  the prediction (world-frame mean particles mapped by ``inv(T)``). A network
  must beat it to have learned anything from the image.
* ``pca_floor``: each true shape projected onto the kept PCA modes. DeepSSM
  predicts PCA scores, so it cannot do better than this.

Outputs in ``out_dir``: ``true_meshes/<id>.vtk``, heat maps
``heatmaps/<method>/<id>_predicted.vtk`` (distance to the truth) and
``<id>_true.vtk`` (distance to the prediction), ``distances.csv``,
``summary.json`` and ``particle_error.vtk`` (mean mesh, one point array per
method: the per-particle Euclidean error averaged over the subjects).
"""

from __future__ import annotations

import csv
import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._validation import DataError
from .freshness import StageRecord
from .io import (
    IMAGE_SUFFIXES,
    MESH_SUFFIXES,
    atomic_write_text,
    read_json,
    read_particles,
    write_json,
    write_particles,
)
from .surface import (
    particle_error_map,
    read_surface,
    save_mesh,
    symmetric_surface_distance,
    warp_mesh,
)

__all__ = ['AnalysisResult', 'analyze_results', 'baseline_particles', 'format_report', 'load_analysis', 'run_analysis']

PRIMARY = 'deepssm'
STATS = ('mean', 'rms', 'p95', 'hausdorff')
DIRECTIONS = {'pred_to_true': 'b_to_a', 'true_to_pred': 'a_to_b'}
CSV_COLUMNS = ['id', 'method', *STATS] + [f'{d}_{s}' for d in DIRECTIONS for s in STATS] + ['particle_rmse']

RECORD_FILE = 'analysis_record.json'  # run_analysis: what the analysis in this folder was made from


class _Markdown(str):
    """A string that notebooks render as markdown."""

    def _repr_markdown_(self) -> str:
        return str(self)


@dataclass
class AnalysisResult:
    """What :func:`analyze_results` wrote, with helpers to read it back.

    Attributes:
        root: The analysis folder.
        rows: One dict per subject and method (the rows of ``distances.csv``).
        summary: The content of ``summary.json``.
    """

    root: Path
    rows: list[dict[str, Any]] = field(repr=False)
    summary: dict[str, Any] = field(repr=False)

    @property
    def ids(self) -> list[str]:
        return list(self.summary['ids'])

    @property
    def methods(self) -> list[str]:
        return list(self.summary['methods'])

    def value(self, subject_id: str, method: str = PRIMARY, stat: str = 'mean') -> float:
        """One number of ``distances.csv`` (e.g. the symmetric mean distance, mm)."""
        for row in self.rows:
            if row['id'] == subject_id and row['method'] == method:
                return float(row[stat])
        raise KeyError(
            f'no row for subject {subject_id!r} and method {method!r}; ids: {self.ids}, methods: {self.methods}'
        )

    def ranking(self, method: str = PRIMARY, stat: str = 'mean') -> dict[str, str]:
        """Ids of the best, median (lower median) and worst subject for ``method``."""
        return _rank({i: self.value(i, method, stat) for i in self.ids})

    def meshes(self, subject_id: str, method: str = PRIMARY):
        """``(true, predicted)`` surfaces, each with the point array ``'distance'`` to the other (mm)."""
        import pyvista as pv

        folder = self.root / 'heatmaps' / method
        return pv.read(folder / f'{subject_id}_true.vtk'), pv.read(folder / f'{subject_id}_predicted.vtk')

    def particle_error(self):
        """``(mean mesh with one error array per method, mean particles (M, 3) with the same arrays)``."""
        import pyvista as pv

        points = pv.read(self.root / 'particle_error_points.vtk')
        return pv.read(self.root / 'particle_error.vtk'), points

    def table(self, stat: str = 'mean') -> _Table:
        """Per-subject table of ``stat`` (symmetric, mm) for every method, plus the mean row."""
        header = ['subject', *self.methods]
        body = [[i, *(self.value(i, m, stat) for m in self.methods)] for i in self.ids]
        body.append(['mean', *(self.summary['methods'][m][stat] for m in self.methods)])
        return _Table(header, body, caption=f'{stat} surface distance, symmetric (mm)')

    def report(self) -> _Markdown:
        """The summary as markdown (DeepSSM next to both baselines, with ratios)."""
        return format_report(self.summary)


class _Table:
    """A small table that shows as HTML in notebooks and as text elsewhere."""

    def __init__(self, header: list[str], rows: list[list[Any]], caption: str = ''):
        self.header, self.rows, self.caption = header, rows, caption

    @staticmethod
    def _fmt(v: Any) -> str:
        return 'n/a' if v is None else f'{v:.3f}' if isinstance(v, float) else str(v)

    def __repr__(self) -> str:
        cells = [self.header] + [[self._fmt(v) for v in r] for r in self.rows]
        widths = [max(len(r[j]) for r in cells) for j in range(len(self.header))]
        lines = ['  '.join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
        return '\n'.join(([self.caption] if self.caption else []) + lines)

    def _repr_html_(self) -> str:
        head = ''.join(f'<th>{html.escape(h)}</th>' for h in self.header)
        body = ''.join(
            '<tr>' + ''.join(f'<td>{html.escape(self._fmt(v))}</td>' for v in r) + '</tr>' for r in self.rows
        )
        cap = f'<caption>{html.escape(self.caption)}</caption>' if self.caption else ''
        return f'<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# --------------------------------------------------------------------------- files and pairing


def _stem(path: Path) -> str:
    name = path.name
    for sfx in sorted((*IMAGE_SUFFIXES, *MESH_SUFFIXES, '.particles'), key=len, reverse=True):
        if name.lower().endswith(sfx):
            return name[: -len(sfx)]
    return path.stem


def _files_by_id(folder: Any, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
    if isinstance(folder, dict):  # already paired: {id: file}
        return {str(k): Path(v) for k, v in folder.items()}
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'{what} folder not found: "{folder}"')
    found: dict[str, Path] = {}
    dupes = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.name.lower().endswith(suffixes) and not p.name.startswith('.'):
            sid = _stem(p)
            if sid in found:
                dupes.append(f'{what}: two files for subject {sid!r}: "{found[sid].name}" and "{p.name}".')
            found[sid] = p
    if dupes:
        raise DataError(dupes)
    return found


def _resolve_mean(mean_prefix: Any) -> tuple[Path, Path]:
    """``(mesh, particles)`` from a prefix (``<p>.vtk``/``<p>.particles`` or ``<p>_dense``/``<p>_sparse``)."""
    if isinstance(mean_prefix, (tuple, list)):
        mesh, parts = (Path(p) for p in mean_prefix)
        candidates = [(mesh, parts)]
    else:
        p = str(mean_prefix)
        candidates = [
            (Path(p + '.vtk'), Path(p + '.particles')),
            (Path(p + '_dense.vtk'), Path(p + '_sparse.particles')),
        ]
    for mesh, parts in candidates:
        if mesh.is_file() and parts.is_file():
            return mesh, parts
    tried = ', '.join(f'"{m}" + "{q}"' for m, q in candidates)
    raise FileNotFoundError(f'mean shape not found for mean_prefix={str(mean_prefix)!r}; tried {tried}.')


def _pair(truths: dict[str, Path], methods: dict[str, dict[str, Path]], subject_ids: list[str] | None) -> list[str]:
    problems = []
    ids = sorted(methods[PRIMARY]) if subject_ids is None else list(subject_ids)
    if subject_ids is None:
        extra = sorted(set(truths) - set(ids))
        if extra:
            problems.append(f'truths without a prediction: {extra}')
    for name, files in methods.items():
        missing = sorted(set(ids) - set(files))
        if missing:
            problems.append(f'{name}: no particle file for subjects {missing}')
    missing = sorted(set(ids) - set(truths))
    if missing:
        problems.append(f'no truth (segmentation, distance transform or mesh) for subjects {missing}')
    if not ids:
        problems.append('no predictions to analyse')
    if problems:
        raise DataError(problems)
    return ids


# --------------------------------------------------------------------------- the analysis


def analyze_results(
    out_dir: str | os.PathLike,
    DT_dir: str | os.PathLike,  # DT_dir: the seed's name
    prediction_dir: str | os.PathLike,
    mean_prefix: Any,
    *,
    baselines: dict[str, str | os.PathLike] | None = None,
    particles_dir: str | os.PathLike | None = None,
    subject_ids: list[str] | None = None,
    smooth_iterations: int = 50,
    progress: bool = True,
) -> AnalysisResult:
    """Compare predicted shapes with the true surfaces, subject by subject.

    Args:
        out_dir: Output folder (created).
        DT_dir: True shapes, one file per subject named ``<id>.<ext>``:
            segmentations or distance transforms (``.nrrd``, ``.nii.gz``,
            ``.mha``) or meshes (``.vtk``, ``.vtp``, ``.stl``, ``.ply``); or
            a dict ``{id: file}``.
        prediction_dir: Predicted particles ``<id>.particles`` in the frame of
            the truths.
        mean_prefix: ``<prefix>.vtk`` + ``<prefix>.particles`` (or
            ``<prefix>_dense.vtk`` + ``<prefix>_sparse.particles``), or a
            ``(mesh, particles)`` pair of paths: the template warped to
            every particle set.
        baselines: Other methods to score the same way, ``{name: folder of
            <id>.particles}`` (e.g. ``mean_shape``, ``pca_floor``).
        particles_dir: True particles ``<id>.particles`` (or ``{id: file}``); if given, the
            particle RMSE and the per-particle error map are computed too.
        subject_ids: Subjects to analyse (default: every prediction; then any
            truth without a prediction is an error).
        smooth_iterations: Taubin iterations for surfaces meshed from images.
        progress: Show a progress bar.

    Returns:
        :class:`AnalysisResult`.

    Raises:
        DataError: Unpaired files (all listed at once), particle counts that
            differ from the mean, or an empty segmentation.
        FileNotFoundError: A folder or the mean shape is missing.
    """
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    truths = _files_by_id(DT_dir, IMAGE_SUFFIXES + MESH_SUFFIXES, 'DT_dir')
    methods = {PRIMARY: _files_by_id(Path(prediction_dir), ('.particles',), 'prediction_dir')}
    for name, folder in (baselines or {}).items():
        methods[name] = _files_by_id(Path(folder), ('.particles',), f'baseline {name!r}')
    ids = _pair(truths, methods, subject_ids)
    true_parts = _files_by_id(particles_dir, ('.particles',), 'particles_dir') if particles_dir else None
    if true_parts is not None and set(ids) - set(true_parts):
        raise DataError(f'particles_dir "{particles_dir}": no true particles for {sorted(set(ids) - set(true_parts))}')
    mean_mesh_path, mean_parts_path = _resolve_mean(mean_prefix)
    mean_mesh = read_surface(mean_mesh_path)
    mean_parts = read_particles(mean_parts_path)
    m = mean_parts.shape[0]

    rows, per_particle = [], {name: [] for name in methods}
    for sid in tqdm(ids, desc='analysing subjects', disable=not progress):
        true_out = out_dir / 'true_meshes' / f'{sid}.vtk'
        if not (true_out.is_file() and true_out.stat().st_mtime_ns >= Path(truths[sid]).stat().st_mtime_ns):
            save_mesh(read_surface(truths[sid], smooth_iterations=smooth_iterations), true_out)
        true_mesh = read_surface(true_out)
        truth_p = read_particles(true_parts[sid], num_particles=m) if true_parts else None
        for name, files in methods.items():
            pred_p = read_particles(files[sid], num_particles=m)
            pred_mesh = warp_mesh(mean_mesh, mean_parts, pred_p)
            t_d, p_d, stats = symmetric_surface_distance(true_mesh, pred_mesh)
            save_mesh(t_d, out_dir / 'heatmaps' / name / f'{sid}_true.vtk')
            save_mesh(p_d, out_dir / 'heatmaps' / name / f'{sid}_predicted.vtk')
            row: dict[str, Any] = {'id': sid, 'method': name, **stats['symmetric']}
            for col, key in DIRECTIONS.items():
                row.update({f'{col}_{s}': stats[key][s] for s in STATS})
            row['particle_rmse'] = float('nan')
            if truth_p is not None:
                err = np.linalg.norm(pred_p - truth_p, axis=1)
                row['particle_rmse'] = float(np.sqrt(np.mean(err**2)))
                per_particle[name].append(err)
            rows.append(row)

    if true_parts is not None:
        arrays = {name: np.mean(errs, axis=0) for name, errs in per_particle.items()}
        _write_particle_error(out_dir, mean_mesh, mean_parts, arrays)
    summary = _summarize(rows, ids, list(methods))
    truth_dir = Path(next(iter(DT_dir.values()))).parent if isinstance(DT_dir, dict) else Path(DT_dir)
    summary['truth_dir'] = str(truth_dir.resolve())
    _write_csv(out_dir / 'distances.csv', rows)
    write_json(out_dir / 'summary.json', summary)
    atomic_write_text(out_dir / 'report.md', format_report(summary) + '\n')
    return AnalysisResult(out_dir, rows, summary)


def _write_particle_error(out_dir: Path, mean_mesh, mean_parts: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
    import pyvista as pv

    mesh = mean_mesh.copy()
    points = pv.PolyData(mean_parts)
    for name, err in arrays.items():
        mesh.point_data[name] = particle_error_map(mean_mesh, mean_parts, err)['particle_error']
        points.point_data[name] = err
    save_mesh(mesh, out_dir / 'particle_error.vtk')
    save_mesh(points, out_dir / 'particle_error_points.vtk')


def _rank(values: dict[str, float]) -> dict[str, str]:
    order = sorted(values, key=values.get)
    return {'best': order[0], 'median': order[(len(order) - 1) // 2], 'worst': order[-1]}


def _summarize(rows: list[dict[str, Any]], ids: list[str], methods: list[str]) -> dict[str, Any]:
    keys = [*STATS, *(f'{d}_{s}' for d in DIRECTIONS for s in STATS), 'particle_rmse']
    per_method = {
        name: {k: _finite(np.mean([r[k] for r in rows if r['method'] == name])) for k in keys} for name in methods
    }
    primary = per_method[PRIMARY]
    summary: dict[str, Any] = {
        'ids': ids,
        'n_subjects': len(ids),
        'methods': per_method,
        'ranking': _rank({r['id']: r['mean'] for r in rows if r['method'] == PRIMARY}),
        'definition': 'symmetric mean = average of the two directed vertex-to-surface means; '
        'p95 and hausdorff = the larger of the two directions; mm',
        'mean_surface_distance_mm': primary['mean'],
        'hausdorff_mm': primary['hausdorff'],
        'particle_rmse_mm': primary['particle_rmse'],
    }
    for name, key in (('mean_shape', 'mean_shape_baseline_mm'), ('pca_floor', 'pca_floor_mm')):
        if name in per_method:
            base = summary[key] = per_method[name]['mean']
            summary[f'ratio_to_{name}'] = primary['mean'] / base if base > 0 else None
    return summary


def _finite(v: Any) -> float | None:
    """A float for JSON, None for NaN (e.g. no true particles)."""
    return float(v) if np.isfinite(v) else None


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator='\n')
    writer.writeheader()
    for r in rows:
        writer.writerow({k: (f'{v:.6g}' if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def format_report(summary: dict[str, Any]) -> _Markdown:
    """The summary as a markdown table with the ratios to both baselines."""
    methods = summary['methods']
    names = {'deepssm': 'DeepSSM', 'mean_shape': 'mean shape', 'pca_floor': 'PCA floor'}
    lines = [
        f'**{summary["n_subjects"]} test subjects**, surface distances in mm (symmetric).',
        '',
        '| method | mean | RMS | 95th pct. | Hausdorff | particle RMSE |',
        '|---|---|---|---|---|---|',
    ]
    for name, v in methods.items():
        cells = ' | '.join('n/a' if v[k] is None else f'{v[k]:.3f}' for k in (*STATS, 'particle_rmse'))
        lines.append(f'| {names.get(name, name)} | {cells} |')
    lines.append('')
    if summary.get('ratio_to_mean_shape') is not None:
        lines.append(
            f'- DeepSSM / mean shape: **{summary["ratio_to_mean_shape"]:.2f}** '
            '(below 1: the network learned something from the image).'
        )
    if summary.get('ratio_to_pca_floor') is not None:
        lines.append(
            f'- DeepSSM / PCA floor: **{summary["ratio_to_pca_floor"]:.2f}** '
            '(1 would be as good as the kept PCA modes allow).'
        )
    r = summary['ranking']
    lines.append(f'- Best / median / worst DeepSSM subject: `{r["best"]}` / `{r["median"]}` / `{r["worst"]}`.')
    return _Markdown('\n'.join(lines))


def load_analysis(folder: str | os.PathLike) -> AnalysisResult:
    """Read back the result of :func:`analyze_results` from its folder."""
    folder = Path(folder)
    summary = read_json(folder / 'summary.json')
    path = folder / 'distances.csv'
    if not path.is_file():
        raise FileNotFoundError(f'File not found: "{path}"')
    with path.open() as fh:
        rows = [{k: (v if k in ('id', 'method') else float(v)) for k, v in r.items()} for r in csv.DictReader(fh)]
    return AnalysisResult(folder, rows, summary)


# --------------------------------------------------------------------------- wiring from a Config


def baseline_particles(groomed: Any, pca: Any, subject_ids: list[str]) -> dict[str, dict[str, np.ndarray]]:
    """The two baselines of each subject, in its own image frame.

    ``'mean_shape'``: the PCA mean; ``'pca_floor'``: the subject's true groomed
    particles projected onto the PCA's modes. Both are mapped from the groomed
    (world) frame to the subject's image by the inverse of its grooming
    transform, i.e. placed by the same registration as the predictions.

    Args:
        groomed: A :class:`~deepssm_nb.groom.GroomResult`.
        pca: A fitted :class:`~deepssm_nb.pca.ShapePCA` of world-frame particles (M, 3).
        subject_ids: Subjects of ``groomed``.

    Returns:
        ``{'mean_shape': {id: (M, 3)}, 'pca_floor': {id: (M, 3)}}``, in mm.
    """
    from .registration import apply_transform

    out: dict[str, dict[str, np.ndarray]] = {'mean_shape': {}, 'pca_floor': {}}
    for sid in subject_ids:
        subject = groomed[sid]
        to_image = np.linalg.inv(np.asarray(subject.transform, dtype=float))
        world = read_particles(subject.particles)
        out['mean_shape'][sid] = apply_transform(to_image, pca.mean_)
        out['pca_floor'][sid] = apply_transform(to_image, pca.inverse_transform(pca.transform(world[None]))[0])
    return out


def run_analysis(
    cfg: Any,
    cohort: Any = None,
    groomed: Any = None,
    predictions: Any = None,
    *,
    truth: str | None = None,
    progress: bool = True,
) -> AnalysisResult:
    """Analyse the test predictions of a pipeline run, with both baselines.

    Reads the cohort (truths, true particles, mean mesh and particles), the
    grooming transforms (``groom_dir``), the shape PCA (``aug_dir``) and the
    predictions (``pred_dir/local_predictions``); writes the baselines'
    particles to ``analysis_dir/baselines/`` and every output of
    :func:`analyze_results` to ``analysis_dir``. A rerun with unchanged
    inputs reads the previous result back.

    Args:
        cfg: The pipeline :class:`~deepssm_nb.config.Config`.
        cohort: The :class:`~deepssm_nb.data.Cohort`; default: the one ``cfg.data`` names.
        groomed: The :class:`~deepssm_nb.groom.GroomResult`; default: read from ``groom_dir``.
        predictions: The :class:`~deepssm_nb.predict.Predictions`; default: those in ``pred_dir``.
        truth: ``'segmentation'`` (meshed, as the seed does) or ``'mesh'``
            (the cohort's surfaces); default: segmentation when every test
            subject has one, else mesh.
        progress: Show a progress bar.
    """
    from ._validation import look_up_option
    from .data import cohort_from_config
    from .groom import load_groomed
    from .pca import ShapePCA

    paths = cfg.resolved_paths()
    out = paths['analysis_dir']
    pred_dir = (paths['pred_dir'] if predictions is None else Path(predictions.folder)) / 'local_predictions'
    cohort = cohort_from_config(cfg.data) if cohort is None else cohort
    ids = cohort.ids('test')
    if truth is None:
        truth = 'segmentation' if all(cohort[i].segmentation is not None for i in ids) else 'mesh'
    truth = look_up_option(truth, ('segmentation', 'mesh'), name='truth')
    attr = 'segmentation' if truth == 'segmentation' else 'mesh'
    truth_files = [getattr(cohort[i], attr) for i in ids]
    if any(f is None for f in truth_files):
        raise DataError(f'the cohort has no {attr} for some test subjects; use truth="mesh" or "segmentation".')
    truth_dir = Path(truth_files[0]).parent
    groom_json = (paths['groom_dir'] if groomed is None else Path(groomed.root)) / 'groom.json'
    record = StageRecord.of(
        {'truth': truth, 'ids': ids, 'truth_dir': str(truth_dir.resolve())},
        {
            'predictions': [pred_dir / f'{i}.particles' for i in ids],
            'groom': groom_json,
            'truths': truth_files,
            'pca': paths['aug_dir'] / 'PCA_Particle_Info' / 'mean.particles',
        },
    )
    if (out / 'summary.json').is_file() and record.matches(StageRecord.read(out / RECORD_FILE)):
        return load_analysis(out)
    pca = ShapePCA.load(paths['aug_dir'] / 'PCA_Particle_Info')
    groomed = load_groomed(paths['groom_dir']) if groomed is None else groomed
    for name, shapes in baseline_particles(groomed, pca, ids).items():
        for sid, points in shapes.items():
            write_particles(out / 'baselines' / name / f'{sid}.particles', points)
    if cohort.mean_mesh is None or cohort.mean_particles is None:
        raise DataError(f'the cohort in "{cohort.root}" has no mean.vtk / mean.particles to warp.')
    (out / RECORD_FILE).unlink(missing_ok=True)
    result = analyze_results(
        out,
        dict(zip(ids, truth_files)),
        pred_dir,
        (cohort.mean_mesh, cohort.mean_particles),
        baselines={n: out / 'baselines' / n for n in ('mean_shape', 'pca_floor')},
        particles_dir={i: cohort[i].particles for i in ids},
        subject_ids=ids,
        progress=progress,
    )
    write_json(out / RECORD_FILE, {'record': record.to_dict()})  # last: an interrupted analysis runs again
    return result
