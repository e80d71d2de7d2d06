"""Tests of deepssm_nb.loaders on a tiny synthetic TotalData.csv (no other stage needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from deepssm_nb import ConfigError, DataError
from deepssm_nb.augment import read_total_data
from deepssm_nb.datasets import DeepSSMDataset
from deepssm_nb.imageops import downsample_image
from deepssm_nb.loaders import get_test_loader, get_train_val_loaders, split_by_subject
from deepssm_nb.normalization import load_normalization, prepare_image

SIZE = (12, 14, 16)  # x, y, z


def _image(arr_zyx: np.ndarray, spacing=(2.0, 2.0, 2.0), origin=(1.0, 2.0, 3.0)):
    img = sitk.GetImageFromArray(arr_zyx.astype(np.float32))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    return img


def make_total_data(
    root: Path,
    *,
    n_real: int = 6,
    n_aug: int = 2,
    size=SIZE,
    num_particles: int = 10,
    num_latent: int = 3,
    seed: int = 0,
    offset=lambda i: 10.0 * i,
) -> Path:
    """Write images, particles, TotalData.csv (no header) and augmentation.json; return the CSV path.

    Subject ``S<i>`` has intensities around ``offset(i)``; its augmented copies too.
    """
    rng = np.random.default_rng(seed)
    (root / 'images').mkdir(parents=True, exist_ok=True)
    (root / 'particles').mkdir(exist_ok=True)
    rows, entries = [], []

    def add(name: str, base: str, level: float) -> None:
        img = _image(rng.normal(level, 1.0, size[::-1]))
        sitk.WriteImage(img, str(root / 'images' / f'{name}.nrrd'))
        np.savetxt(root / 'particles' / f'{name}.particles', rng.normal(level, 1.0, (num_particles, 3)))
        scores = rng.normal(level, 1.0, num_latent)
        rows.append(
            f'{root}/images/{name}.nrrd,{root}/particles/{name}.particles,' + ','.join(f'{v:.6f}' for v in scores)
        )
        entries.append({'name': name, 'base': base, 'seed': 0})

    for i in range(n_real):
        add(f'S{i}', f'S{i}', offset(i))
    k = 1
    for i in range(n_real):
        for _ in range(n_aug):
            add(f'Generated_sample_{k:04d}', f'S{i}', offset(i))
            k += 1
    (root / 'TotalData.csv').write_text('\n'.join(rows) + '\n')
    (root / 'augmentation.json').write_text(json.dumps({'num_samples': k - 1, 'samples': entries}))
    return root / 'TotalData.csv'


@pytest.fixture
def data(tmp_path):
    return make_total_data(tmp_path / 'aug')


def test_batches_have_documented_keys_shapes_and_dtypes(tmp_path, data):
    train, val = get_train_val_loaders(tmp_path / 'loaders', data, batch_size=4)
    batch = next(iter(train))
    assert set(batch) == {'image', 'scores', 'particles', 'name'}
    assert batch['image'].shape == (4, 1, 16, 14, 12)  # (B, 1, z, y, x)
    assert batch['image'].dtype == batch['scores'].dtype == batch['particles'].dtype == torch.float32
    assert batch['scores'].shape == (4, 3) and batch['particles'].shape == (4, 10, 3)
    assert len(batch['name']) == 4 and all(isinstance(n, str) for n in batch['name'])
    assert len(train.dataset) + len(val.dataset) == 18
    assert isinstance(train.generator, torch.Generator)


def test_no_subject_on_both_sides_of_the_split(tmp_path, data):
    train, val = get_train_val_loaders(tmp_path / 'loaders', data, batch_size=2, random_state=3)
    bases = {e['name']: e['base'] for e in json.loads((data.parent / 'augmentation.json').read_text())['samples']}
    train_bases = {bases[n] for n in train.dataset.names}
    val_bases = {bases[n] for n in val.dataset.names}
    assert train_bases.isdisjoint(val_bases)
    assert len(train_bases) == 5 and len(val_bases) == 1  # round(0.2 * 6) subjects for validation
    stamp = json.loads((tmp_path / 'loaders' / 'loaders.json').read_text())
    assert stamp['val_subjects'] == sorted(val_bases)


def test_split_by_subject_keeps_groups_and_is_seeded():
    bases = [f's{i % 10}' for i in range(100)]
    tr, va = split_by_subject(bases, 0.3, random_state=1)
    assert {bases[i] for i in tr}.isdisjoint({bases[i] for i in va})
    assert len({bases[i] for i in va}) == 3 and len(tr) + len(va) == 100
    _, va2 = split_by_subject(bases, 0.3, random_state=1)
    assert np.array_equal(va, va2)
    assert not np.array_equal(va, split_by_subject(bases, 0.3, random_state=2)[1])


def test_whitening_statistics_come_from_the_training_split_only(tmp_path):
    # validation subjects are far brighter; all-data statistics would differ a lot
    csv = make_total_data(tmp_path / 'aug', n_real=5, n_aug=1, offset=lambda i: 0.0 if i < 4 else 1000.0)
    total = read_total_data(csv)
    val_base = 'S4'
    seed = next(
        s
        for s in range(50)
        if {total.bases[i] for i in split_by_subject(total.bases, 0.2, random_state=s)[1]} == {val_base}
    )
    train, val = get_train_val_loaders(tmp_path / 'loaders', csv, batch_size=2, random_state=seed)
    norm = load_normalization(tmp_path / 'loaders')
    train_vox = np.stack(
        [
            sitk.GetArrayFromImage(sitk.ReadImage(str(total.images[i])))
            for i, b in enumerate(total.bases)
            if b != val_base
        ]
    )
    all_vox = np.stack([sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in total.images])
    assert norm['image_mean'] == pytest.approx(train_vox.mean(), rel=1e-6)
    assert norm['image_std'] == pytest.approx(train_vox.std(), rel=1e-5)
    assert abs(norm['image_mean'] - all_vox.mean()) > 100
    train_scores = total.scores[[i for i, b in enumerate(total.bases) if b != val_base]]
    np.testing.assert_allclose(norm['score_mean'], train_scores.mean(0), rtol=1e-6)
    np.testing.assert_allclose(norm['score_std'], train_scores.std(0), rtol=1e-6)
    assert np.all(np.abs(np.asarray(norm['score_mean']) - total.scores.mean(0)) > 100)
    # whitened training batches are centred; validation uses the same numbers (not re-fitted)
    imgs = torch.cat([b['image'] for b in train])
    assert float(imgs.mean()) == pytest.approx(0.0, abs=1e-4) and float(imgs.std()) == pytest.approx(1.0, abs=1e-3)
    assert float(torch.cat([b['image'] for b in val]).mean()) > 5


def test_reuse_when_unchanged_rebuild_when_down_factor_or_csv_changes(tmp_path):
    data = make_total_data(tmp_path / 'aug', size=(16, 18, 20))
    out = tmp_path / 'loaders'
    get_train_val_loaders(out, data, batch_size=2)
    first = (out / 'train_images.npy').stat().st_mtime_ns
    get_train_val_loaders(out, data, batch_size=5)  # batch size does not touch the arrays
    assert (out / 'train_images.npy').stat().st_mtime_ns == first
    train, _ = get_train_val_loaders(out, data, batch_size=2, down_factor=0.5)
    assert train.dataset[0]['image'].shape == (1, 10, 9, 8)
    assert load_normalization(out)['down_factor'] == 0.5
    assert load_normalization(out)['image_shape'] == [10, 9, 8]
    train, _ = get_train_val_loaders(out, data, batch_size=2, down_factor=1.0)
    assert train.dataset[0]['image'].shape == (1, 20, 18, 16)
    stamp = json.loads((out / 'loaders.json').read_text())['record']['inputs']
    data.write_text(data.read_text())  # same content, new mtime
    os.utime(data, ns=(stamp['csv'][2] + 10**9, stamp['csv'][2] + 10**9))
    get_train_val_loaders(out, data, batch_size=2)
    assert json.loads((out / 'loaders.json').read_text())['record']['inputs']['csv'][2] == stamp['csv'][2] + 10**9
    assert not list(out.glob('.build-*'))  # no leftovers of the atomic rebuilds


def test_shuffle_is_seeded_and_the_generator_state_can_be_checkpointed(tmp_path, data):
    out = tmp_path / 'loaders'
    a, _ = get_train_val_loaders(out, data, batch_size=3, random_state=7)
    b, _ = get_train_val_loaders(out, data, batch_size=3, random_state=7)
    names_a = [n for batch in a for n in batch['name']]
    assert names_a == [n for batch in b for n in batch['name']]
    state = a.generator.get_state()
    epoch2 = [n for batch in a for n in batch['name']]
    a.generator.set_state(state)
    assert [n for batch in a for n in batch['name']] == epoch2
    assert epoch2 != names_a


def test_dataset_reads_images_from_disk_not_from_memory(tmp_path):
    # 300 volumes of 32^3 float32 (38 MB): the dataset holds no image array, and reading all of them
    # does not grow the resident memory by more than a few MB
    folder = tmp_path / 'loaders'
    folder.mkdir()
    arr = np.lib.format.open_memmap(folder / 'train_images.npy', mode='w+', dtype=np.float32, shape=(300, 32, 32, 32))
    for i in range(300):
        arr[i] = i
    del arr
    np.save(folder / 'train_scores.npy', np.zeros((300, 2), np.float32))
    np.save(folder / 'train_particles.npy', np.zeros((300, 4, 3), np.float32))
    (folder / 'train_names.txt').write_text(''.join(f'n{i}\n' for i in range(300)))
    norm = {'image_mean': 0.0, 'image_std': 1.0, 'score_mean': [0, 0], 'score_std': [1, 1]}
    ds = DeepSSMDataset(folder, 'train', norm)
    assert not any(isinstance(v, np.ndarray) and v.nbytes > 10**5 for v in vars(ds).values())
    assert isinstance(ds.images, np.memmap) and ds.images.shape == (300, 32, 32, 32)
    loader = torch.utils.data.DataLoader(ds, batch_size=10)

    def rss_mb() -> float:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20

    if not Path('/proc/self/statm').exists():
        pytest.skip('no /proc on this platform')
    it = iter(loader)
    firsts = []
    rss = []
    for _ in range(3):  # 100 volumes (13 MB) per window; the allocator settles in the first one
        firsts += [float(v) for _, b in zip(range(10), it) for v in b['image'][:, 0, 0, 0, 0]]
        rss.append(rss_mb())
    assert firsts == [float(i) for i in range(300)]
    assert rss[2] - rss[1] < 2 and rss[2] - rss[0] < 6


def test_test_loader_keeps_order_and_names_and_uses_training_statistics(tmp_path, data):
    out = tmp_path / 'loaders'
    get_train_val_loaders(out, data, batch_size=2)
    norm = load_normalization(out)
    files = [data.parent / 'images' / f'{n}.nrrd' for n in ('S3', 'S0', 'S5')]
    test = get_test_loader(out, files)
    batches = list(test)
    assert [b['name'] for b in batches] == [['S3'], ['S0'], ['S5']]
    assert set(batches[0]) == {'image', 'name'}
    raw = sitk.GetArrayFromImage(sitk.ReadImage(str(files[1])))
    expected = (raw - norm['image_mean']) / norm['image_std']
    np.testing.assert_allclose(batches[1]['image'][0, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
    x = prepare_image(sitk.ReadImage(str(files[1])), norm)
    np.testing.assert_allclose(x.numpy(), batches[1]['image'].numpy(), rtol=1e-6, atol=1e-6)
    assert (out / 'test_names.txt').read_text().split() == ['S3', 'S0', 'S5']


def test_downsampling_keeps_extent_and_constant_images():
    img = _image(np.full((32, 28, 24), 7.0), spacing=(1.0, 2.0, 3.0))
    small = downsample_image(img, 0.5)
    assert small.GetSize() == (12, 14, 16)
    np.testing.assert_allclose(small.GetSpacing(), (2.0, 4.0, 6.0))
    np.testing.assert_allclose(sitk.GetArrayFromImage(small), 7.0, rtol=1e-5)
    # the physical box (first corner to last corner) is unchanged
    for im in (img, small):
        lo = np.array(im.GetOrigin()) - np.array(im.GetSpacing()) / 2
        np.testing.assert_allclose(lo, np.array(img.GetOrigin()) - np.array(img.GetSpacing()) / 2)
    # anti-aliasing: a one-voxel checkerboard averages out instead of aliasing
    z, y, x = np.indices((16, 16, 16))
    checker = downsample_image(_image(((x + y + z) % 2).astype(float)), 0.5)
    assert float(np.abs(sitk.GetArrayFromImage(checker)[1:-1, 1:-1, 1:-1] - 0.5).max()) < 0.1


# --------------------------------------------------------------------------- bad input


@pytest.mark.bad_input
def test_csv_with_missing_columns_or_files_names_row_and_file(tmp_path, data):
    lines = data.read_text().splitlines()
    bad = tmp_path / 'bad.csv'
    bad.write_text('\n'.join([lines[0], 'only_one_column', lines[2].replace('S2.nrrd', 'nope.nrrd')]) + '\n')
    with pytest.raises(DataError) as err:
        get_train_val_loaders(tmp_path / 'l', bad)
    msg = str(err.value)
    assert 'line 2' in msg and 'columns' in msg
    assert 'line 3' in msg and 'nope.nrrd' in msg


@pytest.mark.bad_input
def test_images_of_different_sizes_are_rejected(tmp_path, data):
    sitk.WriteImage(_image(np.zeros((16, 14, 13))), str(data.parent / 'images' / 'Generated_sample_0003.nrrd'))
    with pytest.raises(DataError, match='Generated_sample_0003.nrrd.*size'):
        get_train_val_loaders(tmp_path / 'l', data, random_state=0)
    assert not (tmp_path / 'l' / 'loaders.json').exists()


@pytest.mark.bad_input
@pytest.mark.parametrize('factor', [0.0, -0.5, 1.5, float('nan')])
def test_down_factor_outside_unit_interval(tmp_path, data, factor):
    with pytest.raises(ConfigError, match='down_factor'):
        get_train_val_loaders(tmp_path / 'l', data, down_factor=factor)


@pytest.mark.bad_input
def test_empty_csv(tmp_path):
    (tmp_path / 'TotalData.csv').write_text('\n')
    with pytest.raises(DataError, match='holds no rows'):
        get_train_val_loaders(tmp_path / 'l', tmp_path / 'TotalData.csv')


@pytest.mark.bad_input
def test_images_too_small_after_downsampling(tmp_path, data):
    with pytest.raises(DataError, match='at least 8'):
        get_train_val_loaders(tmp_path / 'l', data, down_factor=0.3)


@pytest.mark.bad_input
def test_missing_csv_and_missing_augmentation_entries(tmp_path, data):
    with pytest.raises(FileNotFoundError, match='nothing.csv'):
        get_train_val_loaders(tmp_path / 'l', tmp_path / 'nothing.csv')
    info = json.loads((data.parent / 'augmentation.json').read_text())
    info['samples'] = info['samples'][:-1]
    (data.parent / 'augmentation.json').write_text(json.dumps(info))
    with pytest.raises(DataError, match='Generated_sample_0012'):
        get_train_val_loaders(tmp_path / 'l', data)


@pytest.mark.bad_input
def test_test_loader_needs_training_statistics_and_the_same_grid(tmp_path, data):
    img = data.parent / 'images' / 'S0.nrrd'
    with pytest.raises(FileNotFoundError, match='normalization.json'):
        get_test_loader(tmp_path / 'l', [img])
    get_train_val_loaders(tmp_path / 'l', data)
    with pytest.raises(ConfigError, match='down_factor'):
        get_test_loader(tmp_path / 'l', [img], down_factor=0.5)
    other = tmp_path / 'other.nrrd'
    sitk.WriteImage(_image(np.zeros((10, 14, 12))), str(other))
    with pytest.raises(DataError, match='same reference grid'):
        get_test_loader(tmp_path / 'l', [other])
    with pytest.raises(DataError, match='empty'):
        get_test_loader(tmp_path / 'l', [])


def test_plots_return_figures(tmp_path, data):
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from deepssm_nb.viz import loaders as viz

    out = tmp_path / 'loaders'
    train, _ = get_train_val_loaders(out, data, batch_size=3)
    norm = load_normalization(out)
    batch = next(iter(train))
    assert len(viz.plot_batch(batch, norm, max_samples=2).axes) == 6
    assert len(viz.plot_intensity_histogram(train, norm, max_batches=2).axes) == 2
    assert len(viz.plot_split(out).axes[0].patches) == 6  # one bar per subject
    pts = np.array([[1.0, 2.0, 3.0], [5.0, 6.0, 7.0]])
    np.testing.assert_allclose(viz.points_to_index(pts, norm['grid']), [[0, 0, 0], [2, 2, 2]])
    fig = viz.plot_slices(data.parent / 'images' / 'S0.nrrd', [pts, pts + 1], labels=['a', 'b'], title='t')
    assert len(fig.axes) == 3
    plt.close('all')


@pytest.mark.parametrize('workers', [1, 3])
def test_images_are_read_ahead_in_parallel_but_yielded_in_order(monkeypatch, workers):
    import random
    import threading
    import time

    from deepssm_nb import datasets

    threads, rng = set(), random.Random(0)
    delays = {i: rng.uniform(0.005, 0.02) for i in range(12)}

    def slow_load(path, factor, down_dir, *, name):
        threads.add(threading.get_ident())
        time.sleep(delays[int(path.stem)])  # later files often finish first
        if path.stem == '11':
            raise DataError(f'"{path}" is not an image')
        return path

    monkeypatch.setattr(datasets, 'load_image', slow_load)
    paths = [Path(f'{i}.nrrd') for i in range(11)]
    assert list(datasets.images_in_order(paths, 1.0, None, workers=workers)) == paths
    assert len(threads) == workers
    with pytest.raises(DataError, match='11.nrrd'):
        list(datasets.images_in_order([*paths, Path('11.nrrd')], 1.0, None, workers=workers))


def test_normalizers_fit_on_the_training_split_and_whiten_as_the_dataset_does(tmp_path, data):
    from deepssm_nb.normalization import ImageNormalizer, ScoreNormalizer

    rng = np.random.default_rng(0)
    volumes = [rng.normal(5.0, 3.0, size=(4, 5, 6)).astype(np.float32) for _ in range(3)]
    streamed = ImageNormalizer()
    for v in volumes:
        streamed.partial_fit(v)
    every = np.concatenate([v.ravel() for v in volumes]).astype(np.float64)
    assert streamed.n_voxels_ == every.size
    np.testing.assert_allclose([streamed.mean_, streamed.std_], [every.mean(), every.std()], rtol=1e-6)
    back = ImageNormalizer.from_record(streamed.to_record())
    np.testing.assert_array_equal(back.transform(volumes[0]), streamed.transform(volumes[0]))
    np.testing.assert_allclose(back.inverse_transform(back.transform(volumes[0])), volumes[0], atol=1e-5)
    scores = rng.normal(size=(10, 3)) * [1.0, 10.0, 0.0]  # a constant mode keeps a scale of 1
    sn = ScoreNormalizer().fit(scores)
    assert sn.std_[2] == 1.0
    np.testing.assert_allclose(sn.transform(scores)[:, :2].std(axis=0), 1.0, rtol=1e-5)
    np.testing.assert_allclose(sn.inverse_transform(sn.transform(scores)), scores, atol=1e-5)
    # the stored loaders: the saved record is the training split's, and items are whitened with it
    train, _ = get_train_val_loaders(tmp_path / 'l', data, batch_size=2)
    norm = load_normalization(tmp_path / 'l')
    raw = np.load(tmp_path / 'l' / 'train_images.npy')
    fitted = ImageNormalizer().fit(raw)
    assert fitted.to_record() == pytest.approx({'image_mean': norm['image_mean'], 'image_std': norm['image_std']})
    item = train.dataset[0]
    np.testing.assert_array_equal(item['image'][0].numpy(), ImageNormalizer.from_record(norm).transform(raw[0]))
    scores_raw = np.load(tmp_path / 'l' / 'train_scores.npy')
    expected = ScoreNormalizer.from_record(norm).transform(scores_raw[0]).astype(np.float32)
    np.testing.assert_array_equal(item['scores'].numpy(), expected)


@pytest.mark.bad_input
def test_normalizers_say_when_they_are_not_fitted():
    from deepssm_nb import NotFittedError
    from deepssm_nb.normalization import ImageNormalizer, ScoreNormalizer

    with pytest.raises(NotFittedError, match='ImageNormalizer has seen no image'):
        ImageNormalizer().transform(np.zeros(3))
    with pytest.raises(NotFittedError, match='ScoreNormalizer is not fitted'):
        ScoreNormalizer().transform(np.zeros(3))
    with pytest.raises(DataError, match=r'scores: expected an \(S, L\) array with S >= 1; got shape \(3,\)'):
        ScoreNormalizer().fit(np.zeros(3))
    with pytest.raises(ValueError, match='read from a record'):
        ImageNormalizer.from_record({'image_mean': 0.0, 'image_std': 1.0}).partial_fit(np.zeros(3))
