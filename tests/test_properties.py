"""Property-based tests (Hypothesis): config loader and shape PCA round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from deepssm_nb import Config, ConfigError, DataError, get_profile, load_config, save_config
from deepssm_nb.pca import ShapePCA

# --------------------------------------------------------------------------- config

valid_edits = st.fixed_dictionaries(
    {},
    optional={
        'augment': st.fixed_dictionaries(
            {},
            optional={
                'num_samples': st.integers(0, 10_000),
                'sampler': st.sampled_from(['gaussian', 'mixture', 'kde']),
                'percent_variability': st.floats(0.01, 1.0),
                'grid_step': st.floats(0.5, 50.0),
            },
        ),
        'loader': st.fixed_dictionaries(
            {}, optional={'batch_size': st.integers(1, 64), 'down_factor': st.floats(0.05, 1.0)}
        ),
        'deepssm': st.fixed_dictionaries(
            {},
            optional={
                'trainer': st.fixed_dictionaries(
                    {},
                    optional={
                        'epochs': st.integers(1, 500),
                        'learning_rate': st.floats(1e-6, 1.0),
                        'device': st.sampled_from(['auto', 'cpu', 'cuda']),
                    },
                ),
                'loss': st.fixed_dictionaries({}, optional={'function': st.sampled_from(['MSE', 'Focal'])}),
                'use_best_model': st.booleans(),
            },
        ),
    },
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=valid_edits)
def test_valid_configs_round_trip_through_json(tmp_path, edits):
    cfg = Config.from_dict(edits)
    path = save_config(cfg, tmp_path / 'c.json')
    assert load_config(path) == cfg
    assert Config.from_dict(json.loads(path.read_text())).to_dict() == cfg.to_dict()


junk = st.one_of(
    st.none(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.floats(allow_nan=True),
    st.integers(-(10**6), -1),
)


@settings(max_examples=120, deadline=None)
@given(section=st.sampled_from(['augment', 'loader', 'groom']), value=junk, data=st.data())
def test_invalid_values_are_rejected_with_the_dotted_path(section, value, data):
    fields = list(getattr(get_profile('smoke'), section).__dataclass_fields__)
    key = data.draw(st.sampled_from(fields))
    try:
        cfg = Config.from_dict({section: {key: value}})
    except ConfigError as e:
        assert f'config.{section}.{key}' in str(e)
    else:  # the value happened to be valid for that key: it must have been stored unchanged
        assert getattr(getattr(cfg, section), key) == value


@settings(max_examples=60, deadline=None)
@given(key=st.text(alphabet='abcdefghijklmnopqrstuvwxyz_', min_size=1, max_size=12))
def test_unknown_keys_are_named(key):
    if key in Config.__dataclass_fields__:
        return
    with pytest.raises(ConfigError, match=f'config.{key}: unknown key'):
        Config.from_dict({key: 1})


# --------------------------------------------------------------------------- PCA

shapes = st.integers(3, 9).flatmap(
    lambda n: st.integers(4, 20).flatmap(
        lambda m: arrays(
            np.float64,
            (n, m, 3),
            elements=st.floats(-100, 100, allow_nan=False, allow_infinity=False, allow_subnormal=False),
        )
    )
)


def _spread(particles: np.ndarray) -> float:
    return float(np.abs(particles - particles.mean(0)).max())


def _well_conditioned(particles: np.ndarray, k: int | None = None) -> bool:
    """Every mode used carries at least 1e-8 of the largest mode's variance (shapes in mm, not at rounding level)."""
    s = np.linalg.svd((particles - particles.mean(0)).reshape(len(particles), -1), compute_uv=False)
    s = s[s > 1e-12 * max(s[0], 1e-300)] if k is None else s[:k]
    return len(s) > 0 and s[-1] / s[0] > 1e-4


@settings(max_examples=60, deadline=None)
@given(particles=shapes)
def test_pca_with_all_modes_reconstructs_training_shapes(particles):
    if _spread(particles) < 1e-6:  # no variation to speak of: a clear error, not a degenerate model
        with pytest.raises(DataError, match='identical'):
            ShapePCA(percent_variability=1.0).fit(np.repeat(particles[:1], len(particles), axis=0))
        return
    assume(_well_conditioned(particles))
    pca = ShapePCA(percent_variability=1.0).fit(particles)
    back = pca.inverse_transform(pca.transform(particles))
    scale = max(1.0, float(np.abs(particles).max()))
    np.testing.assert_allclose(back, particles, atol=1e-7 * scale)
    flat = pca.components_.reshape(pca.n_components_, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(pca.n_components_), atol=1e-8)
    assert np.all(np.diff(pca.explained_variance_) <= 1e-9 * max(1.0, pca.explained_variance_[0]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(particles=shapes, k=st.integers(1, 3))
def test_pca_save_load_round_trip(tmp_path, particles, k):
    k = min(k, len(particles) - 1)
    assume(_spread(particles) >= 1e-6 and _well_conditioned(particles, k))
    pca = ShapePCA(n_components=k).fit(particles)
    pca.save(tmp_path / 'pca')
    back = ShapePCA.load(tmp_path / 'pca')
    np.testing.assert_allclose(back.transform(particles), pca.transform(particles), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(back.mean_, pca.mean_, atol=1e-12)
