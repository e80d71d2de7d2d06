"""The one training loop behind every stage (base, fine tuning, the three TL-DeepSSM phases).

A stage is described by a :class:`StageSpec` (epochs, learning rate and its
decay, which modules train, and a step function giving the loss and the
predicted particles of a batch). :func:`run_stage` trains it with Adam, logs
one row per epoch, keeps the best model by validation RMSE in mm, writes an
atomic checkpoint every epoch and resumes from it.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._validation import ConfigError, DataError
from .checkpoints import (
    check_fingerprint,
    load_checkpoint,
    loader_generators,
    save_checkpoint,
    set_rng,
    write_log,
)
from .io import plain
from .model_files import save_model_file
from .models import check_initialized

__all__ = [
    'FitResult',
    'Precision',
    'StageSpec',
    'evaluate',
    'make_scheduler',
    'resolve_precision',
    'run_stage',
    'stage_result',
    'train_epoch',
]


# --------------------------------------------------------------------------- precision


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs: autocast dtype (None = float32), memory layout, loss scaling."""

    name: str
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    grad_scaler: bool = False


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """Turn ``'auto' | 'fp32' | 'bf16' | 'fp16'`` into a :class:`Precision` for ``device``.

    ``'auto'`` means: on CUDA, bfloat16 autocast where the GPU supports it
    (else float16 with loss scaling), with channels-last 3-D tensors; on a CPU
    with native bfloat16 (AVX512-BF16 or AMX), bfloat16 autocast in the default
    memory layout; otherwise float32. The rule comes from
    ``bench/train_speed.py`` at the workshop input size: on 2 CPU cores a
    bfloat16 training step was about 2.4x faster than float32 with the same
    validation error, and channels-last made it slower (1.3x); on an H100
    channels-last made bfloat16 about 1.3x faster. The network's fully
    connected layers and the PCA decoder always run in float32.

    The environment variable ``DEEPSSM_PRECISION`` (``fp32``, ``bf16`` or
    ``fp16``) overrides what ``'auto'`` picks, for every notebook of a run:
    some CPUs report native bfloat16 but run it barely faster than float32,
    and ``DEEPSSM_PRECISION=fp32`` stands in for a CPU without it.
    """
    cuda = device.type == 'cuda'
    if precision == 'auto' and os.environ.get('DEEPSSM_PRECISION'):
        precision = os.environ['DEEPSSM_PRECISION'].strip().lower()
        if precision not in ('fp32', 'bf16', 'fp16'):
            raise ConfigError(
                f"environment variable DEEPSSM_PRECISION: expected 'fp32', 'bf16' or 'fp16'; "
                f'got {os.environ["DEEPSSM_PRECISION"]!r}.'
            )
    if precision == 'auto':
        if cuda:
            precision = 'bf16' if torch.cuda.is_bf16_supported() else 'fp16'
        elif device.type == 'cpu' and _cpu_has_native_bf16():
            precision = 'bf16'
        else:
            precision = 'fp32'
    if precision == 'fp32':
        return Precision('fp32')
    if precision == 'bf16':
        return Precision('bf16', torch.bfloat16, channels_last=cuda)
    if precision == 'fp16':
        return Precision('fp16', torch.float16, channels_last=cuda, grad_scaler=cuda)
    raise ConfigError(f"precision must be one of ['auto', 'fp32', 'bf16', 'fp16']; got {precision!r}.")


def _cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    if precision.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=precision.autocast_dtype)


# --------------------------------------------------------------------------- learning-rate schedule


class _CosineFactor:
    """Cosine decay from 1 to ``floor`` over ``t_max`` epochs, then flat (it never restarts)."""

    def __init__(self, t_max: int, floor: float):
        self.t_max, self.floor = max(int(t_max), 1), float(floor)

    def __call__(self, epoch: int) -> float:
        e = min(epoch, self.t_max)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * e / self.t_max))


def make_scheduler(optimizer: torch.optim.Optimizer, decay: Any, epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Learning-rate schedule, stepped once per epoch.

    Args:
        optimizer: The optimizer (its learning rate is the start value).
        decay: A ``DecayLRConfig`` (``enabled``, ``type``, ``parameters``) or None (constant).
            ``CosineAnnealing`` decays to ``eta_min`` over ``T_max`` epochs (``T_max = 0``:
            the whole run) and then stays there; ``Step`` multiplies by ``gamma``
            every ``step_size`` epochs.
        epochs: Epochs of the run.
    """
    if decay is None or not decay.enabled:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    params = {'T_max': 0, 'eta_min': 0.0, 'step_size': 1, 'gamma': 0.99, **(decay.parameters or {})}
    if decay.type == 'Step':
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=max(int(params['step_size']), 1), gamma=float(params['gamma'])
        )
    if decay.type != 'CosineAnnealing':
        raise ConfigError(f"decay_lr.type must be 'CosineAnnealing' or 'Step'; got {decay.type!r}.")
    lr = optimizer.param_groups[0]['lr']
    t_max = int(params['T_max']) or epochs
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _CosineFactor(t_max, float(params['eta_min']) / lr))


# --------------------------------------------------------------------------- stage description and result


@dataclass
class StageSpec:
    """One training stage.

    ``step(net, batch)`` returns ``(loss, predicted particles (B, M, 3), true
    particles (B, M, 3))``; it runs under autocast, with gradients in training
    and under ``torch.no_grad()`` in validation; ``batch.epoch`` is the epoch
    (1-based). ``trainable(net)`` lists the modules that learn in this stage
    (the rest are frozen; frozen batch normalisation keeps its running
    statistics). ``grad_clip > 0`` clips the gradient norm of every step to
    it. With ``keep_start``
    the incoming model is validated first and counts as epoch 0: the stage's
    best model is then never worse on validation than the model it started
    from (used by fine tuning, which can drift away from a good base model).
    """

    name: str
    suffix: str
    epochs: int
    learning_rate: float
    step: Callable[[nn.Module, Any], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    trainable: Callable[[nn.Module], Iterable[nn.Module]]
    decay: Any = None
    val_freq: int = 1
    weight_decay: float = 0.0
    early_stopping: int = 0
    seed: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    keep_start: bool = False
    grad_clip: float = 0.0


@dataclass
class FitResult:
    """What a stage produced.

    Attributes:
        stage: Stage name (``'base'``, ``'fine_tune'``, ``'tl_ae'``, ``'tl_tf'``, ``'tl_joint'``).
        history: One dict per epoch with the :data:`LOG_COLUMNS`.
        best_epoch: Epoch of the lowest validation RMSE (mm); 0 is the starting model (``keep_start``).
        best_val_rmse_mm: That RMSE.
        final_val_rmse_mm: Validation RMSE after the last epoch.
        stopped_early: Whether early stopping ended the stage.
        best_path, final_path: The saved model files.
        precision: The precision used (``'fp32'``, ``'bf16'``, ``'fp16'``).
    """

    stage: str
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_rmse_mm: float
    final_val_rmse_mm: float
    stopped_early: bool
    best_path: Path
    final_path: Path
    precision: str

    @property
    def seconds(self) -> float:
        return float(sum(r['seconds'] for r in self.history))


# --------------------------------------------------------------------------- the loop


class _Batch:
    """A loader batch with tensors moved to the device on first access."""

    def __init__(self, batch: dict, device: torch.device, channels_last: bool, epoch: int = 1):
        self._b, self._device, self._cl = batch, device, channels_last
        self.epoch = epoch

    @property
    def images(self) -> torch.Tensor:
        x = self._b['image'].to(self._device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last_3d) if self._cl else x

    @property
    def particles(self) -> torch.Tensor:
        return self._b['particles'].to(self._device, non_blocking=True).float()

    @property
    def scores(self) -> torch.Tensor:
        return self._b['scores'].to(self._device, non_blocking=True).float()


def run_stage(
    net: nn.Module,
    train_loader: Any,
    val_loader: Any,
    spec: StageSpec,
    *,
    model_dir: Path,
    device: torch.device,
    precision: Precision,
    normalization: dict | None = None,
    callback: Callable[[dict], Any] | None = None,
    progress: bool = True,
    restart: bool = False,
) -> FitResult:
    """Train one stage (resuming from its checkpoint when one exists); see :class:`StageSpec`."""
    from tqdm.auto import tqdm

    check_initialized(net)
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = model_dir / f'checkpoint{spec.suffix}.pt'
    best_path, final_path = model_dir / f'best_model{spec.suffix}.torch', model_dir / f'final_model{spec.suffix}.torch'
    log_path = model_dir / 'train_log.csv'
    fingerprint = {'stage': spec.name, 'kind': net.kind, 'precision': precision.name, **plain(spec.settings)}

    net.to(device)
    if precision.channels_last:
        net.to(memory_format=torch.channels_last_3d)
    net.requires_grad_(False)
    for module in spec.trainable(net):
        module.requires_grad_(True)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=spec.learning_rate, weight_decay=spec.weight_decay)
    scheduler = make_scheduler(optimizer, spec.decay, spec.epochs)
    scaler = torch.amp.GradScaler(device.type) if precision.grad_scaler else None

    state = {
        'epoch': 0,
        'rows': [],
        'best_epoch': 0,
        'best_val': math.inf,
        'bad_validations': 0,
        'stopped_early': False,
        'finished': False,
    }
    ckpt = load_checkpoint(ckpt_path) if ckpt_path.is_file() and not restart else None
    if ckpt is not None:
        check_fingerprint(ckpt, fingerprint, net.model_kwargs, ckpt_path)
        net.load_state_dict(ckpt['model'])
        state.update(ckpt['state'])
        if state['finished']:
            return stage_result(spec, state, model_dir, precision.name)
        optimizer.load_state_dict(ckpt['optimizer'])
        scheduler.load_state_dict(ckpt['scheduler'])
        if scaler is not None and ckpt.get('scaler'):
            scaler.load_state_dict(ckpt['scaler'])
        set_rng(ckpt['rng'], train_loader)
    else:
        if spec.keep_start:  # the incoming model is epoch 0: the stage keeps it unless an epoch validates better
            val0 = evaluate(net, val_loader, spec.step, device=device, precision=precision)
            state.update(best_val=val0, best_epoch=0)
            save_model_file(best_path, net, stage=spec.name, epoch=0, val_rmse_mm=val0, normalization=normalization)
        # Every random stream of the stage, the loader's shuffling included, starts from the stage's seed, so a
        # stage run in a fresh process (after the one before it finished elsewhere) repeats an uninterrupted run.
        torch.manual_seed(spec.seed)
        np.random.seed(spec.seed)
        random.seed(spec.seed)
        for generator in loader_generators(train_loader):
            generator.manual_seed(spec.seed)

    bar = tqdm(total=spec.epochs, initial=state['epoch'], desc=spec.name, unit='epoch', disable=not progress)
    val_every = max(int(spec.val_freq), 1)
    for epoch in range(state['epoch'] + 1, spec.epochs + 1):
        if state['stopped_early']:
            break
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]['lr']
        train_loss, train_rmse = train_epoch(
            net, train_loader, spec, optimizer, scaler, device, precision, progress=progress, epoch=epoch
        )
        val_rmse = math.nan
        if epoch == 1 or epoch % val_every == 0 or epoch == spec.epochs:
            val_rmse = evaluate(net, val_loader, spec.step, device=device, precision=precision, epoch=epoch)
        scheduler.step()
        row = {
            'stage': spec.name,
            'epoch': epoch,
            'train_loss': train_loss,
            'train_rmse_mm': train_rmse,
            'val_rmse_mm': val_rmse,
            'lr': lr,
            'seconds': time.perf_counter() - t0,
        }
        state['rows'].append(row)
        if not math.isnan(val_rmse):
            if val_rmse < state['best_val']:
                state.update(best_val=val_rmse, best_epoch=epoch, bad_validations=0)
                save_model_file(
                    best_path, net, stage=spec.name, epoch=epoch, val_rmse_mm=val_rmse, normalization=normalization
                )
            else:
                state['bad_validations'] += 1
                if spec.early_stopping and state['bad_validations'] >= spec.early_stopping:
                    state['stopped_early'] = True
        state['epoch'] = epoch
        save_checkpoint(ckpt_path, net, optimizer, scheduler, scaler, state, fingerprint, train_loader)
        write_log(log_path, spec.name, state['rows'])
        bar.update(1)
        bar.set_postfix(train_mm=f'{train_rmse:.3g}', val_mm=f'{val_rmse:.3g}', lr=f'{lr:.2g}')
        if callback is not None:
            callback(dict(row, epochs=spec.epochs))
    bar.close()
    save_model_file(
        final_path,
        net,
        stage=spec.name,
        epoch=state['epoch'],
        val_rmse_mm=stage_result(spec, state, model_dir, precision.name).final_val_rmse_mm,
        normalization=normalization,
    )
    state['finished'] = True
    save_checkpoint(ckpt_path, net, optimizer, scheduler, scaler, state, fingerprint, train_loader)
    return stage_result(spec, state, model_dir, precision.name)


def _sq_sum(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum of squared per-particle distances, float64, on the device (no synchronisation)."""
    return torch.sum((pred.detach().double() - target.detach().double()) ** 2)


def train_epoch(
    net, loader, spec, optimizer, scaler, device, precision, *, progress, epoch: int = 1
) -> tuple[float, float]:
    """One pass over ``loader``; returns (mean loss, RMSE in mm). Metrics stay on the device until the end."""
    from tqdm.auto import tqdm

    net.train()
    for m in net.modules():  # a frozen batch norm keeps its statistics too
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()
    params = [p for p in net.parameters() if p.requires_grad]
    sq = torch.zeros((), dtype=torch.float64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count, n_batches = 0, 0
    for batch in tqdm(loader, desc='batches', leave=False, disable=not progress):
        with _autocast(device, precision):
            loss, pred, target = spec.step(net, _Batch(batch, device, precision.channels_last, epoch))
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if spec.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, spec.grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if spec.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, spec.grad_clip)
            optimizer.step()
        sq += _sq_sum(pred, target)
        loss_sum += loss.detach().double()
        count, n_batches = count + pred.shape[0] * pred.shape[1], n_batches + 1
    if n_batches == 0:
        raise DataError(f'{spec.name}: the training loader gave no batches.')
    mean_loss = float(loss_sum) / n_batches
    if not math.isfinite(mean_loss):
        raise FloatingPointError(
            f'{spec.name}: the training loss became {mean_loss}; try a lower learning rate '
            f'(now {optimizer.param_groups[0]["lr"]:.3g}) or precision fp32.'
        )
    return mean_loss, math.sqrt(float(sq) / count)


def evaluate(
    net: nn.Module, loader: Any, step: Callable, *, device: torch.device, precision: Precision, epoch: int = 1
) -> float:
    """Validation RMSE in mm (root mean squared per-particle distance), under ``torch.no_grad()``."""
    net.eval()
    sq, count = torch.zeros((), dtype=torch.float64, device=device), 0
    with torch.no_grad():
        for batch in loader:
            with _autocast(device, precision):
                _, pred, target = step(net, _Batch(batch, device, precision.channels_last, epoch))
            sq += _sq_sum(pred, target)
            count += pred.shape[0] * pred.shape[1]
    net.train()
    if count == 0:
        raise DataError('The validation loader gave no batches; it needs at least one sample.')
    return math.sqrt(float(sq) / count)


def stage_result(spec: StageSpec, state: dict, model_dir: Path, precision: str) -> FitResult:
    """The :class:`FitResult` of a stage from its state (as stored in its checkpoint)."""
    last_val = next((r['val_rmse_mm'] for r in reversed(state['rows']) if not math.isnan(r['val_rmse_mm'])), math.nan)
    return FitResult(
        stage=spec.name,
        history=list(state['rows']),
        best_epoch=state['best_epoch'],
        best_val_rmse_mm=state['best_val'],
        final_val_rmse_mm=last_val,
        stopped_early=state['stopped_early'],
        best_path=model_dir / f'best_model{spec.suffix}.torch',
        final_path=model_dir / f'final_model{spec.suffix}.torch',
        precision=precision,
    )
