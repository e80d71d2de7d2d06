"""The augmentation stage: files, formats, reproducibility, resuming and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from deepssm_nb import ConfigError, DataError, augment, get_profile
from deepssm_nb.augment import (
    load_augmentation,
    read_total_data,
    regenerate_sample,
    run_augmentation,
    run_data_augmentation,
    sample_seed,
    write_total_data,
)
from deepssm_nb.imageops import ImageGrid
from deepssm_nb.io import read_particles, write_particles
from deepssm_nb.pca import ShapePCA

SPACING, SHAPE, ORIGIN, RAMP = 2.0, (22, 20, 24), (-10.0, 4.0, 30.0), 3.0  # RAMP: partial-volume width, voxels


def _sphere_points(n):
    i = np.arange(n) + 0.5
    phi, theta = np.arccos(1 - 2 * i / n), np.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)


def _subject(folder: Path, name: str, radii: np.ndarray, center: np.ndarray) -> tuple[Path, Path]:
    """A CT-like image of an ellipsoid (partial-volume edge) and 96 surface particles."""
    img = sitk.Image(SHAPE[2], SHAPE[1], SHAPE[0], sitk.sitkInt16)
    img.SetSpacing((SPACING,) * 3)
    img.SetOrigin(ORIGIN)
    grid = ImageGrid.from_image(img)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in SHAPE], indexing='ij'), -1)
    rel = grid.index_to_physical(idx) - center
    f = ((rel / radii) ** 2).sum(-1)
    dist = (f - 1) / np.linalg.norm(2 * rel / radii**2, axis=-1).clip(1e-9) / SPACING  # voxels
    arr = np.round(1000 * np.clip(0.5 - dist / RAMP, 0, 1) - 500).astype(np.int16)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    sitk.WriteImage(out, str(folder / f'{name}.nrrd'))
    write_particles(folder / f'{name}.particles', center + _sphere_points(96) * radii)
    return folder / f'{name}.nrrd', folder / f'{name}.particles'


@pytest.fixture(scope='module')
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp('cohort')
    rng = np.random.default_rng(0)
    center = np.array(ORIGIN) + np.array(SHAPE[::-1]) * SPACING / 2
    files = [
        _subject(
            folder,
            f's{i}',
            np.array([13.0, 10.0, 11.0]) * (1 + 0.08 * rng.normal(size=3)),
            center + rng.normal(scale=1.0, size=3),
        )
        for i in range(6)
    ]
    return [f[0] for f in files], [f[1] for f in files]


@pytest.fixture(scope='module')
def augmented(cohort, tmp_path_factory):
    out = tmp_path_factory.mktemp('aug')
    modes = run_data_augmentation(out, *cohort, num_samples=5, percent_variability=0.9, random_state=3, progress=False)
    return out, modes


def _bytes(folder: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for sub in ('Generated-Images', 'Generated-Particles')
        for p in sorted((folder / sub).iterdir())
    }


def test_outputs_follow_the_shapeworks_layout(cohort, augmented):
    images, points = cohort
    out, modes = augmented
    pca = ShapePCA(percent_variability=0.9).fit(np.stack([read_particles(p) for p in points]))
    assert modes == pca.n_components_
    assert sorted(p.name for p in (out / 'Generated-Images').iterdir()) == [
        f'Generated_sample_{i:04d}.nrrd' for i in range(1, 6)
    ]
    assert (out / 'PCA_Particle_Info' / 'pcamode0.particles').is_file()
    lines = (out / 'TotalData.csv').read_text().splitlines()
    assert len(lines) == len(images) + 5
    for line, img, pts, s in zip(lines, images, points, pca.scores_):  # real rows first, no header
        cols = line.split(',')
        assert cols[0] == str(img.resolve()) and cols[1] == str(pts.resolve())
        np.testing.assert_allclose([float(c) for c in cols[2:]], s, atol=1e-9)
    table = read_total_data(out / 'TotalData.csv')
    assert table.scores.shape == (len(images) + 5, modes)
    assert table.generated.tolist() == [False] * len(images) + [True] * 5
    for line in lines:  # scores are repr(float): they round-trip exactly
        assert all(repr(float(c)) == c for c in line.split(',')[2:])
    for row in range(len(images), len(lines)):
        np.testing.assert_allclose(
            read_particles(table.particles[row]), pca.inverse_transform(table.scores[row]), atol=1e-6
        )
        img = sitk.ReadImage(table.images[row])
        assert img.GetPixelID() == sitk.sitkInt16 and img.GetSize() == SHAPE[::-1]
        assert img.GetOrigin() == ORIGIN


def test_json_records_seeds_bases_and_parameters(cohort, augmented):
    out, modes = augmented
    info = json.loads((out / 'augmentation.json').read_text())
    assert info['complete'] is True and info['n_components'] == modes and info['num_samples'] == 5
    assert info['parameters']['random_state'] == 3 and info['parameters']['sampler'] == 'kde'
    assert info['parameters']['landmark_step'] == 2 and info['parameters']['grid_step'] == 4.0
    rows = info['rows']
    ids = [f's{i}' for i in range(6)]
    assert [r['name'] for r in rows[:6]] == ids and [r['base'] for r in rows[:6]] == ids
    assert all(r['seed'] is None for r in rows[:6])
    for i, r in enumerate(rows[6:], start=1):
        assert r['name'] == f'Generated_sample_{i:04d}' and r['base'] in ids
        assert r['seed'] == sample_seed(3, i)
    assert info['sampler']['method'] == 'kde' and info['sampler']['bandwidth'] > 0


def test_generated_images_agree_with_their_particles(augmented):
    out, _ = augmented
    table = read_total_data(out / 'TotalData.csv')
    for row in np.flatnonzero(table.generated):
        img = sitk.ReadImage(table.images[row])
        arr = sitk.GetArrayFromImage(img).astype(float)
        idx = ImageGrid.from_image(img).physical_to_index(read_particles(table.particles[row]))
        value = (ndimage.map_coordinates(arr, idx.T, order=1) + 500) / 1000  # 0.5 on the surface
        assert np.abs(0.5 - value).max() * RAMP <= 1.0  # within 1 voxel of the warped surface


def test_any_sample_regenerates_byte_for_byte_with_any_process_count(cohort, augmented, tmp_path):
    out, _ = augmented
    img, pts = regenerate_sample(out, 4, tmp_path / 'one')
    assert img.read_bytes() == (out / 'Generated-Images' / 'Generated_sample_0004.nrrd').read_bytes()
    assert pts.read_bytes() == (out / 'Generated-Particles' / 'Generated_sample_0004.particles').read_bytes()
    run_data_augmentation(
        tmp_path / 'two', *cohort, num_samples=5, percent_variability=0.9, random_state=3, processes=2, progress=False
    )
    assert _bytes(tmp_path / 'two') == _bytes(out)
    with pytest.raises(ValueError, match='index'):
        regenerate_sample(out, 6, tmp_path)


def test_interrupted_run_resumes_where_it_stopped(cohort, augmented, tmp_path, monkeypatch):
    reference, _ = augmented
    out = tmp_path / 'aug'
    real_generate, calls = augment._generate, []

    def interrupted(task):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(task['name'])
        return real_generate(task)

    monkeypatch.setattr(augment, '_generate', interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_data_augmentation(out, *cohort, num_samples=5, percent_variability=0.9, random_state=3, progress=False)
    monkeypatch.setattr(augment, '_generate', real_generate)
    assert not (out / 'TotalData.csv').exists()
    assert json.loads((out / 'augmentation.json').read_text())['complete'] is False
    assert len(list((out / 'Generated-Images').iterdir())) == 3
    (out / 'Generated-Images' / '.Generated_sample_0005.nrrd.abc.tmp.nrrd').write_bytes(b'half')
    done = {p.name: p.stat().st_mtime_ns for p in (out / 'Generated-Images').iterdir() if not p.name.startswith('.')}
    run_data_augmentation(out, *cohort, num_samples=5, percent_variability=0.9, random_state=3, progress=False)
    assert all((out / 'Generated-Images' / n).stat().st_mtime_ns == t for n, t in done.items())  # not redone
    assert _bytes(out) == _bytes(reference)
    assert not list((out / 'Generated-Images').glob('.*'))
    stamp = (out / 'TotalData.csv').stat().st_mtime_ns
    run_data_augmentation(out, *cohort, num_samples=5, percent_variability=0.9, random_state=3, progress=False)
    assert (out / 'TotalData.csv').stat().st_mtime_ns == stamp  # a finished stage is left untouched
    # fewer samples: the extra files go; other parameters: everything is regenerated
    run_data_augmentation(out, *cohort, num_samples=2, percent_variability=0.9, random_state=3, progress=False)
    assert len(read_total_data(out / 'TotalData.csv')) == 6 + 2
    assert len(list((out / 'Generated-Particles').iterdir())) == 2
    run_data_augmentation(
        out, *cohort, num_samples=2, sampler='gaussian', percent_variability=0.9, random_state=3, progress=False
    )
    assert _bytes(out)['Generated_sample_0001.particles'] != _bytes(reference)['Generated_sample_0001.particles']


def test_run_augmentation_reads_a_groomed_cohort(cohort, tmp_path):
    images, points = cohort
    groomed = SimpleNamespace(
        images=lambda split: images,
        particle_files=lambda split: points,
        ids=lambda split: [f'subject{i}' for i in range(len(images))],
    )
    cfg = get_profile('smoke', work_dir=str(tmp_path))
    cfg.augment.num_samples, cfg.augment.processes = 2, 1
    cfg.augment.warp_from = 'groomed'  # this stand-in for a groomed cohort has no original scans
    result = run_augmentation(cfg, groomed, progress=False)
    modes = result.num_modes
    aug_dir = cfg.resolved_paths()['aug_dir']
    assert result.folder == aug_dir and result.pca.n_components_ == modes
    assert modes == json.loads((aug_dir / 'augmentation.json').read_text())['n_components']
    table = read_total_data(aug_dir / 'TotalData.csv')
    assert result.table.names == table.names and np.array_equal(result.table.scores, table.scores)
    assert table.scores.shape == (len(images) + 2, modes)
    bases = {r['base'] for r in json.loads((aug_dir / 'augmentation.json').read_text())['rows']}
    assert bases <= {f'subject{i}' for i in range(len(images))}


@pytest.mark.bad_input
def test_bad_input_names_the_file(cohort, tmp_path):
    images, points = cohort
    short = tmp_path / 'short.particles'
    write_particles(short, read_particles(points[2])[:50])
    with pytest.raises(DataError, match='short.particles.*50 particles; expected 96'):
        run_data_augmentation(tmp_path / 'a', images, [*points[:2], short, *points[3:]], progress=False)
    nan = tmp_path / 'nan.particles'
    nan.write_text((points[1].read_text()).replace(points[1].read_text().split()[4], 'nan', 1))
    with pytest.raises(DataError, match='nan.particles'):
        run_data_augmentation(tmp_path / 'a', images, [points[0], nan, *points[2:]], progress=False)
    with pytest.raises(DataError, match=r'at least 2 training shapes for a PCA; got 1 \(".*s0.particles"\)'):
        run_data_augmentation(tmp_path / 'a', images[:1], points[:1], progress=False)
    with pytest.raises(DataError, match='one particle file per image'):
        run_data_augmentation(tmp_path / 'a', images, points[:-1], progress=False)
    with pytest.raises(FileNotFoundError, match='missing.nrrd'):
        run_data_augmentation(tmp_path / 'a', [tmp_path / 'missing.nrrd', *images[1:]], points, progress=False)
    with pytest.raises(ConfigError, match="Did you mean 'gaussian'"):
        run_data_augmentation(tmp_path / 'a', images, points, sampler='gausian', progress=False)
    with pytest.raises(ConfigError, match='num_samples'):
        run_data_augmentation(tmp_path / 'a', images, points, num_samples=-1, progress=False)
    bad_image = tmp_path / 'nan_image.nrrd'
    arr = np.zeros(SHAPE, np.float32)
    arr[3, 3, 3] = np.nan
    nan_img = sitk.GetImageFromArray(arr)
    nan_img.SetSpacing((SPACING,) * 3)
    sitk.WriteImage(nan_img, str(bad_image))
    with pytest.raises(DataError, match='nan_image.nrrd'):
        run_data_augmentation(
            tmp_path / 'b', [bad_image, *images[1:]], points, num_samples=6, random_state=0, progress=False
        )
    with pytest.raises(DataError, match='TotalData.csv", line 1'):
        (tmp_path / 'TotalData.csv').write_text('a.nrrd,b.particles\n')
        read_total_data(tmp_path / 'TotalData.csv')


def test_plots_return_figures(cohort, augmented):
    from matplotlib.figure import Figure

    from deepssm_nb.viz import augment as viz

    out, modes = augmented
    pca = ShapePCA(percent_variability=0.9).fit(np.stack([read_particles(p) for p in cohort[1]]))
    figures = [
        viz.plot_cumulative_variance(pca),
        viz.plot_score_scatter_matrix(out / 'TotalData.csv', max_modes=3),
        viz.plot_score_violins(out / 'TotalData.csv'),
        viz.plot_generated_gallery(out, num=4, axis='z'),
    ]
    assert all(isinstance(f, Figure) for f in figures)
    assert len(figures[1].axes) == min(3, modes) ** 2
    assert len([ax for ax in figures[3].axes if ax.get_images()]) == 4
    for fig in figures:
        fig.canvas.draw()


@pytest.mark.bad_input
def test_load_augmentation_names_a_missing_or_unfinished_folder(augmented, tmp_path):
    out, modes = augmented
    back = load_augmentation(out)
    assert back.num_modes == modes and len(back.table) == len(read_total_data(out / 'TotalData.csv'))
    with pytest.raises(FileNotFoundError, match=r'No augmentation in ".*nowhere": "augmentation.json" is missing'):
        load_augmentation(tmp_path / 'nowhere')
    info = json.loads((out / 'augmentation.json').read_text())
    (tmp_path / 'half').mkdir()
    (tmp_path / 'half' / 'augmentation.json').write_text(json.dumps({**info, 'complete': False}))
    with pytest.raises(FileNotFoundError, match='did not finish'):
        load_augmentation(tmp_path / 'half')


def test_total_data_round_trips_bit_for_bit(augmented, tmp_path):
    out, _ = augmented
    table = read_total_data(out / 'TotalData.csv')
    copy = write_total_data(tmp_path / 'TotalData.csv', table.images, table.particles, table.scores)
    assert copy.read_bytes() == (out / 'TotalData.csv').read_bytes()
    with pytest.raises(ValueError, match='one image, particle file and score row per sample; got 2 images'):
        write_total_data(tmp_path / 'x.csv', table.images[:2], table.particles, table.scores)
