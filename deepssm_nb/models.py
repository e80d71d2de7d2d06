"""Base-DeepSSM and TL-DeepSSM, built from numbers (never from files).

A little over 400 lines: the two networks share their convolutional backbone and PCA decoder here; saving and
loading them is in :mod:`~deepssm_nb.model_files`.

Both networks map a whitened image volume ``images: (B, 1, D, H, W)`` to a
latent vector and to correspondence points ``particles: (B, M, 3)`` in world
millimetres. Their image encoder is the DeepSSM convolutional backbone: five
3-D convolutions (kernel 5, batch norm, PReLU; max pooling after the 1st, 3rd
and 5th) and two fully connected layers (384 and 96 units, PReLU), with Xavier
initialisation.

* :class:`DeepSSMNet` regresses the *whitened* PCA scores and decodes them with
  a linear layer that holds the PCA basis and mean (:func:`init_pca_decoder`).
  The decoder is frozen for training and freed for fine tuning
  (:func:`set_decoder_trainable`).
* :class:`TLDeepSSMNet` learns its own latent space with a correspondence
  autoencoder (3M -> 1024 -> 512 -> L and back) and an image encoder (the
  "T-flank") that regresses the autoencoder's latent vector.

For inputs of 60+ voxels per axis the layout is that of the reference
implementation (no padding). Along an axis that is too small for it, the
convolutions switch to 'same' padding, so any input size works; the flatten
size is computed from ``in_shape``.

Example:
    >>> net = DeepSSMNet(in_shape=(1, 32, 40, 24), num_latent=6, num_correspondences=128)
    >>> scores, particles = net(torch.zeros(2, 1, 32, 40, 24))
    >>> tuple(scores.shape), tuple(particles.shape)
    ((2, 6), (2, 128, 3))
"""

from __future__ import annotations

import contextlib
import itertools
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ._validation import NotFittedError, look_up_option

__all__ = [
    'MODEL_KINDS',
    'ConvBackbone',
    'DeepSSMNet',
    'InputMask',
    'TLDeepSSMNet',
    'build_model',
    'init_pca_decoder',
    'input_box',
    'mc_dropout',
    'set_decoder_trainable',
    'set_input_mask',
]

MODEL_KINDS = ('base', 'tl')
_BLOCKS = (1, 2, 2)  # convolutions per block; each block ends with a max pooling
_KERNEL = 5


def _plan_axis(size: int, padding: str) -> tuple[int, list[int], int] | None:
    """Padding, pooling kernels and final size along one axis, or None if too small."""
    pad = 0 if padding == 'valid' else _KERNEL // 2
    s, kernels = size, []
    for n_convs in _BLOCKS:
        s -= n_convs * (_KERNEL - 1 - 2 * pad)
        if s < (2 if padding == 'valid' else 1):
            return None
        k = 2 if s >= 2 else 1  # ('same' only) no pooling along an axis of one voxel
        kernels.append(k)
        s //= k
    return pad, kernels, s


class ConvBackbone(nn.Module):
    """The DeepSSM convolutional backbone: 5 conv layers and 2 fully connected layers.

    Args:
        in_shape: ``(1, D, H, W)`` (or ``(D, H, W)``), the input volume size.
        channels: Output channels of the five convolutions.
        padding: ``'auto'`` (no padding along axes of 60+ voxels as the reference,
            'same' padding along smaller axes), ``'valid'`` or ``'same'``.
        dropout: Dropout probability before each fully connected layer.

    Attributes:
        feature_shape: ``(C, d, h, w)`` of the last convolution block's output.
        flatten_size: Inputs of the first fully connected layer.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        channels: Sequence[int] = (12, 24, 48, 96, 192),
        *,
        padding: str = 'auto',
        dropout: float = 0.0,
    ):
        super().__init__()
        shape = _check_in_shape(in_shape)
        padding = look_up_option(padding, ('auto', 'valid', 'same'), name='padding')
        channels = tuple(int(c) for c in channels)
        if len(channels) != 5 or min(channels) < 1:
            raise ValueError(f'channels must be 5 positive integers; got {channels}.')
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f'dropout must be in [0, 1); got {dropout}.')
        plans = []
        for axis, size in zip('DHW', shape):
            plan = None if padding == 'same' else _plan_axis(size, 'valid')
            if plan is None and padding == 'valid':
                raise ValueError(
                    f'in_shape {tuple(in_shape)}: axis {axis} has {size} voxels, too few for '
                    "padding='valid' (at least 60 are needed); use padding='auto' or 'same'."
                )
            plans.append(plan if plan is not None else _plan_axis(size, 'same'))
        pads = tuple(p[0] for p in plans)
        layers: dict[str, nn.Module] = {}
        c_in, i = 1, 0
        for b, n_convs in enumerate(_BLOCKS):
            for _ in range(n_convs):
                layers[f'conv{i + 1}'] = nn.Conv3d(c_in, channels[i], _KERNEL, padding=pads)
                layers[f'bn{i + 1}'] = nn.BatchNorm3d(channels[i])
                layers[f'act{i + 1}'] = nn.PReLU()
                c_in, i = channels[i], i + 1
            layers[f'pool{b + 1}'] = nn.MaxPool3d(tuple(p[1][b] for p in plans))
        self.features = nn.Sequential(OrderedDict(layers))
        self.feature_shape = (channels[-1],) + tuple(p[2] for p in plans)
        self.flatten_size = int(np.prod(self.feature_shape))
        fc: dict[str, nn.Module] = {}
        for k, (a, b) in enumerate(((self.flatten_size, 384), (384, 96)), start=1):
            if dropout > 0:
                fc[f'drop{k}'] = nn.Dropout(dropout)
            fc[f'fc{k}'], fc[f'act{k}'] = nn.Linear(a, b), nn.PReLU()
        self.fc = nn.Sequential(OrderedDict(fc))
        self.in_shape = (1,) + shape

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images: (B, 1, D, H, W)`` -> features ``(B, 96)`` (fully connected part in float32)."""
        return self.dense(self.conv(images))

    def conv(self, images: torch.Tensor) -> torch.Tensor:
        """The convolutional part: ``images (B, 1, D, H, W)`` -> flattened features ``(B, flatten_size)``."""
        if images.ndim != 5 or tuple(images.shape[1:]) != self.in_shape:
            raise ValueError(
                f'images must have shape (B, {", ".join(map(str, self.in_shape))}); got {tuple(images.shape)}.'
            )
        return self.features(images).flatten(1)

    def dense(self, x: torch.Tensor) -> torch.Tensor:
        """The fully connected part (float32, with its dropout): ``(B, flatten_size)`` -> ``(B, 96)``."""
        with torch.autocast(x.device.type, enabled=False):
            return self.fc(x.float())


class InputMask(nn.Module):
    """Crop images to a box and set the voxels outside a mask to 0 (the mean of a whitened image).

    With it the encoder reads only the region where the shape lives (e.g. a band around the mean femur), so the
    pelvis, the soft tissue and the edge of the field of view cannot tell the training images apart, and each
    step convolves fewer voxels. The mask is a buffer (saved with the model); the box is a constructor argument.

    Args:
        in_shape: ``(1, D, H, W)`` (or ``(D, H, W)``), the full input size.
        box: ``((z0, z1), (y0, y1), (x0, x1))`` voxel ranges (end excluded) kept of each axis.

    Attributes:
        out_shape: ``(1, z1 - z0, y1 - y0, x1 - x0)``.
    """

    def __init__(self, in_shape: Sequence[int], box: Sequence[Sequence[int]]):
        super().__init__()
        shape = _check_in_shape(in_shape)
        self.box = _check_box(box, shape)
        self.in_shape = (1,) + shape
        self.out_shape = (1,) + tuple(b - a for a, b in self.box)
        self.register_buffer('mask', torch.ones(self.out_shape[1:]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images: (B, 1, D, H, W)`` -> ``(B, 1, d, h, w)``, masked."""
        if images.ndim != 5 or tuple(images.shape[1:]) != self.in_shape:
            raise ValueError(
                f'images must have shape (B, {", ".join(map(str, self.in_shape))}); got {tuple(images.shape)}.'
            )
        (z0, z1), (y0, y1), (x0, x1) = self.box
        return images[:, :, z0:z1, y0:y1, x0:x1] * self.mask.to(images.dtype)


def _check_box(box: Sequence[Sequence[int]], shape: tuple[int, int, int]) -> tuple[tuple[int, int], ...]:
    try:
        out = tuple((int(a), int(b)) for a, b in box)
    except (TypeError, ValueError):
        raise ValueError(f'input_box must be 3 pairs (start, stop) of voxel indices; got {box!r}.') from None
    if len(out) != 3 or any(not 0 <= a < b <= n for (a, b), n in zip(out, shape)):
        raise ValueError(
            f'input_box must be 3 pairs (start, stop) with 0 <= start < stop <= size for an input '
            f'of size {shape} (z, y, x); got {box!r}.'
        )
    return out


def input_box(mask: np.ndarray) -> list[list[int]]:
    """The smallest box ``[[z0, z1], [y0, y1], [x0, x1]]`` (end excluded) holding every nonzero voxel of ``mask``.

    Raises:
        ValueError: ``mask`` is not 3D or has no nonzero voxel.
    """
    mask = np.asarray(mask)
    if mask.ndim != 3 or not mask.any():
        raise ValueError(
            f'mask must be a 3D array with at least one nonzero voxel; got shape {mask.shape} '
            f'with {int(np.count_nonzero(mask))} nonzero.'
        )
    box = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(j for j in range(3) if j != axis)))
        box.append([int(hit[0]), int(hit[-1]) + 1])
    return box


def set_input_mask(net: nn.Module, mask: np.ndarray) -> nn.Module:
    """Load a full-size ``(D, H, W)`` mask into the :class:`InputMask` of ``net`` (in place) and return ``net``.

    Raises:
        ValueError: ``net`` was built without ``input_box``, or ``mask`` has another shape or has voxels outside
            the box.
    """
    enc = net.encoder if isinstance(net, DeepSSMNet) else net.image_encoder
    im = getattr(enc, 'input_mask', None)
    if im is None:
        raise ValueError('this network was built without input_box; there is no input mask to set.')
    mask = np.asarray(mask, dtype=np.float32)
    if mask.shape != im.in_shape[1:]:
        raise ValueError(f'mask must have the input shape {im.in_shape[1:]} (z, y, x); got {mask.shape}.')
    (z0, z1), (y0, y1), (x0, x1) = im.box
    inside = mask[z0:z1, y0:y1, x0:x1]
    if np.count_nonzero(mask) != np.count_nonzero(inside):
        raise ValueError(f"mask has nonzero voxels outside the network's input_box {im.box}.")
    with torch.no_grad():
        im.mask.copy_(torch.from_numpy(np.ascontiguousarray(inside)))
    return net


def _check_in_shape(in_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in in_shape)
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f'in_shape must be (1, D, H, W) with positive sizes; got {tuple(in_shape)}.')
    return shape  # type: ignore[return-value]


def _xavier_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.Linear)):
            nn.init.xavier_normal_(m.weight)


MLP_HIDDEN = 256  # hidden units of the non-linear decoder's MLP


class _PCADecoder(nn.Module):
    """Whitened scores ``(B, L)`` -> particles ``(B, M, 3)``: ``mean + (z * std + mu) @ components``.

    With ``nonlinear`` a small MLP ``L -> 256 -> 3 M`` (PReLU) adds a correction to that output. Its last layer
    starts at zero, so the decoder starts as the PCA decoder exactly, and it learns with the encoder.
    """

    def __init__(self, num_latent: int, num_correspondences: int, nonlinear: bool = False):
        super().__init__()
        self.linear = nn.Linear(num_latent, 3 * num_correspondences)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.linear.requires_grad_(False)
        if nonlinear:
            self.mlp = _mlp([num_latent, MLP_HIDDEN, 3 * num_correspondences])
            _xavier_init(self.mlp)
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)
            self.mlp.requires_grad_(False)
        self.register_buffer('score_mean', torch.zeros(num_latent))
        self.register_buffer('score_std', torch.ones(num_latent))
        self.register_buffer('initialized', torch.tensor(False))

    @property
    def nonlinear(self) -> bool:
        return hasattr(self, 'mlp')

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(z.device.type, enabled=False):
            out = self.linear(z.float() * self.score_std + self.score_mean)
            if self.nonlinear:
                out = out + self.mlp(z.float())
        return out.view(z.shape[0], -1, 3)

    def jacobian(self, z: torch.Tensor) -> torch.Tensor:
        """``d particles / d z`` at ``z (B, L)``: ``(B, 3 M, L)``, rows in the order x0, y0, z0, x1, ...

        Exact: the PCA part is linear, and the MLP's is ``W2 diag(PReLU'(h)) W1`` with ``h`` its hidden layer.
        """
        with torch.autocast(z.device.type, enabled=False):
            z = z.float()
            jac = (self.linear.weight * self.score_std)[None].expand(z.shape[0], -1, -1)
            if self.nonlinear:
                first, act, last = self.mlp
                h = first(z)
                slope = torch.where(h > 0, torch.ones_like(h), act.weight.expand_as(h))
                jac = jac + torch.einsum('oh,bh,hl->bol', last.weight, slope, first.weight)
        return jac

    def pca(self, z: torch.Tensor) -> torch.Tensor:
        """The linear (PCA) part alone: ``(B, L)`` -> ``(B, M, 3)``."""
        with torch.autocast(z.device.type, enabled=False):
            return self.linear(z.float() * self.score_std + self.score_mean).view(z.shape[0], -1, 3)


class DeepSSMNet(nn.Module):
    """Base-DeepSSM: image -> whitened PCA scores -> particles through a linear PCA decoder.

    Args:
        in_shape: ``(1, D, H, W)``, the input volume size.
        num_latent: L, the number of PCA scores regressed.
        num_correspondences: M, the number of particles per shape.
        channels: Output channels of the five convolutions.
        dropout: Dropout probability before each fully connected layer.
        padding: See :class:`ConvBackbone`.
        input_box: Voxel ranges ``((z0, z1), (y0, y1), (x0, x1))`` the encoder reads (see :class:`InputMask`;
            load the mask with :func:`set_input_mask`); None reads the whole image.
        stochastic: A stochastic encoder (Uncertain-DeepSSM): a second head predicts the log-variance of every
            score; :meth:`encode` returns both.
        nonlinear_decoder: Add a small MLP to the PCA decoder (``decoder.linear: false``); it starts at zero, so
            the network's output at initialisation is that of the PCA decoder.

    Call :func:`init_pca_decoder` before training. ``net(images)`` returns
    ``(scores (B, L) whitened, particles (B, M, 3) in mm)``; for a stochastic encoder the scores are the means.

    Example:
        >>> net = DeepSSMNet((1, 64, 64, 64), num_latent=8, num_correspondences=512)
        >>> net.encoder.backbone.feature_shape
        (192, 1, 1, 1)
    """

    kind = 'base'

    def __init__(
        self,
        in_shape: Sequence[int],
        num_latent: int,
        num_correspondences: int,
        channels: Sequence[int] = (12, 24, 48, 96, 192),
        dropout: float = 0.0,
        padding: str = 'auto',
        input_box: Sequence[Sequence[int]] | None = None,
        stochastic: bool = False,
        nonlinear_decoder: bool = False,
    ):
        super().__init__()
        _check_sizes(num_latent, num_correspondences)
        self.model_kwargs = _model_kwargs(
            in_shape, num_latent, num_correspondences, channels, dropout, padding, input_box, stochastic
        )
        if nonlinear_decoder:
            self.model_kwargs['nonlinear_decoder'] = True
        self.encoder = _ImageEncoder(in_shape, num_latent, channels, dropout, padding, input_box, stochastic)
        self.decoder = _PCADecoder(num_latent, num_correspondences, nonlinear=nonlinear_decoder)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images: (B, 1, D, H, W)`` -> ``(scores (B, L), particles (B, M, 3))``."""
        z = self.encoder(images)
        return z, self.decoder(z)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``images`` -> ``(score means (B, L), log-variances (B, L) or None for a deterministic encoder)``."""
        return self.encoder.distribution(images)

    def encode_passes(
        self, images: torch.Tensor, passes: int, seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Monte Carlo dropout: ``passes`` encodings of each image, see :meth:`_ImageEncoder.passes`."""
        return self.encoder.passes(images, passes, seed)


class _ImageEncoder(nn.Module):
    """Backbone plus a linear head to L outputs (float32); stochastic: a second head to their log-variances."""

    def __init__(self, in_shape, num_latent, channels, dropout, padding, input_box=None, stochastic=False):
        super().__init__()
        if input_box is not None:
            self.input_mask = InputMask(in_shape, input_box)
            in_shape = self.input_mask.out_shape
        self.backbone = ConvBackbone(in_shape, channels, padding=padding, dropout=dropout)
        self.head = nn.Linear(96, num_latent)
        _xavier_init(self)
        if stochastic:
            # starts at log σ² = 0: a variance of 1 in whitened units, the spread of the training scores
            self.log_var_head = nn.Linear(96, num_latent)
            nn.init.zeros_(self.log_var_head.weight)
            nn.init.zeros_(self.log_var_head.bias)

    @property
    def stochastic(self) -> bool:
        return hasattr(self, 'log_var_head')

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.distribution(images)[0]

    def distribution(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(mean (B, L), log-variance (B, L) or None)`` from one pass of the backbone."""
        if hasattr(self, 'input_mask'):
            images = self.input_mask(images)
        return self._heads(self.backbone(images))

    def _heads(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        with torch.autocast(features.device.type, enabled=False):
            mean = self.head(features)
            return mean, (self.log_var_head(features) if self.stochastic else None)

    def passes(self, images: torch.Tensor, passes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``passes`` Monte Carlo dropout encodings of each image: ``(means (T, B, L), log-variances or None)``.

        The convolutions run once per image (they have no dropout); only the fully connected part runs ``passes``
        times, with its dropout active and batch normalisation frozen. Every image gets the same ``passes`` dropout
        masks, drawn from ``seed``, so an image's result does not depend on the batch it came in. With
        ``passes=1`` or no dropout this is the plain (eval-mode) encoding.
        """
        t = int(passes)
        if t < 1:
            raise ValueError(f'passes must be an integer >= 1; got {passes!r}.')
        modes = {m: m.training for m in self.modules()}
        self.eval()
        try:
            if hasattr(self, 'input_mask'):
                images = self.input_mask(images)
            flat = self.backbone.conv(images)
            if t == 1 or not any(isinstance(m, nn.Dropout) and m.p > 0 for m in self.modules()):
                mean, log_var = self._heads(self.backbone.dense(flat))
                return mean[None], (None if log_var is None else log_var[None])
            with mc_dropout(self):
                means, log_vars = [], []
                for row in flat:
                    with torch.random.fork_rng(devices=[row.device] if row.device.type == 'cuda' else []):
                        torch.manual_seed(int(seed))
                        mean, log_var = self._heads(self.backbone.dense(row.expand(t, -1)))
                    means.append(mean)
                    log_vars.append(log_var)
            mean = torch.stack(means, dim=1)
            return mean, (None if log_vars[0] is None else torch.stack(log_vars, dim=1))
        finally:
            for m, mode in modes.items():
                m.train(mode)


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.PReLU())
    return nn.Sequential(*layers)


class TLDeepSSMNet(nn.Module):
    """TL-DeepSSM: a correspondence autoencoder plus an image encoder (T-flank) into its latent space.

    The autoencoder sees particles centred on the mean shape and divided by
    one overall scale (both set by :func:`init_pca_decoder`), and its decoder
    returns particles in mm.

    Args:
        in_shape: ``(1, D, H, W)``.
        num_latent: L, the latent size.
        num_correspondences: M.
        channels, dropout, padding: Of the image encoder, see :class:`ConvBackbone`.
        input_box, stochastic: See :class:`DeepSSMNet`.

    ``net(images)`` returns ``(latent (B, L), particles (B, M, 3))`` (image
    path); ``net.autoencode(particles)`` returns ``(latent, reconstruction)``.
    """

    kind = 'tl'

    def __init__(
        self,
        in_shape: Sequence[int],
        num_latent: int,
        num_correspondences: int,
        channels: Sequence[int] = (12, 24, 48, 96, 192),
        dropout: float = 0.0,
        padding: str = 'auto',
        input_box: Sequence[Sequence[int]] | None = None,
        stochastic: bool = False,
    ):
        super().__init__()
        _check_sizes(num_latent, num_correspondences)
        self.model_kwargs = _model_kwargs(
            in_shape, num_latent, num_correspondences, channels, dropout, padding, input_box, stochastic
        )
        m3 = 3 * num_correspondences
        self.image_encoder = _ImageEncoder(in_shape, num_latent, channels, dropout, padding, input_box, stochastic)
        self.ae_encoder = _mlp([m3, 1024, 512, num_latent])
        self.ae_decoder = _mlp([num_latent, 512, 1024, m3])
        _xavier_init(self.ae_encoder)
        _xavier_init(self.ae_decoder)
        self.register_buffer('particle_mean', torch.zeros(num_correspondences, 3))
        self.register_buffer('particle_scale', torch.tensor(1.0))
        self.register_buffer('initialized', torch.tensor(False))

    def encode_particles(self, particles: torch.Tensor) -> torch.Tensor:
        """``particles: (B, M, 3)`` mm -> latent ``(B, L)``."""
        with torch.autocast(particles.device.type, enabled=False):
            x = (particles.float() - self.particle_mean) / self.particle_scale
            return self.ae_encoder(x.flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """latent ``(B, L)`` -> particles ``(B, M, 3)`` mm."""
        with torch.autocast(z.device.type, enabled=False):
            out = self.ae_decoder(z.float()).view(z.shape[0], -1, 3)
            return out * self.particle_scale + self.particle_mean

    def autoencode(self, particles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``particles: (B, M, 3)`` -> ``(latent (B, L), reconstruction (B, M, 3))``."""
        z = self.encode_particles(particles)
        return z, self.decode(z)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images: (B, 1, D, H, W)`` -> ``(latent (B, L), particles (B, M, 3))``."""
        z = self.image_encoder(images)
        return z, self.decode(z)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``images`` -> ``(latent means (B, L), log-variances (B, L) or None for a deterministic encoder)``."""
        return self.image_encoder.distribution(images)


def _model_kwargs(
    in_shape, num_latent, num_correspondences, channels, dropout, padding, input_box=None, stochastic=False
) -> dict:
    """The numbers a net is built from, as plain JSON-ready values (saved with every model file).

    ``input_box`` and ``stochastic`` are only present when set, so the model files of networks without them are
    unchanged.
    """
    kwargs = {
        'in_shape': [1, *_check_in_shape(in_shape)],
        'num_latent': int(num_latent),
        'num_correspondences': int(num_correspondences),
        'channels': [int(c) for c in channels],
        'dropout': float(dropout),
        'padding': padding,
    }
    if input_box is not None:
        kwargs['input_box'] = [list(b) for b in _check_box(input_box, _check_in_shape(in_shape))]
    if stochastic:
        kwargs['stochastic'] = True
    return kwargs


@contextlib.contextmanager
def mc_dropout(net: nn.Module) -> Iterator[int]:
    """Monte Carlo dropout: inside the block the dropout layers of ``net`` stay active, all else in eval mode.

    Batch normalisation keeps its running statistics, so repeated passes differ only by their dropout masks (drawn
    from torch's global generator: seed it, e.g. with ``torch.random.fork_rng`` and ``torch.manual_seed``, for
    repeatable passes). Yields the number of active dropout layers, and restores every layer's mode afterwards.

    Raises:
        ValueError: ``net`` has no dropout layer with a probability above 0 (every pass would be the same).
    """
    drops = [m for m in net.modules() if isinstance(m, nn.Dropout) and m.p > 0]
    if not drops:
        raise ValueError(
            'mc_dropout: the network has no dropout layer with p > 0, so every pass would be the same; '
            'build it with dropout > 0 (deepssm.encoder.dropout).'
        )
    modes = {m: m.training for m in net.modules()}
    net.eval()
    for m in drops:
        m.train()
    try:
        yield len(drops)
    finally:
        for m, mode in modes.items():
            m.train(mode)


def _check_sizes(num_latent: int, num_correspondences: int) -> None:
    for name, v in (('num_latent', num_latent), ('num_correspondences', num_correspondences)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f'{name} must be an integer >= 1; got {v!r}.')


def init_pca_decoder(
    net: nn.Module, mean: np.ndarray, components: np.ndarray, score_mean: np.ndarray, score_std: np.ndarray
) -> nn.Module:
    """Load the PCA model into a network (in place) and return it.

    For :class:`DeepSSMNet` the decoder becomes ``particles = mean + (z * score_std
    + score_mean) @ components`` with ``z`` the whitened scores; it stays frozen
    until :func:`set_decoder_trainable`. For :class:`TLDeepSSMNet` only the mean
    shape and the overall scale ``sqrt(sum(score_std**2) / (3 M))`` (the RMS
    deviation per coordinate) are used, to normalise the autoencoder.

    Args:
        net: A :class:`DeepSSMNet` or :class:`TLDeepSSMNet`.
        mean: ``(M, 3)`` mean shape, mm.
        components: ``(L, M, 3)`` PCA modes (orthonormal when flattened).
        score_mean: ``(L,)`` mean of the training scores (score whitening).
        score_std: ``(L,)`` standard deviation of the training scores.

    Raises:
        ValueError: Shapes that do not match the network.
    """
    kw = net.model_kwargs
    m, lat = kw['num_correspondences'], kw['num_latent']
    arrays = {
        'mean': (np.asarray(mean, dtype=np.float64), (m, 3)),
        'components': (np.asarray(components, dtype=np.float64), (lat, m, 3)),
        'score_mean': (np.asarray(score_mean, dtype=np.float64).ravel(), (lat,)),
        'score_std': (np.asarray(score_std, dtype=np.float64).ravel(), (lat,)),
    }
    for name, (arr, shape) in arrays.items():
        if arr.shape != shape or not np.all(np.isfinite(arr)):
            raise ValueError(
                f'{name} must be a finite array of shape {shape} for this network '
                f'(num_latent={lat}, num_correspondences={m}); got shape {arr.shape}.'
            )
    if np.any(arrays['score_std'][0] <= 0):
        raise ValueError(f'score_std must be > 0; got {arrays["score_std"][0]}.')
    t = {k: torch.as_tensor(a, dtype=torch.float32) for k, (a, _) in arrays.items()}
    with torch.no_grad():
        if isinstance(net, DeepSSMNet):
            dec = net.decoder
            dec.linear.weight.copy_(t['components'].reshape(lat, 3 * m).T)
            dec.linear.bias.copy_(t['mean'].reshape(-1))
            dec.score_mean.copy_(t['score_mean'])
            dec.score_std.copy_(t['score_std'])
            dec.initialized.fill_(True)
        elif isinstance(net, TLDeepSSMNet):
            net.particle_mean.copy_(t['mean'])
            net.particle_scale.fill_(max(float(np.sqrt(np.sum(arrays['score_std'][0] ** 2) / (3 * m))), 1e-6))
            net.initialized.fill_(True)
        else:
            raise TypeError(f'net must be a DeepSSMNet or TLDeepSSMNet; got {type(net).__name__}.')
    return net


def check_initialized(net: nn.Module) -> None:
    """Raise NotFittedError if :func:`init_pca_decoder` was not called on ``net``."""
    flag = net.decoder.initialized if isinstance(net, DeepSSMNet) else getattr(net, 'initialized', None)
    if flag is not None and not bool(flag):
        raise NotFittedError(
            f'This {type(net).__name__} has no PCA model yet. '
            'Call init_pca_decoder(net, mean, components, score_mean, score_std) first.'
        )


def set_decoder_trainable(net: nn.Module, trainable: bool = True) -> nn.Module:
    """Free (or freeze) the PCA decoder of a :class:`DeepSSMNet`, as for fine tuning."""
    if not isinstance(net, DeepSSMNet):
        raise TypeError(f'only a DeepSSMNet has a PCA decoder; got {type(net).__name__}.')
    net.decoder.linear.requires_grad_(trainable)
    if net.decoder.nonlinear:
        net.decoder.mlp.requires_grad_(trainable)
    return net


def build_model(kind: str, **model_kwargs: Any) -> nn.Module:
    """Build an untrained network from its kind (``'base'`` or ``'tl'``) and constructor arguments."""
    kind = look_up_option(kind, MODEL_KINDS, name='kind')
    return (DeepSSMNet if kind == 'base' else TLDeepSSMNet)(**model_kwargs)
