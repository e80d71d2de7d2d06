"""Training speed, accuracy of the fast path, peak memory, and prediction time of one image.

Measured in one run on the same synthetic data (smooth volumes whose blobs
encode the PCA scores, at the workshop input size):

* ``reference_samples_per_s``: a plain float32 training loop (Adam, MSE on
  particles through the frozen PCA decoder), the network in the default layout.
* ``ours_samples_per_s``: the training step of :func:`deepssm_nb.train.fit`
  with ``precision='auto'`` (and, in ``variants``, every other precision and
  memory layout, to justify the ``auto`` rule).
* ``val_error_ratio``: final validation RMSE of ``fit`` with ``precision='auto'``
  over that with ``'fp32'``, trained identically (same seed, data, epochs).
* ``peak_rss_gb_2000_volumes``: peak resident memory of a fresh process that
  trains one epoch over 2,000 generated volumes streamed from a ``.npy`` file.
* ``predict_one_image_s``: seconds to predict one new image from its file,
  registration included (:func:`measure_predict_one_image`).

Every measurement runs in its own subprocess. Times are medians over
iterations after warm-up; on a busy machine use ``--repeats`` (the best of the
repeats is kept, since other load only ever slows a run down).

Usage::

    python bench/train_speed.py                       # about 15 min on 2 cores
    python bench/train_speed.py --quick               # a smoke run (small sizes)
    taskset -c 0,1 python bench/train_speed.py        # 2 cores of a bigger machine
    python bench/train_speed.py --device cuda --out bench/results/train_speed_cuda.json
    python bench/train_speed.py --predict-only        # fill predict_one_image_s only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / 'bench' / 'results'
# groomed workshop images (2 mm, proximal femur) are 72 x 51 x 56 voxels (z, y, x)
WORKSHOP_SHAPE = (72, 51, 56)
NUM_PARTICLES, NUM_LATENT = 512, 12


# --------------------------------------------------------------------------- synthetic data


def synthetic_pca(shape: tuple[int, int, int], seed: int = 0) -> dict[str, np.ndarray]:
    """A shape model and one Gaussian blob per mode, shared by every split."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3 * NUM_PARTICLES, NUM_LATENT)))
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing='ij'), -1)
    centers = rng.uniform(-0.6, 0.6, size=(NUM_LATENT, 3)).astype(np.float32)
    blobs = np.stack([np.exp(-np.sum((grid - c) ** 2, -1) / 0.08) for c in centers]).astype(np.float32)
    body = (np.sum((grid / np.array([0.8, 0.6, 0.7], np.float32)) ** 2, -1) < 1).astype(np.float32)
    return {
        'mean': rng.normal(size=(NUM_PARTICLES, 3)) * 25 + 60,
        'components': q.T.reshape(NUM_LATENT, -1, 3),
        'std': np.geomspace(8.0, 0.5, NUM_LATENT),
        'blobs': blobs,
        'body': body,
    }


def synthetic_samples(pca: dict, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``images (n, D, H, W)`` float32 (roughly whitened), ``scores (n, L)``, ``particles (n, M, 3)``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, NUM_LATENT))
    scores = z * pca['std']
    images = np.einsum('nk,kdhw->ndhw', z.astype(np.float32), pca['blobs']) + pca['body']
    images += 0.2 * rng.standard_normal(images.shape, dtype=np.float32)
    particles = pca['mean'] + np.einsum('nk,kmc->nmc', scores, pca['components'])
    return images.astype(np.float32), scores.astype(np.float32), particles.astype(np.float32)


class _Memory:
    """In-memory samples as loader dicts."""

    def __init__(self, images, scores, particles, std):
        self.images, self.scores, self.particles, self.std = images, scores, particles, std

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        import torch

        return {
            'image': torch.from_numpy(self.images[i][None]),
            'particles': torch.from_numpy(self.particles[i]),
            'scores': torch.from_numpy((self.scores[i] / self.std).astype(np.float32)),
            'name': f's{i}',
        }


def _build_net(shape, pca, seed=0):
    import torch

    from deepssm_nb.models import DeepSSMNet, init_pca_decoder

    torch.manual_seed(seed)
    net = DeepSSMNet((1, *shape), NUM_LATENT, NUM_PARTICLES)
    return init_pca_decoder(net, pca['mean'], pca['components'], np.zeros(NUM_LATENT), pca['std'])


# --------------------------------------------------------------------------- workers (one per subprocess)


class _TimedLoader:
    """Wraps a loader and records the time at which each batch is handed out."""

    def __init__(self, loader):
        self.loader, self.stamps = loader, []

    def __iter__(self):
        import torch

        sync = torch.cuda.synchronize if torch.cuda.is_initialized() else (lambda: None)
        for batch in self.loader:
            sync()  # on a GPU, wait for the previous step so each interval is one whole step
            self.stamps.append(time.perf_counter())
            yield batch
        sync()
        self.stamps.append(time.perf_counter())

    def __len__(self):
        return len(self.loader)


def worker_speed(args) -> dict[str, Any]:
    """Samples per second of one training-step variant (median over iterations after warm-up)."""
    import torch
    from torch.utils.data import DataLoader

    from deepssm_nb.config import TrainerConfig
    from deepssm_nb.train import base_spec
    from deepssm_nb.train_loop import Precision, resolve_precision, train_epoch

    device = torch.device(args.device)
    pca = synthetic_pca(args.shape)
    n = args.batch * (args.warmup + args.iters)
    data = _Memory(*synthetic_samples(pca, n, seed=1), pca['std'])
    loader = _TimedLoader(DataLoader(data, batch_size=args.batch, shuffle=False))
    net = _build_net(args.shape, pca).to(device)
    t_compile = None
    if args.variant == 'reference':
        net.train()
        opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)
        for batch in loader:
            x, y = batch['image'].to(device), batch['particles'].to(device)
            _, pred = net(x)
            loss = torch.mean((pred - y) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
        precision = 'fp32 (plain loop)'
    else:
        name, _, options = args.variant.partition('_')
        precision = resolve_precision(name, device)
        if 'cl' in options.split('_') or 'nocl' in options.split('_'):
            precision = Precision(
                precision.name, precision.autocast_dtype, 'cl' in options.split('_'), precision.grad_scaler
            )
        if precision.channels_last:
            net.to(memory_format=torch.channels_last_3d)
        spec = base_spec(TrainerConfig(), 'base', 'MSE', 1.32, 10.0)
        net.requires_grad_(False)
        net.encoder.requires_grad_(True)
        opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)
        model = torch.compile(net) if 'compile' in options else net
        t0 = time.perf_counter()
        train_epoch(model, loader, spec, opt, None, device, precision, progress=False)
        if 'compile' in options:
            t_compile = loader.stamps[1] - t0
        precision = f'{precision.name}{" channels_last" if precision.channels_last else ""}'
    if device.type == 'cuda':
        torch.cuda.synchronize()
    steps = np.diff(loader.stamps)[args.warmup :]
    out = {
        'variant': args.variant,
        'precision': precision,
        'median_step_s': float(np.median(steps)),
        'samples_per_s': args.batch / float(np.median(steps)),
        'iters': len(steps),
    }
    if t_compile is not None:
        out['first_step_s (compile)'] = t_compile
    return out


def worker_accuracy(args) -> dict[str, Any]:
    """Final and best validation RMSE (mm) of ``fit`` with one precision."""
    import torch
    from torch.utils.data import DataLoader

    from deepssm_nb.config import TrainerConfig
    from deepssm_nb.train import fit

    pca = synthetic_pca(args.shape)
    train = DataLoader(
        _Memory(*synthetic_samples(pca, args.n_train, seed=1), pca['std']),
        batch_size=args.batch,
        shuffle=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    val = DataLoader(_Memory(*synthetic_samples(pca, args.n_val, seed=2), pca['std']), batch_size=args.batch)
    tc = TrainerConfig(
        epochs=args.epochs, learning_rate=1e-3, device=args.device, precision=args.variant, seed=args.seed
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = fit(
            _build_net(args.shape, pca, seed=args.seed), train, val, trainer_cfg=tc, model_dir=tmp, progress=False
        )
    return {
        'variant': args.variant,
        'precision': res.precision,
        'seed': args.seed,
        'final_val_rmse_mm': res.final_val_rmse_mm,
        'best_val_rmse_mm': res.best_val_rmse_mm,
        'val_rmse_per_epoch': [r['val_rmse_mm'] for r in res.history],
        'seconds': time.perf_counter() - t0,
    }


def worker_write(args) -> dict[str, Any]:
    """Write ``args.volumes`` synthetic samples as ``train_*.npy`` (the loaders' layout) in ``args.data``."""
    from deepssm_nb.io import write_json

    folder = Path(args.data)
    folder.mkdir(parents=True, exist_ok=True)
    pca = synthetic_pca(args.shape)
    n, shape = args.volumes, tuple(args.shape)
    images = np.lib.format.open_memmap(folder / 'train_images.npy', 'w+', np.float32, (n, *shape))
    scores = np.zeros((n, NUM_LATENT), np.float32)
    particles = np.lib.format.open_memmap(folder / 'train_particles.npy', 'w+', np.float32, (n, NUM_PARTICLES, 3))
    for start in range(0, n, 50):
        im, sc, pa = synthetic_samples(pca, min(50, n - start), seed=1000 + start)
        images[start : start + len(im)], scores[start : start + len(im)], particles[start : start + len(im)] = (
            im,
            sc,
            pa,
        )
    images.flush()
    particles.flush()
    del images, particles
    np.save(folder / 'train_scores.npy', scores)
    (folder / 'train_names.txt').write_text(''.join(f'g{i:05d}\n' for i in range(n)))
    norm = {
        'image_mean': 0.0,
        'image_std': 1.0,
        'score_mean': [0.0] * NUM_LATENT,
        'score_std': pca['std'].tolist(),
        'image_shape': list(shape),
        'down_factor': 1.0,
    }
    write_json(folder / 'normalization.json', norm)
    return {'volumes': n, 'bytes': int(n * np.prod(shape) * 4)}


def worker_memory(args) -> dict[str, Any]:
    """Peak RSS of a fresh process training one epoch over the volumes written by :func:`worker_write`."""
    import torch
    from torch.utils.data import DataLoader

    from deepssm_nb.config import TrainerConfig
    from deepssm_nb.io import read_json
    from deepssm_nb.train import fit

    folder = Path(args.data)
    norm = read_json(folder / 'normalization.json')
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    try:
        from deepssm_nb.datasets import DeepSSMDataset

        dataset, source = DeepSSMDataset(folder, 'train', norm), 'deepssm_nb.datasets.DeepSSMDataset'
    except Exception as e:  # noqa: BLE001 - fall back to a plain reader
        dataset, source = _NpyStream(folder, norm), f'plain reader ({type(e).__name__})'
    pca = synthetic_pca(args.shape)
    val = DataLoader(_Memory(*synthetic_samples(pca, 2 * args.batch, seed=2), pca['std']), batch_size=args.batch)
    train = DataLoader(dataset, batch_size=args.batch, shuffle=True, generator=torch.Generator().manual_seed(0))
    tc = TrainerConfig(epochs=1, learning_rate=1e-4, device=args.device, precision='auto')
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        fit(_build_net(args.shape, pca), train, val, trainer_cfg=tc, model_dir=tmp, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
    return {
        'peak_rss_gb': peak,
        'rss_after_imports_gb': rss_start,
        'volumes': len(dataset),
        'dataset': source,
        'epoch_seconds': time.perf_counter() - t0,
    }


class _NpyStream:
    """Rows of ``train_*.npy`` read with plain file reads (page cache, not process memory)."""

    def __init__(self, folder: Path, norm: dict):
        self.folder, self.norm = folder, norm
        self.images = np.load(folder / 'train_images.npy', mmap_mode='r')
        self.shape, self.offset = self.images.shape, self.images.offset
        del self.images
        self.particles = np.load(folder / 'train_particles.npy')

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, i):
        import torch

        count = int(np.prod(self.shape[1:]))
        with open(self.folder / 'train_images.npy', 'rb') as fh:
            fh.seek(self.offset + i * count * 4)
            image = np.frombuffer(fh.read(count * 4), np.float32).reshape(self.shape[1:]).copy()
        return {
            'image': torch.from_numpy(image[None]),
            'particles': torch.from_numpy(self.particles[i]),
            'name': f'g{i}',
        }


def measure_predict_one_image(args) -> float | None:
    """Seconds to predict one new image from its file on disk, registration included.

    Builds a small femur cohort (10 subjects, one test image, the workshop
    sizes: 1 mm images, 2 mm grooming grid, 512 particles; smoke sizes with
    ``--quick``), grooms it, saves an untrained network of the workshop
    architecture (the time does not depend on the weights), then times
    :func:`deepssm_nb.predict.predict_image` on the test subject's original
    image file: read, register to the reference, whiten, predict, map back,
    write. Threads are limited to ``--threads`` (default 2). The model is
    loaded once (warm-up call); the median of the following calls is returned.
    """
    import SimpleITK as sitk
    import torch

    from deepssm_nb import get_profile
    from deepssm_nb.models import DeepSSMNet, init_pca_decoder
    from deepssm_nb.pipeline import ensure
    from deepssm_nb.predict import predict_image

    threads = args.threads or 2
    torch.set_num_threads(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    with tempfile.TemporaryDirectory(prefix='deepssm_predict_') as tmp:
        cfg = get_profile('smoke' if args.quick else 'workshop', work_dir=tmp)
        cfg.data.num_subjects, cfg.data.num_test = 10, 1
        cfg.data.data_dir = os.environ.get('DEEPSSM_DATA_DIR') or str(Path(tmp) / 'data')
        groomed = ensure(cfg, 'groom', verbose=False)
        ref = sitk.ReadImage(str(groomed.reference_image))
        shape, parts = sitk.GetArrayViewFromImage(ref).shape, groomed.particles('train')
        m = parts.shape[1]
        net = DeepSSMNet(
            (1, *shape), num_latent=NUM_LATENT, num_correspondences=m, channels=cfg.deepssm.encoder.channels
        )
        q = np.linalg.qr(np.random.default_rng(0).normal(size=(3 * m, NUM_LATENT)))[0]
        init_pca_decoder(net, parts.mean(0), q.T.reshape(NUM_LATENT, m, 3), np.zeros(NUM_LATENT), np.ones(NUM_LATENT))
        norm = {
            'image_mean': 0.0,
            'image_std': 300.0,
            'score_mean': [0.0] * NUM_LATENT,
            'score_std': [1.0] * NUM_LATENT,
            'image_shape': list(shape),
            'down_factor': 1.0,
        }
        model_dir = cfg.resolved_paths()['model_dir']
        model_dir.mkdir(parents=True, exist_ok=True)
        for name in ('best_model.torch', 'best_model_ft.torch'):
            torch.save(
                {
                    'kind': 'base',
                    'model_kwargs': net.model_kwargs,
                    'state_dict': net.state_dict(),
                    'normalization': norm,
                },
                model_dir / name,
            )
        test_id = groomed.ids('test')[0]
        source = next(s['source_image'] for s in groomed.info['subjects'] if s['id'] == test_id)
        predict_image(source, cfg, verbose=False)  # warm-up: loads the model and the reference image
        times = []
        for _ in range(max(5, args.repeats)):
            t0 = time.perf_counter()
            predict_image(source, cfg, verbose=False)
            times.append(time.perf_counter() - t0)
    print(
        f'  predict_one_image: median {np.median(times):.2f} s, best {min(times):.2f} s over {len(times)} calls '
        f'(input {tuple(shape)}, {threads} threads)',
        flush=True,
    )
    return float(np.median(times))


# --------------------------------------------------------------------------- orchestration


def _worker_cmd(kind: str, args, overrides: dict, cpus: str | None) -> list[str]:
    cmd = ['taskset', '-c', cpus] if cpus else []
    cmd += [sys.executable, __file__, '--worker', kind]
    opts = {**vars(args), **overrides}
    for key in (
        'shape',
        'batch',
        'warmup',
        'iters',
        'device',
        'variant',
        'epochs',
        'n_train',
        'n_val',
        'seed',
        'data',
        'volumes',
        'threads',
    ):
        value = opts.get(key)
        if value is not None:
            cmd += [f'--{key.replace("_", "-")}', ','.join(map(str, value)) if key == 'shape' else str(value)]
    return cmd


def _finish(kind: str, overrides: dict, proc: subprocess.Popen) -> dict[str, Any]:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f'worker {kind} {overrides} failed:\n{err[-3000:]}')
    result = json.loads(out.strip().splitlines()[-1])
    print(f'  {kind} {overrides}: {json.dumps(result)[:160]}', flush=True)
    return result


def _run_worker(kind: str, args, cpus: str | None = None, **overrides) -> dict[str, Any]:
    proc = subprocess.Popen(
        _worker_cmd(kind, args, overrides, cpus), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return _finish(kind, overrides, proc)


def _run_pool(tasks: list[tuple[str, dict]], args, cpu_sets: list[str]) -> list[dict[str, Any]]:
    """Run tasks concurrently, one per CPU set (sequentially when there is no CPU set)."""
    if not cpu_sets:
        return [_run_worker(kind, args, **ov) for kind, ov in tasks]
    results: list[Any] = [None] * len(tasks)
    running: dict[str, tuple[int, subprocess.Popen]] = {}
    queue = list(enumerate(tasks))
    while queue or running:
        for cpus in cpu_sets:
            if cpus not in running and queue:
                i, (kind, ov) = queue.pop(0)
                running[cpus] = (
                    i,
                    subprocess.Popen(
                        _worker_cmd(kind, args, ov, cpus), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                    ),
                )
        for cpus, (i, proc) in list(running.items()):
            if proc.poll() is not None:
                results[i] = _finish(tasks[i][0], tasks[i][1], proc)
                del running[cpus]
        time.sleep(0.5)
    return results


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--worker', choices=['speed', 'accuracy', 'write', 'memory'])
    p.add_argument('--shape', type=lambda s: tuple(int(v) for v in s.split(',')), default=WORKSHOP_SHAPE)
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--iters', type=int, default=6)
    p.add_argument('--device', default='cpu')
    p.add_argument('--variant', default='auto')
    p.add_argument(
        '--variants',
        default='reference,fp32,fp32_cl,bf16,bf16_cl,auto',
        help='speed variants: reference, or <precision>[_cl|_nocl][_compile]',
    )
    p.add_argument('--epochs', type=int, default=6)
    p.add_argument('--n-train', type=int, default=48)
    p.add_argument('--n-val', type=int, default=16)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--seeds', type=int, default=2, help='training runs per precision for val_error_ratio')
    p.add_argument('--acc-variants', default='fp32,auto', help='precisions trained for the accuracy comparison')
    p.add_argument('--volumes', type=int, default=2000)
    p.add_argument('--data', default=None)
    p.add_argument('--repeats', type=int, default=1, help='repeat every speed variant; keep the best')
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--cpu-sets', default=None, help="e.g. '0-1,2-3,4-5': speed runs alone on the first set")
    p.add_argument('--quick', action='store_true', help='small sizes, for checking the script')
    p.add_argument('--skip-memory', action='store_true')
    p.add_argument('--skip-predict', action='store_true')
    p.add_argument('--predict-only', action='store_true', help='only measure predict_one_image_s (into --out)')
    p.add_argument('--out', default=str(RESULTS / 'train_speed.json'))
    args = p.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.worker:
        import torch

        fn = {'speed': worker_speed, 'accuracy': worker_accuracy, 'write': worker_write, 'memory': worker_memory}[
            args.worker
        ]
        print(json.dumps({**fn(args), 'threads': torch.get_num_threads()}))
        return None
    if args.predict_only:  # fill predict_one_image_s of an existing result file
        from deepssm_nb.io import read_json, write_json

        result = read_json(args.out) if Path(args.out).is_file() else {}
        result['predict_one_image_s'] = measure_predict_one_image(args)
        write_json(args.out, result)
        print(json.dumps({'predict_one_image_s': result['predict_one_image_s']}))
        return result
    if args.quick:
        args.shape, args.iters, args.epochs, args.n_train, args.n_val = (24, 20, 22), 3, 2, 16, 8
        args.volumes, args.seeds = 100, 1
    return run(args)


def run(args) -> dict[str, Any]:
    import torch

    from deepssm_nb.io import write_json

    t0 = time.perf_counter()
    print(f'train_speed: shape {args.shape}, batch {args.batch}, device {args.device}', flush=True)
    variants = [v for v in args.variants.split(',') if v]
    # --cpu-sets 0-1,2-3,...: speed on the first set; the other runs side by side on the others
    sets = [c for c in (args.cpu_sets or '').split(',') if c]
    speed_cpus, pool = (sets[0], sets[1:]) if sets else (None, [])
    tmp = tempfile.TemporaryDirectory(prefix='deepssm_bench_')
    data = args.data or tmp.name
    if not args.skip_memory:
        _run_worker('write', args, data=data)
    tasks = [] if args.skip_memory else [('memory', {'data': data})]  # first: it gets the first (largest) set
    acc_variants = list(dict.fromkeys(['fp32', 'auto', *[v for v in args.acc_variants.split(',') if v]]))
    tasks += [('accuracy', {'variant': v, 'seed': s}) for s in range(args.seeds) for v in acc_variants]
    background = None
    if pool:
        import threading

        background_results: list = []
        background = threading.Thread(target=lambda: background_results.extend(_run_pool(tasks, args, pool)))
        background.start()
    speed: dict[str, dict] = {}
    for _ in range(args.repeats):
        for v in variants:
            r = _run_worker('speed', args, speed_cpus, variant=v)
            if v not in speed or r['samples_per_s'] > speed[v]['samples_per_s']:
                speed[v] = r
    if background is not None:
        background.join()
        others = background_results
    else:
        others = _run_pool(tasks, args, [])
    tmp.cleanup()
    acc = {v: [r for r in others if r.get('variant') == v and 'final_val_rmse_mm' in r] for v in acc_variants}
    ratios = [a['final_val_rmse_mm'] / b['final_val_rmse_mm'] for a, b in zip(acc['auto'], acc['fp32'])]
    memory = next((r for r in others if 'peak_rss_gb' in r), None)
    predict_s = None if args.skip_predict else measure_predict_one_image(args)
    ref, ours = speed['reference']['samples_per_s'], speed['auto']['samples_per_s']
    result = {
        'reference_samples_per_s': ref,
        'ours_samples_per_s': ours,
        'speedup': ours / ref,
        'val_error_ratio': float(np.mean(ratios)),
        'peak_rss_gb_2000_volumes': memory['peak_rss_gb'] if memory else None,
        'predict_one_image_s': predict_s,
        'details': {
            'input_shape_zyx': list(args.shape),
            'batch_size': args.batch,
            'device': args.device,
            'precision_auto_means': speed['auto']['precision'],
            'data': 'synthetic volumes at the workshop groomed size (72 x 51 x 56 voxels at 2 mm), '
            f'{NUM_PARTICLES} particles, {NUM_LATENT} PCA modes',
            'speed_variants': speed,
            'val_error_ratio_per_seed': ratios,
            'accuracy_runs': acc,
            'memory': memory,
            'torch': torch.__version__,
            'threads': args.threads or torch.get_num_threads(),
            'cpus_per_run': (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else None)
            if not sets
            else sets,
            'cpu': platform.processor() or platform.machine(),
            'python': platform.python_version(),
            'quick': bool(args.quick),
            'seconds': time.perf_counter() - t0,
        },
    }
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != 'details'}, indent=2))
    return result


if __name__ == '__main__':
    main()
