"""The training set of one epoch: real images and fresh samples, each item rebuilt from its own seed.

The stored augmentation (a few hundred warped images) is replayed every epoch, so with a few dozen subjects the
network soon knows each of them by heart. :class:`AugmentedTrainingSet` instead draws the generated part anew:

* every epoch, :class:`EpochDraws` lists each stored row it uses once plus ``fresh`` new samples, shuffled, and draws
  a 62-bit seed for each from the loader's ``torch.Generator`` (checkpointed with the training, so a resumed run
  draws what an uninterrupted one would);
* a fresh sample's seed fixes everything about it: its shape scores and base subject (the score sampler, refitted
  on the training subjects only), its pose jitter, the warp of its base's original scan
  (:class:`~deepssm_nb.synthesis.SampleSynthesizer`) and its intensity changes
  (:class:`~deepssm_nb.intensity.RandomIntensity`). ``dataset[(-1, seed)]`` rebuilds it exactly, in any process;
* a stored row's seed fixes its intensity changes: ``dataset[(row, seed)]``.

A plain integer index returns the stored row as it is (no augmentation), as :class:`~deepssm_nb.datasets.DeepSSMDataset`.

Items are the dicts of :class:`~deepssm_nb.datasets.DeepSSMDataset`: ``image`` (1, D, H, W) whitened, ``scores`` (L,)
whitened, ``particles`` (M, 3) world mm, ``name``. A fresh sample's particles include its pose jitter, and its scores
are the PCA projection of those particles.

Example:
    >>> ds = AugmentedTrainingSet(rows, normalization=norm, synthesizer=synth, pca=pca, sampler=sampler)  # doctest: +SKIP
    >>> loader = DataLoader(ds, batch_size=8, sampler=EpochDraws(real_rows, 400, torch.Generator()))    # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ._validation import DataError, check_in_range

__all__ = [
    'FRESH',
    'AugmentedTrainingSet',
    'EpochDraws',
    'build_training_loader',
    'limit_worker_threads',
    'shapes_loader',
]

FRESH = -1  # the row number of a fresh sample in a draw (row, seed)


class EpochDraws(Sampler):
    """Each epoch: the given stored rows and ``fresh`` new samples, in random order, each with a new seed.

    Yields ``(row, seed)`` pairs; ``row`` is :data:`FRESH` for a fresh sample.

    Args:
        rows: Stored row numbers used every epoch.
        fresh: Fresh samples per epoch.
        generator: The random stream of the order and the seeds.
    """

    def __init__(self, rows: Sequence[int], fresh: int, generator: torch.Generator):
        self.rows = [int(r) for r in rows]
        self.fresh = int(check_in_range(fresh, name='fresh', low=0, integer=True))
        if not self.rows and not self.fresh:
            raise DataError('EpochDraws: no stored rows and no fresh samples; an epoch would be empty.')
        self.generator = generator

    def __len__(self) -> int:
        return len(self.rows) + self.fresh

    def __iter__(self) -> Iterator[tuple[int, int]]:
        n = len(self)
        order = torch.randperm(n, generator=self.generator).tolist()
        seeds = torch.randint(0, 2**62, (n,), generator=self.generator, dtype=torch.int64).tolist()
        keys = self.rows + [FRESH] * self.fresh
        for k, seed in zip(order, seeds):
            yield keys[k], int(seed)


def limit_worker_threads(_worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one BLAS/OpenMP thread per worker, so workers do not crowd the training."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


class AugmentedTrainingSet(Dataset):
    """Stored training rows plus fresh samples, augmented per draw (see the module notes).

    Args:
        rows: The stored training split (a :class:`~deepssm_nb.datasets.DeepSSMDataset`).
        normalization: The loaders' whitening statistics (``normalization.json``).
        intensity: Random intensity changes of every drawn item, or None.
        synthesizer: Warps the training subjects' scans (needed for fresh samples).
        pca: The fitted :class:`~deepssm_nb.pca.ShapePCA` (needed for fresh samples).
        sampler: A score sampler fitted on the scores of ``synthesizer.bases``, in that order (needed for fresh
            samples).
        pose_jitter_mm: Standard deviation of a fresh sample's translation per axis, mm.
        pose_jitter_deg: Standard deviation of its rotation angle, degrees.
    """

    def __init__(
        self,
        rows: Any,
        *,
        normalization: dict[str, Any],
        intensity: Any = None,
        synthesizer: Any = None,
        pca: Any = None,
        sampler: Any = None,
        pose_jitter_mm: float = 0.0,
        pose_jitter_deg: float = 0.0,
    ):
        self.rows = rows
        self.normalization = normalization
        self.intensity = intensity
        self.synthesizer, self.pca, self.sampler = synthesizer, pca, sampler
        self.pose_jitter_mm = float(check_in_range(pose_jitter_mm, name='pose_jitter_mm', low=0.0))
        self.pose_jitter_deg = float(check_in_range(pose_jitter_deg, name='pose_jitter_deg', low=0.0))
        if synthesizer is not None and sampler is not None and len(sampler.scores_) != len(synthesizer.bases):
            raise DataError(
                f'the score sampler was fitted on {len(sampler.scores_)} shapes but the synthesizer has '
                f"{len(synthesizer.bases)} base scans; fit it on the bases' scores, in their order."
            )
        self.spacing = tuple(float(s) for s in normalization['grid']['spacing'])
        self._image_mean = np.float32(normalization['image_mean'])
        self._image_std = np.float32(normalization['image_std'])
        self._score_mean = np.asarray(normalization['score_mean'], np.float32)
        self._score_std = np.asarray(normalization['score_std'], np.float32)

    @property
    def has_fresh(self) -> bool:
        return self.synthesizer is not None and self.pca is not None and self.sampler is not None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        if not isinstance(key, tuple):
            return self.rows[key]
        row, seed = key
        rng = np.random.default_rng(int(seed))
        item = self.fresh_sample(rng, name=f'fresh_{int(seed):016x}') if row == FRESH else self.rows[int(row)]
        if self.intensity is not None:
            image = self.intensity(item['image'][0].numpy(), rng, spacing=self.spacing)
            item['image'] = torch.from_numpy(image[None])
        return item

    def fresh_shape(self, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """A fresh sample's particles ``(M, 3)`` (pose jitter included) and its base, the first draws of ``rng``."""
        if not self.has_fresh:
            raise DataError(
                'this training set has no synthesizer, PCA and sampler, so it cannot make fresh samples '
                '(set augment.fresh_samples > 0 when building it).'
            )
        from .registration import apply_transform
        from .synthesis import random_pose

        scores, base = self.sampler.sample(1, random_state=rng)
        particles = self.pca.inverse_transform(scores[0])
        if self.pose_jitter_mm or self.pose_jitter_deg:
            pose = random_pose(
                rng,
                translation_mm=self.pose_jitter_mm,
                rotation_deg=self.pose_jitter_deg,
                center=particles.mean(axis=0),
            )
            particles = apply_transform(pose, particles)
        return particles, int(base[0])

    def fresh_sample(self, rng: np.random.Generator, *, name: str = 'fresh') -> dict[str, Any]:
        """A new sample (before intensity changes): shape, base, pose jitter and warp, all from ``rng``."""
        particles, base = self.fresh_shape(rng)
        raw = self.synthesizer.warp(base, particles)
        raw = self._match_loader_grid(raw)
        image = (raw - self._image_mean) / self._image_std
        z = (self.pca.transform(particles[None])[0] - self._score_mean) / self._score_std
        return {
            'image': torch.from_numpy(image.astype(np.float32)[None]),
            'name': name,
            'scores': torch.from_numpy(z.astype(np.float32)),
            'particles': torch.from_numpy(particles.astype(np.float32)),
        }

    def _match_loader_grid(self, raw: np.ndarray) -> np.ndarray:
        """Downsample a reference-grid image as the loaders did (when ``down_factor`` < 1)."""
        factor = float(self.normalization.get('down_factor', 1.0))
        if factor >= 1.0:
            return raw
        import SimpleITK as sitk

        from .imageops import downsample_image

        img = self.synthesizer.grid.to_image(raw)
        return sitk.GetArrayFromImage(downsample_image(img, factor, name='fresh sample'))


class _Shapes(Dataset):
    """The particles of an :class:`AugmentedTrainingSet`'s draws, without their images (no warp, no intensity)."""

    def __init__(self, dataset: AugmentedTrainingSet):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        row, seed = key
        if row == FRESH:
            particles, _ = self.dataset.fresh_shape(np.random.default_rng(int(seed)))
            return {'particles': torch.from_numpy(particles.astype(np.float32)), 'name': f'fresh_{int(seed):016x}'}
        item = self.dataset.rows[int(row)]
        return {'particles': item['particles'], 'name': item['name']}


def shapes_loader(loader: Any) -> Any:
    """A loader of the same draws as ``loader`` with only their particles, for a stage that reads no image.

    Seeded alike (as every stage seeds its loader's generators), it yields the very particles ``loader`` would, in
    the same batches, without warping a single image: TL-DeepSSM's autoencoder phase spends most of its time
    otherwise making images it never reads. A loader that is not over fresh samples is returned as it is.
    """
    from torch.utils.data import DataLoader

    dataset, sampler = getattr(loader, 'dataset', None), getattr(loader, 'sampler', None)
    if not (isinstance(dataset, AugmentedTrainingSet) and dataset.has_fresh and isinstance(sampler, EpochDraws)):
        return loader
    return DataLoader(
        _Shapes(dataset),
        batch_size=loader.batch_size,
        sampler=EpochDraws(sampler.rows, sampler.fresh, torch.Generator()),
        generator=torch.Generator(),
    )


def build_training_loader(
    rows: Any,
    *,
    aug_dir: Any,
    train_subjects: Sequence[str],
    normalization: dict[str, Any],
    batch_size: int,
    seed: int,
    fresh_samples: int = 0,
    intensity: Any = None,
    pose_jitter_mm: float = 0.0,
    pose_jitter_deg: float = 0.0,
    num_workers: int = 0,
) -> torch.utils.data.DataLoader:
    """The training loader over an :class:`AugmentedTrainingSet`, drawn by :class:`EpochDraws`.

    With ``fresh_samples`` > 0 an epoch holds the real training images (the stored rows named after a training
    subject) and ``fresh_samples`` fresh samples, whose bases are the training subjects only and whose shapes come
    from the augmentation's sampler refitted on those subjects' scores. Otherwise an epoch holds every stored row.

    Args:
        rows: The stored training split (:class:`~deepssm_nb.datasets.DeepSSMDataset`).
        aug_dir: The augmentation folder (``augmentation.json``, ``PCA_Particle_Info/``).
        train_subjects: Ids of the training subjects (the validation subjects are never bases).
        normalization: The loaders' whitening statistics.
        batch_size: Batch size.
        seed: Seed of the loader's ``torch.Generator`` (order and per-item seeds).
        fresh_samples: Fresh samples per epoch.
        intensity: A :class:`~deepssm_nb.intensity.RandomIntensity`, or None.
        pose_jitter_mm, pose_jitter_deg: Pose jitter of the fresh samples.
        num_workers: DataLoader worker processes (each makes whole items; one BLAS thread each).

    Raises:
        DataError: ``augmentation.json`` lists none of the training subjects.
    """
    from pathlib import Path

    from torch.utils.data import DataLoader

    from .imageops import ImageGrid
    from .io import read_json, read_particles
    from .pca import ShapePCA
    from .samplers import get_sampler
    from .synthesis import SampleSynthesizer, base_scan

    train_subjects = set(train_subjects)
    used = list(range(len(rows)))
    kwargs: dict[str, Any] = {}
    if fresh_samples:
        aug_dir = Path(aug_dir)
        info = read_json(aug_dir / 'augmentation.json')
        inputs = [(i, d) for i, d in enumerate(info['inputs']) if d['id'] in train_subjects]
        if not inputs:
            raise DataError(
                f'"{aug_dir / "augmentation.json"}" lists none of the training subjects '
                f'{sorted(train_subjects)[:5]}; rerun the augmentation stage.'
            )
        grid = ImageGrid.from_file(inputs[0][1]['image'], name='groomed base image')
        bases = [
            base_scan(
                d['id'],
                read_particles(d['particles']),
                grid,
                groomed_image=d['image'],
                source=d.get('source'),
                to_world=d.get('to_world'),
            )
            for _, d in inputs
        ]
        p = info['parameters']
        synth = SampleSynthesizer(
            bases,
            grid,
            landmark_step=p['landmark_step'],
            grid_step=p['grid_step'],
            interpolation=p['interpolation'],
            kink_radius=p['kink_radius'],
        )
        pca = ShapePCA.load(aug_dir / 'PCA_Particle_Info')
        sampler = get_sampler(p['sampler'], mixture_num=p['mixture_num'], random_state=p['random_state'] % 2**32)
        sampler.fit(pca.scores_[[i for i, _ in inputs]])
        kwargs = {'synthesizer': synth, 'pca': pca, 'sampler': sampler}
        used = [i for i, name in enumerate(rows.names) if name in train_subjects]
    dataset = AugmentedTrainingSet(
        rows,
        normalization=normalization,
        intensity=intensity,
        pose_jitter_mm=pose_jitter_mm,
        pose_jitter_deg=pose_jitter_deg,
        **kwargs,
    )
    generator = torch.Generator().manual_seed(int(seed))
    # The loader's own generator (not the global torch stream) seeds its worker processes: persistent workers draw
    # that seed once, a loader without workers once per epoch, and the global stream (dropout) must not notice.
    # Items do not use it; each is made from its own seed in EpochDraws.
    worker_seeds = torch.Generator().manual_seed(int(seed) + 1)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochDraws(used, fresh_samples, generator),
        generator=worker_seeds,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=limit_worker_threads if num_workers else None,
    )
