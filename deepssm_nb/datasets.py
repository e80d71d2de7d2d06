"""The arrays behind the loaders: images converted once into ``.npy`` files, and the dataset that reads them.

:func:`convert_images` writes the images of one split into one ``(S, D, H, W)`` float32 ``.npy`` of raw
intensities (downsampled if asked), reading ahead with a few threads and fitting an
:class:`~deepssm_nb.normalization.ImageNormalizer` as the voxels stream past. :class:`DeepSSMDataset` reads one row
per sample with plain file reads, so memory does not grow with the number of samples, and whitens it when it is read.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ._validation import DataError
from .imageops import downsample_image, grid_record
from .io import read_image
from .normalization import ImageNormalizer, ScoreNormalizer

__all__ = ['DeepSSMDataset', 'convert_images', 'images_in_order', 'load_image']


def load_image(path: Path, factor: float, down_dir: Path | None, *, name: str):
    """The image in ``path``, downsampled by ``factor`` (:func:`~deepssm_nb.imageops.downsample_image`).

    With ``down_dir``, the downsampled image is kept as ``down_dir/factor_<f>/<name>.nrrd`` and read from there
    while it is newer than ``path``. ``name`` says what the image is in errors.
    """
    import SimpleITK as sitk

    if down_dir is not None and factor < 1:
        cached = down_dir / f'factor_{factor:g}' / f'{path.name.split(".")[0]}.nrrd'
        if cached.is_file() and cached.stat().st_mtime_ns >= path.stat().st_mtime_ns:
            return sitk.ReadImage(str(cached))
        from .io import write_image

        img = downsample_image(read_image(path, name=name), factor, name=f'{name} "{path}"')
        write_image(cached, img)
        return img
    return downsample_image(read_image(path, name=name), factor, name=f'{name} "{path}"')


def images_in_order(
    paths: Sequence[Path], factor: float, down_dir: Path | None, *, workers: int | None = None
) -> Iterator[Any]:
    """Yield the images of ``paths`` in order, read ahead by a few threads (SimpleITK reads without the GIL).

    At most ``2 * workers`` images are in memory at once.
    """
    workers = workers or min(4, os.cpu_count() or 1)
    if workers <= 1:
        for path in paths:
            yield load_image(path, factor, down_dir, name='image')
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    todo = iter(paths)
    with ThreadPoolExecutor(workers) as pool:
        pending = deque(
            pool.submit(load_image, p, factor, down_dir, name='image') for p in itertools.islice(todo, 2 * workers)
        )
        while pending:
            image = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(load_image, nxt, factor, down_dir, name='image'))
            yield image


def convert_images(
    paths: Sequence[Path],
    out: Path,
    *,
    factor: float,
    down_dir: Path | None,
    desc: str,
    expect: tuple[int, ...] | None = None,
    normalizer: ImageNormalizer | None = None,
) -> dict[str, Any]:
    """Write the images into one (S, D, H, W) float32 ``.npy``; return the grid of the stored images.

    ``normalizer``, when given, is fitted on the voxels as they stream past (one image in memory at a time).
    """
    from tqdm.auto import tqdm

    first = load_image(paths[0], factor, down_dir, name='image')
    import SimpleITK as sitk

    shape = sitk.GetArrayViewFromImage(first).shape
    if expect is not None and tuple(shape) != tuple(expect):
        raise DataError(
            f'"{paths[0]}" gives an array of shape {tuple(shape)} (z, y, x) after downsampling by '
            f'{factor:g}; the training images have {tuple(expect)}. Test images must be groomed onto '
            f'the same reference grid and use the same down_factor.'
        )
    ref_size = read_image(paths[0]).GetSize() if factor < 1 else first.GetSize()
    header = np.lib.format.open_memmap(out, mode='w+', dtype=np.float32, shape=(len(paths), *shape))
    offset = int(header.offset)
    del header  # rows are written with plain file writes, so memory stays flat
    with open(out, 'r+b') as f:
        f.seek(offset)
        images = itertools.chain([first], images_in_order(paths[1:], factor, down_dir))
        for path, img in zip(tqdm(paths, desc=desc, unit='image'), images):
            vol = sitk.GetArrayViewFromImage(img)
            if vol.shape != shape:
                size = read_image(path).GetSize() if factor < 1 else img.GetSize()
                raise DataError(
                    f'"{path}" has size {size} (x, y, z) but "{paths[0]}" has {ref_size}; all images '
                    f'of one set must share one grid (groom them onto the reference image first).'
                )
            v = np.ascontiguousarray(vol, dtype=np.float32)
            f.write(v.tobytes())
            if normalizer is not None:
                normalizer.partial_fit(v)
    return grid_record(first)


# --------------------------------------------------------------------------- datasets


class _NpyRows:
    """Read single rows of a C-ordered ``.npy`` file with plain file reads (no array kept in memory)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        mm = np.load(self.path, mmap_mode='r')  # header only; the map is dropped at once
        if not mm.flags.c_contiguous:
            raise DataError(f'"{self.path}" is Fortran-ordered; expected a C-ordered array.')
        self.shape, self.dtype, self.offset = tuple(mm.shape), mm.dtype, int(mm.offset)
        del mm
        self.row_shape = self.shape[1:]
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._fh = None
        self._pid = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int) -> np.ndarray:
        if self._fh is None or self._pid != os.getpid():  # one handle per (worker) process
            self._fh, self._pid = open(self.path, 'rb'), os.getpid()  # noqa: SIM115 - kept open for the next reads
        out = np.empty(self.row_shape, dtype=self.dtype)
        self._fh.seek(self.offset + int(i) * self.row_bytes)
        if self._fh.readinto(memoryview(out).cast('B')) != self.row_bytes:
            raise DataError(f'"{self.path}" is truncated at row {i}; delete it to rebuild the loaders.')
        return out

    def __getstate__(self) -> dict:
        return {**self.__dict__, '_fh': None, '_pid': None}

    def memmap(self) -> np.memmap:
        """The whole array as a read-only memory map (for plots)."""
        return np.load(self.path, mmap_mode='r')


class DeepSSMDataset(Dataset):
    """One split stored in ``loader_dir`` (``<prefix>_images.npy`` and friends).

    Items are dicts: ``image`` (1, D, H, W) float32 whitened, and for the
    train/val splits ``scores`` (L,) float32 whitened and ``particles``
    (M, 3) float32 world mm; plus ``name`` (str). Images are read from disk
    per item; only the scores (S, L) live in memory.

    Args:
        loader_dir: The folder.
        prefix: ``'train'``, ``'val'`` or ``'test'``.
        normalization: The dict of ``normalization.json``.
    """

    def __init__(self, loader_dir: str | os.PathLike, prefix: str, normalization: dict[str, Any]):
        folder = Path(loader_dir)
        self.prefix = prefix
        self.normalization = normalization
        self.image_normalizer = ImageNormalizer.from_record(normalization)
        self.score_normalizer = ScoreNormalizer.from_record(normalization) if 'score_mean' in normalization else None
        self.names = (folder / f'{prefix}_names.txt').read_text().split('\n')[:-1]
        self.image_file = _NpyRows(folder / f'{prefix}_images.npy')
        self.has_targets = (folder / f'{prefix}_scores.npy').is_file() and prefix != 'test'
        if self.has_targets:
            self.scores = np.load(folder / f'{prefix}_scores.npy')
            self.particle_file = _NpyRows(folder / f'{prefix}_particles.npy')
        if len(self.names) != len(self.image_file):
            raise DataError(
                f'"{folder}": {len(self.names)} names but {len(self.image_file)} images in {prefix}; '
                f'delete loaders.json to rebuild.'
            )

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = self.image_normalizer.transform(self.image_file[i])
        item = {'image': torch.from_numpy(image[None]), 'name': self.names[i]}
        if self.has_targets:
            scores = self.score_normalizer.transform(self.scores[i])
            item['scores'] = torch.from_numpy(scores.astype(np.float32))
            item['particles'] = torch.from_numpy(self.particle_file[i])
        return item

    @property
    def images(self) -> np.memmap:
        """(S, D, H, W) raw images as a read-only memory map."""
        return self.image_file.memmap()
