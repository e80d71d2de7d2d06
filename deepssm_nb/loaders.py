"""Train, validation and test loaders backed by ``.npy`` files on disk.

The images of each split are converted once into one ``(S, D, H, W)`` float32
``.npy`` file of RAW intensities (downsampled if asked). A dataset reads one
row of that file per sample, so memory does not grow with the number of
samples. Whitening happens when a sample is read, with statistics fitted on
the training split only and saved in ``normalization.json``; the validation
and test images (and any new image at prediction time) use the same numbers.

Files in ``loader_dir``:

* ``{train,val,test}_images.npy``: (S, D, H, W) float32, raw, indexed [z, y, x].
* ``{train,val}_scores.npy``: (S, L) float32, raw PCA scores.
* ``{train,val}_particles.npy``: (S, M, 3) float32, world mm.
* ``{train,val,test}_names.txt``: one sample name per line.
* ``normalization.json``: ``image_mean``, ``image_std`` (scalars), ``score_mean``,
  ``score_std`` (L each), ``image_shape`` [D, H, W], ``down_factor``, ``grid``
  (spacing, origin, direction of the stored images), ``num_latent``,
  ``num_correspondences``.
* ``loaders.json`` / ``test_loader.json``: what the arrays were built from, as a
  :class:`~deepssm_nb.freshness.StageRecord` (``down_factor``, ``val_fraction``, seed; the CSV and
  ``augmentation.json``, or the test images, stamped), and the split. When any of it changes the arrays are
  rebuilt, otherwise they are reused.

The split is made by subject: every row of ``TotalData.csv`` is assigned to
the real subject it derives from (``augmentation.json``), and whole subjects
go to one side.

Example:
    >>> train, val = get_train_val_loaders('loaders', 'aug/TotalData.csv', batch_size=8)   # doctest: +SKIP
    >>> batch = next(iter(train))                                                          # doctest: +SKIP
    >>> batch['image'].shape, batch['scores'].shape, batch['particles'].shape              # doctest: +SKIP
    (torch.Size([8, 1, 72, 51, 56]), torch.Size([8, 6]), torch.Size([8, 512, 3]))
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ._validation import DataError, check_in_range, check_random_state
from .augment import TotalData, read_total_data
from .datasets import DeepSSMDataset, convert_images
from .freshness import StageRecord
from .io import read_json, write_json
from .normalization import ImageNormalizer, ScoreNormalizer, load_normalization

__all__ = [
    'Loaders',
    'build_loaders',
    'get_test_loader',
    'get_train_val_loaders',
    'load_train_val_loaders',
    'split_by_subject',
]

_VERSION = 1


def split_by_subject(
    bases: Sequence[str], val_fraction: float = 0.2, *, random_state: int | np.random.Generator = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into train and validation so that each base subject is on one side only.

    Args:
        bases: The base subject of each row.
        val_fraction: Fraction of the SUBJECTS (not rows) put in validation;
            at least one subject goes to each side.
        random_state: Seed or generator.

    Returns:
        ``(train_idx, val_idx)``, sorted row indices.

    Raises:
        DataError: Fewer than two distinct subjects.
    """
    check_in_range(val_fraction, name='val_fraction', low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    subjects = sorted(set(bases))
    if len(subjects) < 2:
        raise DataError(
            f'the data hold {len(subjects)} subject(s) {subjects}; a train/validation split needs at least 2.'
        )
    rng = np.random.default_rng(random_state)
    order = rng.permutation(len(subjects))
    n_val = int(min(max(round(val_fraction * len(subjects)), 1), len(subjects) - 1))
    val_subjects = {subjects[i] for i in order[:n_val]}
    is_val = np.array([b in val_subjects for b in bases])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


# --------------------------------------------------------------------------- images


# --------------------------------------------------------------------------- building


def _install(tmp: Path, loader_dir: Path, stamp_name: str, stamp: dict) -> None:
    """Move finished files from ``tmp`` into place; write the stamp last."""
    (loader_dir / stamp_name).unlink(missing_ok=True)
    for f in tmp.iterdir():
        os.replace(f, loader_dir / f.name)
    write_json(loader_dir / stamp_name, stamp)


def _make_loaders(loader_dir: Path, batch_size: int, seed: int, num_workers: int) -> tuple[DataLoader, DataLoader]:
    norm = load_normalization(loader_dir)
    generator = torch.Generator().manual_seed(seed)
    kw = {'num_workers': num_workers, 'persistent_workers': num_workers > 0, 'pin_memory': torch.cuda.is_available()}
    train = DataLoader(
        DeepSSMDataset(loader_dir, 'train', norm), batch_size=batch_size, shuffle=True, generator=generator, **kw
    )
    # The validation loader draws its worker seed from a generator of its own, not from the global torch stream:
    # persistent workers draw it once, a loader without workers at every evaluation, and dropout must not notice.
    val = DataLoader(
        DeepSSMDataset(loader_dir, 'val', norm),
        batch_size=batch_size,
        shuffle=False,
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )
    return train, val


def get_train_val_loaders(
    loader_dir: str | os.PathLike,
    data_aug_csv: str | os.PathLike | TotalData,
    batch_size: int = 8,
    down_factor: float = 1.0,
    down_dir: str | os.PathLike | None = None,
    *,
    val_fraction: float = 0.2,
    random_state: int | np.random.Generator = 0,
    num_workers: int = 0,
) -> tuple[DataLoader, DataLoader]:
    """Split the augmented data by subject and build the train and validation loaders.

    Every row of ``TotalData.csv`` belongs to a base subject (read from
    ``augmentation.json`` next to the CSV); whole subjects go to one side, so
    a subject's augmented copies never appear on both. Image and score
    whitening are fitted on the training rows only. Arrays are reused when
    the CSV, ``down_factor``, ``val_fraction`` and seed are unchanged.

    Args:
        loader_dir: Output folder.
        data_aug_csv: ``TotalData.csv`` (no header: ``image,particles,score_1..score_L``), or the
            :class:`~deepssm_nb.augment.TotalData` read from it.
        batch_size: Training (and validation) batch size.
        down_factor: Image downsampling factor in (0, 1]; 1 means none.
        down_dir: Optional folder to keep the downsampled images as ``.nrrd``
            (in a subfolder per factor).
        val_fraction: Fraction of subjects used for validation.
        random_state: Seed of the split and of the shuffling.
        num_workers: DataLoader worker processes.

    Returns:
        ``(train_loader, val_loader)``; ``train_loader.generator`` is the
        ``torch.Generator`` of the shuffling (its state can be checkpointed).

    Raises:
        ConfigError: An argument out of range.
        DataError: Bad CSV rows, images of different sizes, too few subjects.
        FileNotFoundError: The CSV or a file it names is missing.
    """
    loader_dir = Path(loader_dir)
    check_in_range(batch_size, name='batch_size', low=1, integer=True)
    check_in_range(down_factor, name='down_factor', low=0.0, high=1.0, low_inclusive=False)
    check_in_range(val_fraction, name='val_fraction', low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    check_in_range(num_workers, name='num_workers', low=0, integer=True)
    seed = check_random_state(random_state)
    table = data_aug_csv if isinstance(data_aug_csv, TotalData) else None
    if table is not None and table.path is None:
        raise ValueError('data_aug_csv: expected a TotalData read from its CSV (its path is the cache key); got none.')
    csv = Path(table.path if table is not None else data_aug_csv)
    if not csv.is_file():
        raise FileNotFoundError(f'Augmented data CSV not found: "{csv}". Run the augmentation stage first.')
    stamp = {'version': _VERSION, 'down_factor': float(down_factor), 'val_fraction': float(val_fraction), 'seed': seed}
    record = StageRecord.of(stamp, {'csv': csv, 'augmentation_json': csv.parent / 'augmentation.json'})
    if not record.matches(StageRecord.read(loader_dir / 'loaders.json')):
        stamp = {**stamp, 'record': record.to_dict()}
        _build_train_val(
            loader_dir,
            read_total_data(csv) if table is None else table,
            stamp,
            down_factor,
            Path(down_dir) if down_dir is not None else None,
        )
    return _make_loaders(loader_dir, batch_size, seed, num_workers)


def _build_train_val(loader_dir: Path, data: TotalData, stamp: dict, factor: float, down_dir: Path | None) -> None:
    train_idx, val_idx = split_by_subject(data.bases, stamp['val_fraction'], random_state=stamp['seed'])
    loader_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix='.build-', dir=loader_dir))
    try:
        stats = {}
        images = ImageNormalizer()  # fitted on the training images only
        for prefix, idx in (('train', train_idx), ('val', val_idx)):
            paths = [data.images[i] for i in idx]
            grid = convert_images(
                paths,
                tmp / f'{prefix}_images.npy',
                factor=factor,
                down_dir=down_dir,
                desc=f'{prefix} images',
                expect=stats['shape'] if stats else None,
                normalizer=images if prefix == 'train' else None,
            )
            if not stats:
                stats = {'grid': grid, 'shape': np.load(tmp / 'train_images.npy', mmap_mode='r').shape[1:]}
            np.save(tmp / f'{prefix}_scores.npy', data.scores[idx].astype(np.float32))
            np.save(tmp / f'{prefix}_particles.npy', data.load_particles(idx).astype(np.float32))
            (tmp / f'{prefix}_names.txt').write_text(''.join(f'{data.names[i]}\n' for i in idx))
        scores = data.scores[train_idx]
        norm = {
            **images.to_record(),
            **ScoreNormalizer().fit(scores).to_record(),
            'image_shape': [int(s) for s in stats['shape']],
            'down_factor': stamp['down_factor'],
            'grid': stats['grid'],
            'num_latent': int(scores.shape[1]),
            'num_correspondences': int(data.num_particles),
            'num_train': len(train_idx),
            'num_val': len(val_idx),
        }
        write_json(tmp / 'normalization.json', norm)
        bases = np.asarray(data.bases)
        subjects, counts = np.unique(bases, return_counts=True)
        stamp = {
            **stamp,
            'train_subjects': sorted(set(bases[train_idx])),
            'val_subjects': sorted(set(bases[val_idx])),
            'num_train': len(train_idx),
            'num_val': len(val_idx),
            'rows_per_subject': {str(k): int(v) for k, v in zip(subjects, counts)},
        }
        _install(tmp, loader_dir, 'loaders.json', stamp)
        (loader_dir / 'test_loader.json').unlink(missing_ok=True)  # test arrays depend on the training grid
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def get_test_loader(
    loader_dir: str | os.PathLike,
    test_img_list: Sequence[str | os.PathLike],
    down_factor: float = 1.0,
    down_dir: str | os.PathLike | None = None,
    *,
    normalization: dict[str, Any] | None = None,
) -> DataLoader:
    """A loader over new images (batch 1, in the given order), whitened with training statistics.

    Args:
        loader_dir: Folder of the training loaders (holds ``normalization.json``).
        test_img_list: Image files, already on the training grid (groomed).
            Names are the file names before the first dot.
        down_factor: Must equal the factor the training loaders used.
        down_dir: Optional folder to keep the downsampled images.
        normalization: Statistics to use instead of ``normalization.json``.

    Returns:
        DataLoader yielding ``{'image': (1, 1, D, H, W), 'name': [str]}``.

    Raises:
        FileNotFoundError: No ``normalization.json`` (and none given), or a missing image.
        DataError: Empty list, duplicate names, or images that do not match the training grid.
        ConfigError: ``down_factor`` differs from the training loaders'.
    """
    from ._validation import ConfigError

    loader_dir = Path(loader_dir)
    norm = normalization if normalization is not None else load_normalization(loader_dir)
    check_in_range(down_factor, name='down_factor', low=0.0, high=1.0, low_inclusive=False)
    if abs(float(norm['down_factor']) - float(down_factor)) > 1e-12:
        raise ConfigError(
            f'down_factor {down_factor:g} differs from the {norm["down_factor"]:g} used for the '
            f'training loaders in "{loader_dir}"; test images must be downsampled the same way.'
        )
    paths = [Path(p) for p in test_img_list]
    if not paths:
        raise DataError('test_img_list is empty; expected at least one image file.')
    missing = [f'test image {i + 1} not found: "{p}"' for i, p in enumerate(paths) if not p.is_file()]
    if missing:
        raise DataError(missing) if len(missing) > 1 else FileNotFoundError(missing[0])
    names = [p.name.split('.')[0] for p in paths]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f'test images must have distinct names (file name before the first dot); repeated: {dupes}.')
    params = {'version': _VERSION, 'down_factor': float(down_factor), 'image_shape': list(norm['image_shape'])}
    record = StageRecord.of(params, {'images': paths})
    stamp = {**params, 'record': record.to_dict()}
    path = loader_dir / 'test_loader.json'
    if not (record.matches(StageRecord.read(path)) and (loader_dir / 'test_images.npy').is_file()):
        loader_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix='.build-', dir=loader_dir))
        try:
            convert_images(
                paths,
                tmp / 'test_images.npy',
                factor=float(down_factor),
                down_dir=Path(down_dir) if down_dir is not None else None,
                desc='test images',
                expect=tuple(norm['image_shape']),
            )
            (tmp / 'test_names.txt').write_text(''.join(f'{n}\n' for n in names))
            _install(tmp, loader_dir, 'test_loader.json', stamp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return DataLoader(DeepSSMDataset(loader_dir, 'test', norm), batch_size=1, shuffle=False)


# --------------------------------------------------------------------------- from a Config


@dataclass
class Loaders:
    """The three loaders of a pipeline run and the training statistics."""

    train: DataLoader
    val: DataLoader
    test: DataLoader | None
    normalization: dict[str, Any]
    loader_dir: Path


def build_loaders(cfg, groomed=None, augmented=None) -> Loaders:
    """Build (or reuse) the train, validation and test loaders of a pipeline ``Config``.

    Args:
        cfg: The pipeline :class:`~deepssm_nb.config.Config` (``cfg.loader``, ``cfg.augment``, ``cfg.seed``).
        groomed: The :class:`~deepssm_nb.groom.GroomResult` whose test images make the test loader; default:
            read from ``groom_dir``.
        augmented: The :class:`~deepssm_nb.augment.AugmentResult` whose table makes the train and validation
            loaders; default: ``aug_dir/TotalData.csv``.
    """
    paths = cfg.resolved_paths()
    train, val = get_train_val_loaders(
        paths['loader_dir'],
        paths['aug_dir'] / 'TotalData.csv' if augmented is None else augmented.table,
        cfg.loader.batch_size,
        cfg.loader.down_factor,
        val_fraction=cfg.loader.val_fraction,
        random_state=cfg.seed,
        num_workers=cfg.loader.num_workers,
    )
    if groomed is None:
        from .groom import load_groomed

        groomed = load_groomed(paths['groom_dir'])
    test_images = list(groomed.images('test'))
    test = get_test_loader(paths['loader_dir'], test_images, cfg.loader.down_factor) if test_images else None
    norm = load_normalization(paths['loader_dir'])
    return Loaders(_augmented(cfg, train, norm), val, test, norm, paths['loader_dir'])


def _augmented(cfg, train: DataLoader, norm: dict[str, Any]) -> DataLoader:
    """The training loader of ``cfg``: ``train`` itself, or one with fresh samples and intensity changes.

    See :mod:`deepssm_nb.training_set`; used when ``augment.fresh_samples`` > 0 or ``augment.intensity`` is enabled.
    """
    from .intensity import RandomIntensity
    from .training_set import build_training_loader

    a = cfg.augment
    intensity = RandomIntensity.from_config(a.intensity)
    if not a.fresh_samples and intensity is None:
        return train
    paths = cfg.resolved_paths()
    stamp = read_json(paths['loader_dir'] / 'loaders.json')
    return build_training_loader(
        train.dataset,
        aug_dir=paths['aug_dir'],
        train_subjects=stamp['train_subjects'],
        normalization=norm,
        batch_size=cfg.loader.batch_size,
        seed=stamp['seed'],
        fresh_samples=a.fresh_samples,
        intensity=intensity,
        pose_jitter_mm=a.pose_jitter_mm,
        pose_jitter_deg=a.pose_jitter_deg,
        num_workers=cfg.loader.num_workers,
    )


def load_train_val_loaders(cfg, *, augmented: bool = True) -> tuple[DataLoader, DataLoader, dict[str, Any]]:
    """Reopen the stored train/validation arrays of ``cfg`` (rebuilt only if stale).

    Args:
        cfg: The pipeline config.
        augmented: Return the training loader as training uses it (fresh samples and intensity changes, when
            ``cfg.augment`` asks for them); False: the stored training images as they are.

    Returns:
        ``(train_loader, val_loader, normalization)``.
    """
    paths = cfg.resolved_paths()
    loader_dir, csv = paths['loader_dir'], paths['aug_dir'] / 'TotalData.csv'
    if not csv.is_file() and (loader_dir / 'loaders.json').is_file():
        stamp = read_json(loader_dir / 'loaders.json')
        warnings.warn(f'"{csv}" is gone; reusing the arrays stored in "{loader_dir}".', stacklevel=2)
        train, val = _make_loaders(loader_dir, cfg.loader.batch_size, stamp['seed'], cfg.loader.num_workers)
    else:
        train, val = get_train_val_loaders(
            loader_dir,
            csv,
            cfg.loader.batch_size,
            cfg.loader.down_factor,
            val_fraction=cfg.loader.val_fraction,
            random_state=cfg.seed,
            num_workers=cfg.loader.num_workers,
        )
    norm = load_normalization(loader_dir)
    return (_augmented(cfg, train, norm) if augmented else train), val, norm
