"""Base-DeepSSM and TL-DeepSSM: shapes, layout, PCA decoder, initialisation, saving."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from deepssm_nb import NotFittedError
from deepssm_nb.model_files import (
    load_model_file,
    load_trained_model,
    model_file,
    parameter_changes,
    save_model_file,
    summary,
)
from deepssm_nb.models import (
    ConvBackbone,
    DeepSSMNet,
    TLDeepSSMNet,
    build_model,
    check_initialized,
    init_pca_decoder,
    mc_dropout,
    set_decoder_trainable,
)

pytestmark = pytest.mark.usefixtures('one_torch_thread')

SMALL = (2, 3, 3, 4, 4)  # channels that keep the shape tests fast


def _pca(m: int, lat: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3 * m, lat)))
    mean = rng.normal(size=(m, 3)) * 20 + 40
    return mean, q.T.reshape(lat, m, 3), rng.normal(size=lat), rng.uniform(0.5, 5.0, size=lat)


# in_shape, expected feature grid (d, h, w) after the last pooling
SHAPE_CASES = [
    ((1, 100, 100, 100), (6, 6, 6)),  # reference layout: 100 -> 48 -> 20 -> 6
    ((1, 60, 60, 60), (1, 1, 1)),  # the smallest size of the reference layout
    ((1, 72, 60, 64), (2, 1, 1)),  # workshop-like, non-cubic
    ((1, 59, 64, 80), (7, 1, 3)),  # one axis too small: 'same' padding there only (59 -> 29 -> 14 -> 7)
    ((1, 16, 16, 16), (2, 2, 2)),  # small: 'same' padding, 16 -> 8 -> 4 -> 2
    ((1, 9, 20, 33), (1, 2, 4)),  # small and non-cubic
    ((1, 3, 1, 5), (1, 1, 1)),  # tiny: pooling skipped along axes of one voxel
]


@pytest.mark.parametrize('in_shape, grid', SHAPE_CASES)
def test_output_shapes(in_shape, grid):
    backbone = ConvBackbone(in_shape, SMALL)
    assert backbone.feature_shape == (SMALL[-1], *grid)
    assert backbone.flatten_size == SMALL[-1] * int(np.prod(grid))
    if np.prod(in_shape) > 300_000:
        return  # the reference size is checked by the arithmetic only, to keep the test fast
    net = DeepSSMNet(in_shape, num_latent=5, num_correspondences=37, channels=SMALL).eval()
    with torch.no_grad():
        z, particles = net(torch.randn(2, *in_shape))
    assert z.shape == (2, 5) and particles.shape == (2, 37, 3)
    tl = TLDeepSSMNet(in_shape, num_latent=5, num_correspondences=37, channels=SMALL).eval()
    with torch.no_grad():
        z, particles = tl(torch.randn(3, *in_shape))
        z_ae, recon = tl.autoencode(torch.randn(3, 37, 3))
    assert z.shape == z_ae.shape == (3, 5) and particles.shape == recon.shape == (3, 37, 3)


def test_reference_layout():
    net = DeepSSMNet((1, 100, 100, 100), num_latent=8, num_correspondences=10)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv3d)]
    assert [c.out_channels for c in convs] == [12, 24, 48, 96, 192]
    assert all(c.kernel_size == (5, 5, 5) and c.padding == (0, 0, 0) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm3d) for m in net.modules()) == 5
    assert sum(isinstance(m, nn.MaxPool3d) for m in net.modules()) == 3
    assert sum(isinstance(m, nn.PReLU) for m in net.encoder.modules()) == 7
    fcs = [m for m in net.encoder.modules() if isinstance(m, nn.Linear)]
    assert [(f.in_features, f.out_features) for f in fcs] == [(6**3 * 192, 384), (384, 96), (96, 8)]


def test_tl_autoencoder_layout():
    net = TLDeepSSMNet((1, 16, 16, 16), num_latent=7, num_correspondences=20, channels=SMALL)
    sizes = lambda seq: [(m.in_features, m.out_features) for m in seq if isinstance(m, nn.Linear)]
    assert sizes(net.ae_encoder) == [(60, 1024), (1024, 512), (512, 7)]
    assert sizes(net.ae_decoder) == [(7, 512), (512, 1024), (1024, 60)]


def test_xavier_init():
    torch.manual_seed(0)
    net = DeepSSMNet((1, 16, 16, 16), num_latent=4, num_correspondences=8)
    conv = net.encoder.backbone.features.conv5  # 96 -> 192
    fan_in, fan_out = 96 * 125, 192 * 125
    assert float(conv.weight.detach().std()) == pytest.approx(np.sqrt(2.0 / (fan_in + fan_out)), rel=0.02)


def test_pca_decoder_reproduces_pca_reconstruction():
    m, lat = 25, 4
    mean, comps, s_mean, s_std = _pca(m, lat)
    net = init_pca_decoder(DeepSSMNet((1, 12, 12, 12), lat, m, channels=SMALL), mean, comps, s_mean, s_std)
    z = torch.randn(6, lat, dtype=torch.float64)
    scores = z.numpy() * s_std + s_mean
    expected = mean + (scores @ comps.reshape(lat, -1)).reshape(6, m, 3)
    got = net.decoder(z.float()).detach().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # the network's particles are the decoded scores, and the decoder is frozen until fine tuning
    with torch.no_grad():
        zz, p = net.eval()(torch.randn(2, 1, 12, 12, 12))
    np.testing.assert_allclose(p.numpy(), net.decoder(zz).numpy(), atol=1e-5)
    assert not any(p.requires_grad for p in net.decoder.parameters())
    set_decoder_trainable(net, True)
    assert all(p.requires_grad for p in net.decoder.parameters())


def test_decoder_stays_float32_under_autocast():
    m, lat = 30, 3
    net = init_pca_decoder(DeepSSMNet((1, 12, 12, 12), lat, m, channels=SMALL), *_pca(m, lat))
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        z, p = net.eval()(torch.randn(2, 1, 12, 12, 12))
    assert z.dtype == torch.float32 and p.dtype == torch.float32


def test_tl_normalisation_from_pca():
    m, lat = 12, 3
    mean, comps, s_mean, s_std = _pca(m, lat)
    net = init_pca_decoder(TLDeepSSMNet((1, 8, 8, 8), lat, m, channels=SMALL), mean, comps, s_mean, s_std)
    np.testing.assert_allclose(net.particle_mean.numpy(), mean, atol=1e-5)
    assert float(net.particle_scale) == pytest.approx(np.sqrt(np.sum(s_std**2) / (3 * m)), rel=1e-5)


def test_save_and_load_round_trip(tmp_path):
    m, lat = 10, 3
    net = init_pca_decoder(DeepSSMNet((1, 10, 12, 14), lat, m, channels=SMALL, dropout=0.1), *_pca(m, lat))
    norm = {'image_mean': np.float32(3.0), 'image_std': 2.0, 'score_mean': np.zeros(lat), 'image_shape': (10, 12, 14)}
    save_model_file(tmp_path / 'best_model.torch', net, stage='base', epoch=4, val_rmse_mm=1.5, normalization=norm)
    loaded = load_trained_model(tmp_path)
    assert not loaded.training and loaded.model_info['epoch'] == 4 and loaded.normalization['image_std'] == 2.0
    x = torch.randn(2, 1, 10, 12, 14)
    with torch.no_grad():
        np.testing.assert_array_equal(loaded(x)[1].numpy(), net.eval()(x)[1].numpy())
    assert model_file(tmp_path).name == 'best_model.torch'
    tl = build_model('tl', **net.model_kwargs)
    assert isinstance(tl, TLDeepSSMNet) and tl.model_kwargs == net.model_kwargs


def test_summary_and_parameter_changes():
    net = DeepSSMNet((1, 16, 16, 16), num_latent=4, num_correspondences=8, channels=SMALL)
    text = summary(net)
    total = sum(p.numel() for p in net.parameters())
    assert 'conv5' in text and 'pool3' in text and 'frozen' in text and f'{total:,}' in text
    other = DeepSSMNet((1, 16, 16, 16), num_latent=4, num_correspondences=8, channels=SMALL)
    other.load_state_dict(net.state_dict())
    with torch.no_grad():
        other.decoder.linear.bias.add_(1.0)
    changes = parameter_changes(net, other)
    assert changes['encoder'] == 0.0 and changes['decoder'] > 0


@pytest.mark.bad_input
def test_missing_model_file_lists_what_exists(tmp_path):
    (tmp_path / 'final_model.torch').write_bytes(b'')
    with pytest.raises(FileNotFoundError, match='final_model.torch'):
        load_trained_model(tmp_path, use_best=True)


@pytest.mark.bad_input
@pytest.mark.parametrize(
    'kwargs, match',
    [
        ({'in_shape': (16, 16), 'num_latent': 3, 'num_correspondences': 5}, 'in_shape'),
        ({'in_shape': (2, 16, 16, 16), 'num_latent': 3, 'num_correspondences': 5}, 'in_shape'),
        ({'in_shape': (1, 16, 16, 16), 'num_latent': 0, 'num_correspondences': 5}, 'num_latent'),
        ({'in_shape': (1, 16, 16, 16), 'num_latent': 3, 'num_correspondences': 2.5}, 'num_correspondences'),
        ({'in_shape': (1, 16, 16, 16), 'num_latent': 3, 'num_correspondences': 5, 'channels': (4, 4)}, 'channels'),
        ({'in_shape': (1, 40, 80, 80), 'num_latent': 3, 'num_correspondences': 5, 'padding': 'valid'}, '60'),
        ({'in_shape': (1, 16, 16, 16), 'num_latent': 3, 'num_correspondences': 5, 'padding': 'sam'}, "'same'"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DeepSSMNet(**kwargs)


@pytest.mark.bad_input
def test_bad_images_and_pca_shapes():
    net = DeepSSMNet((1, 12, 12, 12), 3, 5, channels=SMALL)
    with pytest.raises(ValueError, match=r'images must have shape \(B, 1, 12, 12, 12\); got \(2, 1, 12, 12, 13\)'):
        net(torch.zeros(2, 1, 12, 12, 13))
    mean, comps, s_mean, s_std = _pca(5, 3)
    with pytest.raises(ValueError, match='components'):
        init_pca_decoder(net, mean, comps[:2], s_mean, s_std)
    with pytest.raises(ValueError, match='score_std'):
        init_pca_decoder(net, mean, comps, s_mean, -s_std)
    with pytest.raises(NotFittedError, match='init_pca_decoder'):
        check_initialized(net)
    with pytest.raises(ValueError, match="Did you mean 'tl'"):
        build_model('tll', **net.model_kwargs)


@pytest.mark.parametrize('cls', [DeepSSMNet, TLDeepSSMNet])
def test_stochastic_encoder_predicts_a_log_variance_and_round_trips(tmp_path, cls):
    torch.manual_seed(0)
    net = cls((1, 16, 16, 16), num_latent=3, num_correspondences=10, channels=SMALL, stochastic=True)
    init_pca_decoder(net, *_pca(10, 3))
    net.eval()
    x = torch.randn(2, 1, 16, 16, 16)
    mean, log_var = net.encode(x)
    assert mean.shape == log_var.shape == (2, 3)
    assert torch.equal(log_var, torch.zeros(2, 3))  # starts at the spread of the training scores
    assert torch.allclose(mean, net(x)[0])  # the forward pass returns the means
    assert net.model_kwargs['stochastic'] is True
    encoder = net.encoder if cls is DeepSSMNet else net.image_encoder
    with torch.no_grad():
        encoder.log_var_head.bias.fill_(0.5)
    path = save_model_file(tmp_path / 'm.torch', net, stage='base', epoch=1, val_rmse_mm=1.0, normalization=None)
    back = load_model_file(path)
    assert torch.allclose(back.encode(x)[1], torch.full((2, 3), 0.5))
    plain = cls((1, 16, 16, 16), num_latent=3, num_correspondences=10, channels=SMALL)
    assert plain.encode(x)[1] is None and 'stochastic' not in plain.model_kwargs  # older model files unchanged


def test_mc_dropout_keeps_batch_norm_frozen_and_restores_modes():
    torch.manual_seed(0)
    net = DeepSSMNet((1, 16, 16, 16), num_latent=3, num_correspondences=10, channels=SMALL, dropout=0.3)
    init_pca_decoder(net, *_pca(10, 3))
    net.train()
    x = torch.randn(2, 1, 16, 16, 16)
    with mc_dropout(net) as n_active:
        assert n_active == 2
        bn = [m for m in net.modules() if isinstance(m, nn.BatchNorm3d)]
        assert bn and not any(m.training for m in bn)
        running = bn[0].running_mean.clone()
        with torch.random.fork_rng():
            torch.manual_seed(7)
            a = net(x)[1]
            b = net(x)[1]
        with torch.random.fork_rng():
            torch.manual_seed(7)
            a_again = net(x)[1]
        assert not torch.allclose(a, b)  # passes differ by their dropout masks
        assert torch.equal(a, a_again)  # and are repeatable from a seed
        assert torch.equal(running, bn[0].running_mean)
    assert all(m.training for m in net.modules())  # modes restored
    no_dropout = DeepSSMNet((1, 16, 16, 16), num_latent=3, num_correspondences=10, channels=SMALL)
    with pytest.raises(ValueError, match='no dropout layer with p > 0'), mc_dropout(no_dropout):
        pass


def test_nonlinear_decoder_starts_as_the_pca_decoder_and_its_jacobian_is_exact(tmp_path):
    torch.manual_seed(0)
    lin = DeepSSMNet((1, 16, 16, 16), num_latent=3, num_correspondences=10, channels=SMALL)
    mlp = DeepSSMNet((1, 16, 16, 16), num_latent=3, num_correspondences=10, channels=SMALL, nonlinear_decoder=True)
    for net in (lin, mlp):
        init_pca_decoder(net, *_pca(10, 3))
    assert mlp.model_kwargs['nonlinear_decoder'] is True and 'nonlinear_decoder' not in lin.model_kwargs
    z = torch.randn(4, 3)
    assert torch.allclose(mlp.decoder(z), lin.decoder(z))  # same output at initialisation
    assert torch.allclose(mlp.decoder.pca(z), lin.decoder(z))
    # once the MLP has moved, the output differs and the analytic Jacobian still matches autograd
    with torch.no_grad():
        for p in mlp.decoder.mlp.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    assert not torch.allclose(mlp.decoder(z), lin.decoder(z))
    for net in (lin, mlp):
        jac = net.decoder.jacobian(z)
        assert jac.shape == (4, 30, 3)
        for b in range(4):
            auto = torch.autograd.functional.jacobian(lambda v, n=net: n.decoder(v[None]).reshape(-1), z[b])
            assert torch.allclose(jac[b], auto, atol=1e-5)
    set_decoder_trainable(mlp, True)
    assert all(p.requires_grad for p in mlp.decoder.mlp.parameters())
    set_decoder_trainable(mlp, False)
    assert not any(p.requires_grad for p in mlp.decoder.parameters())
    path = save_model_file(tmp_path / 'm.torch', mlp, stage='base', epoch=1, val_rmse_mm=1.0, normalization=None)
    assert torch.allclose(load_model_file(path).decoder(z), mlp.decoder(z))


def test_encode_passes_is_seeded_and_independent_of_the_batch():
    torch.manual_seed(0)
    net = DeepSSMNet((1, 16, 16, 16), num_latent=3, num_correspondences=10, channels=SMALL, dropout=0.3)
    net.encoder.log_var_head = nn.Linear(96, 3)  # a stochastic head, as stochastic=True builds
    init_pca_decoder(net, *_pca(10, 3))
    x = torch.randn(3, 1, 16, 16, 16)
    means, log_vars = net.encode_passes(x, 5, seed=1)
    assert means.shape == log_vars.shape == (5, 3, 3)
    assert not torch.allclose(means[0], means[1])  # the passes differ
    again, _ = net.encode_passes(x, 5, seed=1)
    assert torch.equal(means, again)  # repeatable from the seed
    alone, _ = net.encode_passes(x[1:2], 5, seed=1)
    assert torch.allclose(alone[:, 0], means[:, 1], atol=1e-6)  # an image's passes do not depend on its batch
    other, _ = net.encode_passes(x, 5, seed=2)
    assert not torch.allclose(other, means)
    one, _ = net.encode_passes(x, 1)
    net.eval()
    assert torch.allclose(one[0], net.encode(x)[0], atol=1e-6)  # one pass is the plain encoding
    assert all(not m.training for m in net.modules())  # modes restored (eval before the call)
    with pytest.raises(ValueError, match='passes must be an integer >= 1; got 0'):
        net.encode_passes(x, 0)
