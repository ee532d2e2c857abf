"""`genvi.collapse`: discrete choices summed out exactly in the model (genvi/_collapse.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from conftest import all_eqns
from jax.scipy.special import logsumexp

import genvi
from genvi import gen, sample
from genvi.objectives import elbo

WEIGHTS = jnp.array([0.2, 0.3, 0.5])


@gen
def point(mu, x):
    c = sample("c", dist.Categorical(probs=WEIGHTS))
    sample("x", dist.Normal(mu[c], 1.0).to_event(1), obs=x)


points = genvi.vmap(genvi.collapse(point), in_axes=(None, 0), plate="data")


@gen
def mixture(_params, x):
    mu = sample("mu", dist.Normal(jnp.zeros((3, 2)), 10.0).to_event(2))
    sample("points", points(mu, x))


@gen
def mean_field(params, x):
    loc, log_scale = params
    sample("mu", dist.Normal(loc, jnp.exp(log_scale)).to_event(2))


def _exact(mu, x):
    """log p(mu) + sum_n log sum_k w_k N(x_n | mu_k, I), by hand."""
    per = dist.Normal(mu, 1.0).to_event(1).log_prob(x[:, None, :]) + jnp.log(WEIGHTS)
    return jnp.sum(logsumexp(per, -1)) + jnp.sum(dist.Normal(0.0, 10.0).log_prob(mu))


def _data():
    return 3.0 * jax.random.normal(jax.random.PRNGKey(0), (40, 2))


def test_density_and_gradient_are_the_logsumexp():
    """The model's density with the assignments collapsed is the hand-written logsumexp, and so
    is its gradient in the means (no estimator, no noise)."""
    x, mu = _data(), jax.random.normal(jax.random.PRNGKey(1), (3, 2))
    density = jax.jit(jax.value_and_grad(lambda m: mixture.log_density({"mu": m}, (), x)))
    value, grad = density(mu)
    exact, exact_grad = jax.jit(jax.value_and_grad(_exact))(mu, x)
    assert np.allclose(value, exact, rtol=1e-6)
    assert np.allclose(grad, exact_grad, rtol=1e-5, atol=1e-5)


def test_elbo_with_collapsed_assignments_is_unbiased():
    """elbo(mixture, mean_field) over the means alone: its mean over draws matches the hand-written
    ELBO (the same logsumexp) within 5 standard errors, value and gradient."""
    x, n = _data(), 4000
    params = ((), (jnp.ones((3, 2)), jnp.full((3, 2), -1.0)))
    objective = elbo(mixture, mean_field)
    got = jax.jit(jax.vmap(lambda k: objective.value_and_grad_estimate(k, params, x)))(
        jax.random.split(jax.random.PRNGKey(2), n))
    values, grads = np.asarray(got[0], np.float64), np.asarray(got[1][1][0], np.float64)

    def hand(p, key):
        loc, log_scale = p
        mu = loc + jnp.exp(log_scale) * jax.random.normal(key, loc.shape)
        return _exact(mu, x) - jnp.sum(dist.Normal(loc, jnp.exp(log_scale)).log_prob(mu))

    ref = jax.jit(jax.vmap(jax.value_and_grad(hand), in_axes=(None, 0)))(params[1], jax.random.split(jax.random.PRNGKey(3), n))
    ref_values, ref_grads = np.asarray(ref[0], np.float64), np.asarray(ref[1][0], np.float64)
    se = np.sqrt(values.var() / n + ref_values.var() / n)
    assert abs(values.mean() - ref_values.mean()) < 5 * se
    se_g = np.sqrt(grads.var(0) / n + ref_grads.var(0) / n)
    assert np.all(np.abs(grads.mean(0) - ref_grads.mean(0)) < 5 * se_g + 1e-6)


def test_several_sites_and_kept_choices():
    """Two collapsed Bernoullis (four joint values) against the brute-force sum; a kept
    continuous choice is scored at its value and drawn ancestrally."""

    @gen
    def two(p):
        a = sample("a", dist.Bernoulli(p))
        b = sample("b", dist.Bernoulli(0.5 + 0.3 * a))
        z = sample("z", dist.Normal(a + 2.0 * b, 1.0))
        return z

    collapsed = genvi.collapse(two, keep=["z"])
    z = 0.7
    brute = logsumexp(np.array([  # by hand, in NumPy
        np.log(0.3 if a else 0.7) + np.log((0.5 + 0.3 * a) if b else (0.5 - 0.3 * a)) - 0.5 * (z - a - 2 * b) ** 2
        - 0.5 * np.log(2 * np.pi) for a in (0, 1) for b in (0, 1)]))
    density = jax.jit(lambda z: collapsed.log_density({"z": z}, 0.3))
    assert np.allclose(density(z), brute, rtol=1e-6)
    trace = jax.jit(lambda k: collapsed.simulate(k, 0.3))(jax.random.PRNGKey(0))
    assert set(trace.choices.addresses()) == {"z"}
    assert np.allclose(trace.log_density, density(trace["z"]), rtol=1e-6)


def test_bad_input_names_the_site():
    @gen
    def continuous():
        sample("u", dist.Normal(0.0, 1.0))

    with pytest.raises(genvi.ConfigError, match="'u' has no finite support"):
        genvi.collapse(continuous).log_density({})

    @gen
    def many():
        sample("c", dist.Bernoulli(0.5 * jnp.ones(11)))

    with pytest.raises(genvi.ConfigError, match="2\\^11 joint values"):
        genvi.collapse(many).log_density({})
    with pytest.raises(genvi.ConfigError, match="not one string"):
        genvi.collapse(point, keep="x")

    @gen
    def plated():
        sample("cs", genvi.vmap(gen(lambda: sample("c", dist.Bernoulli(0.5))), axis_size=3, plate="p")())

    with pytest.raises(genvi.ConfigError, match="'cs/c' sits inside a plate"):
        genvi.collapse(plated).log_density({})


def test_scoring_a_collapsed_function_draws_no_random_numbers():
    """Finding the sites to sum out takes no draw (and no density): the scored program binds
    no random-number primitive at all."""
    jaxpr = jax.make_jaxpr(lambda mu, x: genvi.collapse(point).log_density({}, mu, x))(
        jnp.zeros((3, 2)), jnp.ones(2))
    names = {eqn.primitive.name for eqn in all_eqns(jaxpr.jaxpr)}
    assert not {n for n in names if n.startswith(("random_", "threefry"))}, names
