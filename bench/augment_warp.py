"""Benchmark of the augmentation image warp: exact thin-plate spline vs the fast coarse-grid warp.

On one 1 mm volume of the femur cohort, with 256 landmarks (every 2nd of 512
particles) mapping a second, rigidly aligned, subject's shape onto the base
subject, it times per volume, in one run and on one thread each:

(a) the exact spline evaluated at every voxel (float64, chunked), and
(b) ours: the spline on a coarse grid, separable cubic interpolation and
    the exact kink correction around each landmark (:func:`deepssm_nb.tps.warp_field`),

and reports the displacement difference (b) - (a) over every voxel, in mm.
It also times the warps with the image resampling included, a few other
settings of (b), and the wall time of 1,000 generated samples with 2
processes on 2 mm groomed images (the workshop grooming).

Usage::

    python bench/augment_warp.py                      # writes bench/results/augment_warp.json
    python bench/augment_warp.py --samples 50 --out /tmp/quick.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = [
    ('linear', 4, 0),
    ('linear', 4, 2),
    ('cubic', 4, 0),
    ('cubic', 4, 1),
    ('cubic', 4, 2),
    ('cubic', 3, 2),
    ('cubic', 5, 2),
    ('cubic', 6, 2),
]


def _timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def _rigid(moving: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """``moving`` (M, 3) rotated and translated onto ``fixed`` (least squares)."""
    mm, mf = moving.mean(0), fixed.mean(0)
    u, _, vt = np.linalg.svd((moving - mm).T @ (fixed - mf))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rot = vt.T @ np.diag([1.0, 1.0, d]) @ u.T
    return (moving - mm) @ rot.T + mf


def warp_timings(cohort, *, grid_step: float, kink_radius: float, interpolation: str, repeats: int) -> dict:
    import SimpleITK as sitk
    from threadpoolctl import threadpool_limits

    from deepssm_nb.imageops import ImageGrid
    from deepssm_nb.io import read_image, read_particles
    from deepssm_nb.tps import ThinPlateSpline, resample, warp_field

    base_id, target_id = cohort.ids('train')[:2]
    base, target = read_particles(cohort[base_id].particles), read_particles(cohort[target_id].particles)
    target = _rigid(target, base)
    image = read_image(cohort[base_id].image)
    grid = ImageGrid.from_image(image)
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    tps = ThinPlateSpline.fit(target[::2], base[::2])  # output (target shape) -> input (base image)
    mm = grid.spacing[::-1, None, None, None]
    with threadpool_limits(1):
        exact_s, exact = _timed(lambda: warp_field(tps, grid, grid_step=None), max(1, repeats // 3))
        fast_s, fast = _timed(
            lambda: warp_field(tps, grid, grid_step=grid_step, interpolation=interpolation, kink_radius=kink_radius),
            repeats,
        )
        resample_s, _ = _timed(lambda: resample(array, fast), repeats)
        err = np.linalg.norm((fast - exact) * mm, axis=0)
        variants = []
        for kind, step, radius in VARIANTS:
            t, f = _timed(
                lambda step=step, kind=kind, radius=radius: warp_field(
                    tps, grid, grid_step=step, interpolation=kind, kink_radius=radius
                ),
                max(1, repeats // 2),
            )
            e = np.linalg.norm((f - exact) * mm, axis=0)
            variants.append(
                {
                    'interpolation': kind,
                    'grid_step': step,
                    'kink_radius': radius,
                    's_per_volume': t,
                    'speedup': exact_s / t,
                    'max_error_mm': float(e.max()),
                    'p99_error_mm': float(np.percentile(e, 99)),
                }
            )
    disp = np.linalg.norm(exact * mm, axis=0)
    return {
        'exact_s_per_volume': exact_s,
        'fast_s_per_volume': fast_s,
        'speedup': exact_s / fast_s,
        'max_error_mm': float(err.max()),
        'p99_error_mm': float(np.percentile(err, 99)),
        'resample_s_per_volume': resample_s,
        'exact_warp_s_per_volume': exact_s + resample_s,
        'fast_warp_s_per_volume': fast_s + resample_s,
        'speedup_with_resampling': (exact_s + resample_s) / (fast_s + resample_s),
        'volume_shape_zyx': list(grid.shape),
        'voxels': int(np.prod(grid.shape)),
        'spacing_mm': grid.spacing.tolist(),
        'num_landmarks': len(target[::2]),
        'base_subject': base_id,
        'target_subject': target_id,
        'displacement_mm': {'mean': float(disp.mean()), 'max': float(disp.max())},
        'grid_step': grid_step,
        'interpolation': interpolation,
        'kink_radius': kink_radius,
        'threads': 1,
        'variants': variants,
    }


def sample_timing(cohort, *, num_samples: int, processes: int, spacing: float, padding: float, work: Path) -> dict:
    import SimpleITK as sitk

    from deepssm_nb.augment import run_data_augmentation
    from deepssm_nb.groom import groom_cohort

    t0 = time.perf_counter()
    groomed = groom_cohort(
        cohort.subset('train'),
        spacing=spacing,
        padding=padding,
        reference='medoid',
        registration_iterations=50,
        processes=processes,
        out_dir=work / 'groomed',
        random_state=0,
        progress=False,
    )
    groom_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    modes = run_data_augmentation(
        work / 'aug',
        groomed.images('train'),
        groomed.particle_files('train'),
        num_samples=num_samples,
        processes=processes,
        random_state=0,
        progress=False,
    )
    wall = time.perf_counter() - t0
    size = sitk.ReadImage(str(groomed.images('train')[0])).GetSize()
    return {
        f'samples_{num_samples}_wall_s': wall,
        'samples_num': num_samples,
        'samples_processes': processes,
        'samples_volume_shape_zyx': list(size[::-1]),
        'samples_spacing_mm': spacing,
        'samples_training_shapes': len(groomed.ids('train')),
        'samples_modes_kept': modes,
        'samples_s_per_sample_per_process': wall * processes / max(num_samples, 1),
        'groom_s': groom_s,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data-dir', default=None, help='cohort cache (default: $DEEPSSM_DATA_DIR or ~/.cache)')
    parser.add_argument('--num-subjects', type=int, default=8)
    parser.add_argument('--samples', type=int, default=1000)
    parser.add_argument('--processes', type=int, default=2)
    parser.add_argument('--groom-spacing', type=float, default=2.0)
    parser.add_argument('--grid-step', type=float, default=4.0)
    parser.add_argument('--kink-radius', type=float, default=2.0)
    parser.add_argument('--interpolation', default='cubic')
    parser.add_argument('--repeats', type=int, default=6)
    parser.add_argument('--out', default=str(ROOT / 'bench' / 'results' / 'augment_warp.json'))
    args = parser.parse_args(argv)

    import SimpleITK as sitk

    from deepssm_nb.data import build_femur_cohort

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    load_before = os.getloadavg()
    cohort = build_femur_cohort(
        num_subjects=args.num_subjects,
        num_particles=512,
        spacing=1.0,
        num_test=2,
        seed=0,
        data_dir=args.data_dir,
        processes=args.processes,
        progress=False,
    )
    result = {
        'benchmark': 'augment_warp',
        'date': time.strftime('%Y-%m-%d %H:%M:%S'),
        'machine': {
            'cpus': os.cpu_count(),
            'platform': platform.platform(),
            'python': platform.python_version(),
            'numpy': np.__version__,
            'load_average_before': list(load_before),
        },
        'cohort': str(cohort.root.name),
    }
    result.update(
        warp_timings(
            cohort,
            grid_step=args.grid_step,
            kink_radius=args.kink_radius,
            interpolation=args.interpolation,
            repeats=args.repeats,
        )
    )
    work = Path(tempfile.mkdtemp(prefix='augment_warp_'))
    try:
        result.update(
            sample_timing(
                cohort,
                num_samples=args.samples,
                processes=args.processes,
                spacing=args.groom_spacing,
                padding=10.0,
                work=work,
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result['machine']['load_average_after'] = list(os.getloadavg())
    keys = [
        'exact_s_per_volume',
        'fast_s_per_volume',
        'speedup',
        'max_error_mm',
        'p99_error_mm',
        f'samples_{args.samples}_wall_s',
    ]
    result = {**{k: result[k] for k in keys}, **{k: v for k, v in result.items() if k not in keys}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + '\n')
    print(json.dumps({k: result[k] for k in keys}, indent=2))
    print(
        f'per-variant: {statistics.median(v["s_per_volume"] for v in result["variants"]):.3f} s median; '
        f'written to {out}'
    )
    return result


if __name__ == '__main__':
    main()
