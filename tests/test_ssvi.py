"""SSVI sparse Bayesian networks: support bookkeeping, the LRT forward pass, KL, criteria, the
remove-and-add strategy under `fit`, prediction metrics and configuration errors."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest
from conftest import assert_unbiased, draws
from numpyro.distributions.kl import kl_divergence

import genvi.models.ssvi as ssvi
import genvi.vi as vi
from genvi import ConfigError, FitError, expectation

SIZES = (6, 16, 3)
N = 48


def _data():
    kx, kw = jax.random.split(jax.random.PRNGKey(42))
    x = jax.random.normal(kx, (N, SIZES[0]))
    y = jnp.argmax(x[:, :3] + 0.3 * jax.random.normal(kw, (N, 3)), axis=1).astype(jnp.int32)
    return x, y


X, Y = _data()
OBJECTIVE = ssvi.elbo(kl_scale=0.5, warmup_steps=100)
OPTIMIZER = optax.adam(1e-2)


def _net(density=0.25, seed=0):
    net = ssvi.mlp(jax.random.PRNGKey(seed), SIZES, density, init_sigma=0.05)
    # spread the variances so that the criteria disagree with |mu|
    rhos = [l.rho + 0.5 * jax.random.normal(jax.random.PRNGKey(7 + i), l.rho.shape) for i, l in enumerate(net.layers)]
    return eqx.tree_at(lambda n: [l.rho for l in n.layers], net, rhos)


def _context(key=0):
    # full-batch, as fit passes it without batch_size: every test then shares one compiled gradient
    return vi.FitContext(OBJECTIVE, (X, Y), None, jax.random.PRNGKey(key), OPTIMIZER)


def _trained_state(net):
    """Adam state after a few real steps, so moments are non-zero."""
    trainable = eqx.filter(net, eqx.is_inexact_array)
    state = OPTIMIZER.init(trainable)
    for i in range(2):
        g = OBJECTIVE.grad_estimate(jax.random.PRNGKey(i), net, X, Y)
        _, state = OPTIMIZER.update(jax.tree.map(jnp.negative, g), state, trainable)
    return state


STRATEGY = ssvi.SSVI(total_steps=400, every=50, alpha=0.3)


# --- the support ------------------------------------------------------------------------------------


def test_support_size_fixed_and_lowest_scores_removed_through_updates():
    net = _net()
    state = _trained_state(net)
    sizes = [l.active for l in net.layers]
    for step in (50, 100, 150, 200):
        counts = STRATEGY.counts(step, net)
        assert any(counts)
        new, state = STRATEGY.update(step, net, state, _context(step))
        for old, l, n in zip(net.layers, new.layers, counts):
            assert l.active == old.active and len(np.unique(l.index)) == l.active
            f = 0.15 * (1 + math.cos(math.pi * step / 300))
            assert n == math.floor(old.active * f)
            if n == 0:
                assert np.array_equal(l.index, old.index)
                continue
            score = np.asarray(ssvi.snr_abs(old.mu, old.sigma))
            removed = set(np.asarray(old.index)) - set(np.asarray(l.index))
            assert len(removed) == n  # added weights come from outside the old support
            lowest = set(np.asarray(old.index)[np.argsort(score, stable=True)[:n]])
            assert removed == lowest
            assert np.all(np.asarray(l.mu[-n:]) == 0.0)
            assert np.allclose(l.rho[-n:], np.mean(old.rho))
        assert [l.active for l in new.layers] == sizes
        assert int(new.step) == step
        net = new
    # after T_end = 0.75 * 400 nothing moves
    assert not any(STRATEGY.counts(300, net))
    same, _ = STRATEGY.update(350, net, state, _context())
    assert all(np.array_equal(a.index, b.index) for a, b in zip(same.layers, net.layers))


def test_added_weights_have_the_largest_dense_gradient_and_probe_gradient_is_dL_dmu():
    net = _net()
    ctx = _context(3)
    grads = ssvi._strategy._dense_grads(ctx, net)
    g_mu = OBJECTIVE.grad_estimate(jax.random.split(ctx.key)[1], net, X, Y)  # what ctx.grad does: the same noise
    for layer, g, gl in zip(net.layers, grads, g_mu.layers):
        assert g.shape == layer.shape
        # on the support the dense gradient is the gradient with respect to mu
        np.testing.assert_allclose(np.asarray(g).reshape(-1)[np.asarray(layer.index)], gl.mu, rtol=1e-4, atol=1e-6)
    new, _ = STRATEGY.update(50, net, _trained_state(net), ctx)
    for old, l, g, n in zip(net.layers, new.layers, grads, STRATEGY.counts(50, net)):
        inactive = np.setdiff1d(np.arange(old.size), np.asarray(old.index))
        magnitude = np.abs(np.asarray(g).reshape(-1))[inactive]
        best = set(inactive[np.argsort(-magnitude, stable=True)[:n]])
        assert set(np.asarray(l.index[-n:])) == best


def test_optimizer_moments_follow_their_weights_and_reset_for_new_ones():
    net = _net()
    state = _trained_state(net)
    new, new_state = STRATEGY.update(50, net, state, _context(1))
    adam, new_adam = state[0], new_state[0]
    assert int(new_adam.count) == int(adam.count)
    for i, (old, l) in enumerate(zip(net.layers, new.layers)):
        pos = {int(v): j for j, v in enumerate(old.index)}
        for moments, new_moments in ((adam.mu, new_adam.mu), (adam.nu, new_adam.nu)):
            m_old, m_new = moments.layers[i], new_moments.layers[i]
            for j, v in enumerate(np.asarray(l.index)):
                if int(v) in pos:
                    assert m_new.mu[j] == m_old.mu[pos[int(v)]] and m_new.rho[j] == m_old.rho[pos[int(v)]]
                else:
                    assert m_new.mu[j] == 0.0 and m_new.rho[j] == 0.0
            assert np.array_equal(m_new.bias, m_old.bias)


def test_removed_weights_are_exactly_zero_in_every_forward_pass():
    net = _net()
    new, _ = STRATEGY.update(50, net, _trained_state(net), _context(2))
    for old, l in zip(net.layers, new.layers):
        removed = np.setdiff1d(np.asarray(old.index), np.asarray(l.index))
        off = np.setdiff1d(np.arange(l.size), np.asarray(l.index))
        assert len(removed) > 0 and np.all(np.isin(removed, off))
        rows, cols = np.unravel_index(off, l.shape)
        # the locally reparameterised pre-activations see no off-support weight: feed unit inputs
        for j in np.unique(cols):
            mean, var = l.moments(jnp.zeros(l.shape[1]).at[j].set(1.0))
            i = rows[cols == j]
            assert np.all(np.asarray(mean - l.bias)[i] == 0.0) and np.all(np.asarray(var)[i] == 0.0)
        samples = jax.vmap(l.sample_weight)(jax.random.split(jax.random.PRNGKey(0), 64))
        assert np.all(np.asarray(samples).reshape(64, -1)[:, off] == 0.0)


def test_training_gradients_touch_active_weights_only():
    net = _net()
    grads = OBJECTIVE.grad_estimate(jax.random.PRNGKey(0), net, X, Y)
    for layer, g in zip(net.layers, grads.layers):
        assert g.probe is None and g.index is None
        assert g.mu.shape == g.rho.shape == (layer.active,)


def test_dense_gradients_only_at_add_steps_under_fit(monkeypatch):
    calls = []
    original = ssvi._strategy._dense_grads

    def counting(context, params):
        calls.append(int(params.step))
        return original(context, params)

    monkeypatch.setattr(ssvi._strategy, "_dense_grads", counting)
    net = _net()
    res = vi.fit(OBJECTIVE, net, X, Y, optimizer=OPTIMIZER, num_steps=400, key=0, strategy=STRATEGY,
                 progress=False)
    # updates at 50, ..., 350; T_end = 300: dense gradients at the updates before it that swap weights
    # (f_t decays, so late ones may swap none); the rest only advance the step
    expected = [t for t in range(50, 400, 50) if any(STRATEGY.counts(t, net))]
    assert calls == expected and expected[:3] == [50, 100, 150] and max(expected) < 300
    assert int(res.params.step) == 350
    assert [l.active for l in res.params.layers] == [l.active for l in net.layers]
    assert any(not np.array_equal(a.index, b.index) for a, b in zip(res.params.layers, net.layers))
    assert np.mean(res.losses[-50:]) < np.mean(res.losses[:50])


# --- the variational family ------------------------------------------------------------------------


def test_kl_counts_active_weights_only():
    layer = _net().layers[1]
    exact = jnp.sum(kl_divergence(dist.Normal(layer.mu, layer.sigma), dist.Normal(0.0, layer.prior_scale)))
    np.testing.assert_allclose(layer.kl(), exact, rtol=1e-5)
    # moving the support (same values elsewhere) leaves the KL unchanged: inactive weights add nothing
    moved = eqx.tree_at(lambda l: l.index, layer, (layer.index + 1) % layer.size)
    np.testing.assert_allclose(moved.kl(), layer.kl(), rtol=1e-6)
    net = _net()
    np.testing.assert_allclose(net.kl(), sum(l.kl() for l in net.layers), rtol=1e-6)


def test_local_reparameterisation_moments_match_weight_samples():
    layer = _net(density=0.5).layers[0]
    h = jax.random.normal(jax.random.PRNGKey(5), (layer.shape[1],))
    mean, var = layer.moments(h)
    samples = draws(lambda k: layer.sample_weight(k) @ h + layer.bias, jax.random.PRNGKey(6), 20_000)
    assert_unbiased(samples, mean)
    assert_unbiased((samples - mean) ** 2, var)


def test_conv_layer_moments_and_zero_off_support():
    conv = ssvi.sparse_conv2d(jax.random.PRNGKey(0), 2, 3, 3, 0.3, init_sigma=0.1)
    h = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 5))
    mean, var = conv.moments(h)
    assert mean.shape == var.shape == (3, 5, 5)
    samples = draws(lambda k: conv.apply(conv.sample_weight(k), h), jax.random.PRNGKey(2), 10_000)
    assert_unbiased(samples, mean)
    assert_unbiased((samples - mean) ** 2, var)
    off = np.setdiff1d(np.arange(conv.size), np.asarray(conv.index))
    assert np.all(np.asarray(conv.sample_weight(jax.random.PRNGKey(3))).reshape(-1)[off] == 0.0)


def test_kl_warmup_weight():
    assert float(ssvi.kl_weight(jnp.array(0), 0.5, 100)) == 0.0
    assert float(ssvi.kl_weight(jnp.array(50), 0.5, 100)) == pytest.approx(0.25)
    assert float(ssvi.kl_weight(jnp.array(500), 0.5, 100)) == pytest.approx(0.5)
    assert float(ssvi.kl_weight(jnp.array(0), 0.5, 0)) == pytest.approx(0.5)


# --- criteria ----------------------------------------------------------------------------------------


def test_snr_of_abs_theta_ranks_exactly_as_abs_mu_over_sigma():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    with jax.enable_x64(True):  # SNR(|theta|) is flat to 4th order at r = 0: beyond float32 resolution
        mu = jax.random.uniform(k1, (2000,), jnp.float64, 0.05, 3.0) * jnp.where(jax.random.bernoulli(k3, 0.5, (2000,)), 1, -1)
        sigma = jnp.exp(jax.random.uniform(k2, (2000,), jnp.float64, -1.0, 1.0))
        assert np.array_equal(np.argsort(ssvi.snr_abs(mu, sigma)), np.argsort(ssvi.snr(mu, sigma)))
        # and it is neither the ranking of |mu| nor of E|theta|
        assert not np.array_equal(np.argsort(ssvi.abs_mu(mu, sigma)), np.argsort(ssvi.snr(mu, sigma)))
        assert not np.array_equal(np.argsort(ssvi.abs_mean(mu, sigma)), np.argsort(ssvi.snr(mu, sigma)))
    # the strategy ranks "snr_abs" by |mu| / sigma, the same order without float32 ties
    assert ssvi.criterion("snr_abs") is ssvi.snr


@pytest.mark.parametrize("mu,sigma", [(0.0, 1.0), (0.7, 0.5), (-2.0, 1.5), (30.0, 0.1)])
def test_folded_normal_scores_match_monte_carlo(mu, sigma):
    theta = np.abs(mu + sigma * np.asarray(jax.random.normal(jax.random.PRNGKey(1), (200_000,))))
    mu, sigma = jnp.array([mu]), jnp.array([sigma])
    assert_unbiased(theta[:, None], ssvi.abs_mean(mu, sigma))
    # SNR(|theta|) = E|theta| / sd|theta|: compare the variance it implies with the sample variance
    implied_var = (ssvi.abs_mean(mu, sigma) / ssvi.snr_abs(mu, sigma)) ** 2
    assert_unbiased(((theta - float(ssvi.abs_mean(mu, sigma)[0])) ** 2)[:, None], implied_var)


def test_removal_uses_the_chosen_criterion():
    net = _net()
    for name in ssvi.CRITERIA:
        strategy = ssvi.SSVI(total_steps=400, every=50, criterion=name)
        new, _ = strategy.update(50, net, _trained_state(net), _context())
        old = net.layers[1]
        n = strategy.counts(50, net)[1]
        score = np.asarray(ssvi.criterion(name)(old.mu, old.sigma))
        removed = set(np.asarray(old.index)) - set(np.asarray(new.layers[1].index))
        assert removed == set(np.asarray(old.index)[np.argsort(score, stable=True)[:n]])


# --- prediction, pruning, FLOPs ----------------------------------------------------------------------


def test_metrics_on_a_hand_computed_case():
    probs = jnp.array([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.45, 0.55]])
    y = jnp.array([0, 1, 1, 1])
    m = ssvi.metrics(probs, y, bins=15)
    assert m["accuracy"] == 0.75
    assert m["nll"] == pytest.approx(-np.mean(np.log([0.9, 0.1, 0.7, 0.55])))
    # bins: {0.9, 0.9} -> acc 0.5; {0.7} -> acc 1; {0.55} -> acc 1
    assert m["ece"] == pytest.approx(0.5 * 0.4 + 0.25 * 0.3 + 0.25 * 0.45)


def test_predict_mean_and_samples():
    net = _net()
    p0 = ssvi.predict(net, X)
    assert p0.shape == (N, 3) and np.allclose(p0.sum(-1), 1.0, atol=1e-5)
    p = ssvi.predict(net, X, samples=8, key=jax.random.PRNGKey(0))
    assert p.shape == (N, 3) and not np.allclose(p, p0)
    zero_noise = eqx.tree_at(lambda n: [l.rho for l in n.layers], net, [jnp.full_like(l.rho, -40.0) for l in net.layers])
    np.testing.assert_allclose(ssvi.predict(zero_noise, X, samples=2, key=jax.random.PRNGKey(0)),
                               ssvi.predict(zero_noise, X), atol=1e-5)
    with pytest.raises(ConfigError, match="key"):
        ssvi.predict(net, X, samples=4)


def test_prune_keeps_the_highest_snr_weights_and_flops_follow_active_counts():
    dense = _net(density=1.0)
    pruned = ssvi.prune(dense, 0.25, criterion="snr")
    for d, p in zip(dense.layers, pruned.layers):
        k = round(0.25 * d.size)
        assert p.active == k
        top = np.argsort(-np.asarray(ssvi.snr(d.mu, d.sigma)), stable=True)[:k]
        assert set(np.asarray(p.index)) == set(np.asarray(d.index)[top])
    full = ssvi.training_flops(dense, steps=10, batch_size=4)
    assert ssvi.training_flops(pruned, steps=10, batch_size=4) / full == pytest.approx(pruned.active / dense.active)
    assert ssvi.training_flops(pruned, steps=10, batch_size=4, add_steps=2) / full == pytest.approx(
        (10 * pruned.active + 2 * dense.size) / (10 * dense.size))


# --- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5])
def test_density_outside_unit_interval_is_refused(density):
    with pytest.raises(ConfigError, match=r"density=.*\(0, 1\]"):
        ssvi.sparse_linear(jax.random.PRNGKey(0), 8, 8, density)


def test_layer_too_small_for_its_density_is_refused():
    with pytest.raises(ConfigError, match=r"sparse_linear\(2 -> 3\).*too small"):
        ssvi.mlp(jax.random.PRNGKey(0), (8, 2, 3), 0.05)


@pytest.mark.parametrize("alpha", [-0.1, 1.2])
def test_alpha_outside_unit_interval_is_refused(alpha):
    with pytest.raises(ConfigError, match=r"alpha=.*\[0, 1\]"):
        ssvi.SSVI(total_steps=100, alpha=alpha)


def test_other_bad_options_are_refused():
    with pytest.raises(ConfigError, match="criterion='l1'"):
        ssvi.SSVI(total_steps=100, criterion="l1")
    with pytest.raises(ConfigError, match="every=0"):
        ssvi.SSVI(total_steps=100, every=0)
    with pytest.raises(ConfigError, match="kl_scale"):
        ssvi.elbo(kl_scale=-1.0)
    with pytest.raises(ConfigError, match="only 2 active"):
        ssvi.prune(ssvi.mlp(jax.random.PRNGKey(0), (8, 1), 0.25), 0.5)


# --- the fit hook this family needs (core) -----------------------------------------------------------


@expectation
def _quadratic(params, x):
    w, _ = params
    return -jnp.sum((x - w) ** 2)


def test_fit_strategy_may_change_integer_leaves_and_not_the_structure():
    class Count(vi.Strategy):
        every: int = 10

        def update(self, step, params, opt_state, context):
            return (params[0], jnp.array(step, jnp.int32)), opt_state

    res = vi.fit(_quadratic, (jnp.zeros(2), jnp.array(0, jnp.int32)), jnp.ones((5, 2)), num_steps=35, key=0,
                 strategy=Count(), progress=False)
    assert int(res.params[1]) == 30 and res.params[1].dtype == jnp.int32

    class Grow(vi.Strategy):
        every: int = 10

        def update(self, step, params, opt_state, context):
            return (params[0], params[1], jnp.zeros(1)), opt_state

    with pytest.raises(FitError, match="changed the structure"):
        vi.fit(_quadratic, (jnp.zeros(2), jnp.array(0, jnp.int32)), jnp.ones((5, 2)), num_steps=25, key=0,
               strategy=Grow(), progress=False)


def test_stacked_copies_are_updated_and_scored_copy_by_copy():
    nets = [_net(seed=0), _net(seed=1)]
    stacked = ssvi.stack(nets)
    assert ssvi.stack(ssvi.unstack(stacked)).layers[0].index.shape == (2, nets[0].layers[0].active)
    layer = stacked.layers[0]
    grad = jax.random.normal(jax.random.PRNGKey(3), (2,) + layer.shape)
    new, remap = ssvi._strategy._swap_any(layer, 3, grad, ssvi.snr)
    moment = jnp.arange(2 * layer.active, dtype=jnp.float32).reshape(2, -1)
    for i, net in enumerate(nets):
        one, one_remap = ssvi._strategy._swap_any(net.layers[0], 3, grad[i], ssvi.snr)
        assert np.array_equal(new.index[i], one.index) and np.array_equal(new.rho[i], one.rho)
        assert np.array_equal(remap(moment)[i], one_remap(moment[i]))
    # without noise the stacked ELBO is the sum of the copies' ELBOs
    quiet = [eqx.tree_at(lambda n: [l.rho for l in n.layers], n, [jnp.full_like(l.rho, -30.0) for l in n.layers])
             for n in nets]
    total = OBJECTIVE.estimate(jax.random.PRNGKey(0), ssvi.stack(quiet), X, Y)
    parts = sum(OBJECTIVE.estimate(jax.random.PRNGKey(0), n, X, Y) for n in quiet)
    np.testing.assert_allclose(total, parts, rtol=1e-5)
