"""Tests of the Nile reproduction's plumbing (benchmarks/_nile.py, benchmarks/fbm_nile.py): the data
and splits, the held-out predictive estimator against a closed form, and that predicting on the
all-years grid replays the trained posterior exactly at the training years."""

from __future__ import annotations

import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import _nile  # noqa: E402
import fbm_nile  # noqa: E402
import genvi.models.fbm_sde as F  # noqa: E402


def test_nile_loads_offline_with_the_documented_shape():
    years, flows = _nile.load_nile()
    np.testing.assert_array_equal(years, np.arange(1871, 1971))
    assert flows.shape == (100,) and np.all(flows > 0)


@pytest.mark.parametrize("kind", _nile.SPLITS)
def test_splits_partition_the_series_and_standardise_on_training_points(kind):
    data = _nile.nile_split(kind)
    train, held = data["train"], data["held"]
    assert len(held) == 20 and len(train) == 80
    np.testing.assert_array_equal(np.sort(np.concatenate([train, held])), np.arange(100))
    if kind == "interp":  # first and last year stay in training: the time span is unchanged
        assert {0, 99} <= set(train.tolist()) and np.all(np.diff(held) == 5)
    else:
        np.testing.assert_array_equal(data["years"][held], np.arange(1951, 1971))
    z = data["z"][train]
    assert abs(z.mean()) < 1e-12 and abs(z.std(ddof=1) - 1.0) < 1e-12
    assert data["times"][0] == 0.0 and data["times"][-1] == 1.0


def test_split_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="split kind"):
        _nile.split_indices(100, "leave-one-out")


def test_predictive_summary_matches_the_lognormal_closed_form():
    """log_lik[s, j] ~ N(mu_j, tau_j^2) independently: log E prod_j e^l = sum_j mu_j + tau_j^2 / 2."""
    rng = np.random.default_rng(0)
    mu, tau = np.array([-1.0, -2.0]), np.array([0.4, 0.3])
    log_lik = mu + tau * rng.standard_normal((20000, 2))
    out = _nile.predictive_summary(log_lik)
    exact = np.sum(mu + tau**2 / 2)
    assert 0 < out["joint_se"] < 0.02
    assert abs(out["joint"] - exact) < 4 * out["joint_se"]
    se_point = np.sqrt(np.expm1(tau**2) / 20000)  # delta-method s.e. of each pointwise log-mean-exp
    np.testing.assert_array_less(np.abs(out["pointwise"] - (mu + tau**2 / 2)), 4 * se_point)
    assert out["lppd"] == pytest.approx(out["pointwise"].sum())


def test_interval_interpolates_and_flags_open_ends():
    grid = np.array([0.1, 0.3, 0.5, 0.7, 0.9])
    values = -((grid - 0.5) / 0.1) ** 2  # max 0 at 0.5; level -1.92 crossed between grid points
    lo, hi, open_lo, open_hi = fbm_nile.interval(grid, values)
    assert 0.3 < lo < 0.5 < hi < 0.7 and not open_lo and not open_hi
    assert lo == pytest.approx(0.3 + (4 - 1.92) / 4 * 0.2) and hi == pytest.approx(1.0 - lo)
    lo, hi, open_lo, open_hi = fbm_nile.interval(grid, -10.0 * grid)
    assert lo == 0.1 and open_lo and not open_hi


def test_prediction_grid_replays_the_trained_posterior_at_training_years():
    """The interp split's training and all-years configs share one grid, so with the same key the
    posterior paths agree at the training years (the wrapped AffineControl picks the same steps),
    and the held-out years are filled in; the forecast wrapper zeroes the control after the last
    training year; HorizonConfig pins the MA-fBM horizon."""
    data = _nile.nile_split("interp")
    sub = 1
    train_cfg = fbm_nile._config(data, data["train"], sub)
    all_cfg = fbm_nile._config(data, np.arange(100), sub)
    assert train_cfg.grid == pytest.approx(all_cfg.grid, abs=1e-12) and train_cfg.horizon == 1.0
    obs_model, post = fbm_nile._initial(data, train_cfg, 0.7, True, seed=0)
    control = post.control
    rng = np.random.default_rng(1)
    control = eqx.tree_at(lambda c: (c.offset, c.gain), control,
                          (jnp.asarray(rng.standard_normal(control.offset.shape), jnp.float32),
                           jnp.asarray(0.3 * rng.standard_normal(control.gain.shape), jnp.float32)))
    post = eqx.tree_at(lambda p: p.control, post, control)
    key = jax.random.PRNGKey(3)
    on_train = F.sample_posterior(key, post, train_cfg, num_samples=3)
    wrapped = eqx.tree_at(lambda p: p.control, post, fbm_nile.UntilLastObservation(control, 1.0 + 1e-9, 1e-3 / 99))
    on_all = F.sample_posterior(key, wrapped, all_cfg, num_samples=3)
    np.testing.assert_allclose(on_all[:, data["train"], 0], on_train[:, :, 0], rtol=1e-5, atol=1e-5)
    cut = fbm_nile.UntilLastObservation(control, 0.5, 1e-3 / 99)
    x, y = jnp.ones(1), jnp.ones((5, 1))
    assert float(jnp.abs(cut(jnp.asarray(0.3), x, y, 0) - control(jnp.asarray(0.3) + 1e-3 / 99, x, y, 0)).max()) == 0
    assert float(jnp.abs(cut(jnp.asarray(0.7), x, y, 0)).max()) == 0
