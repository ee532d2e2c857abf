"""Monte Carlo tests: every estimator is unbiased for the exact gradient (5 standard errors).

Each test draws >= 10k gradient estimates with fixed keys and compares their mean with a gradient
computed in closed form or by exhaustive enumeration. Tolerances come from the draws themselves.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from conftest import assert_unbiased, draws
from exact import (BERN_PARAMS, MIX_PARAMS, NORMAL_PARAMS, bern_elbo_exact, bern_guide,
                   bern_iwae_exact, bern_model, mix_elbo_exact, mix_guide, mix_model,
                   normal_elbo_exact, normal_guide, normal_model, plate_elbo_exact, plate_guide,
                   plate_model)

import genvi
from genvi import expectation, gen, sample
from genvi.estimators import ENUM, MVD, REINFORCE, REPARAM, LeaveOneOut, RunningMean
from genvi.objectives import elbo, iwae

N = 20_000


def grads_of(objective, params, *data, n=N, seed=0):
    return draws(lambda k: objective.grad_estimate(k, params, *data), jax.random.PRNGKey(seed), n)


@pytest.mark.parametrize("estimator", [REPARAM, REINFORCE, REINFORCE(baseline="mean"), MVD],
                         ids=["reparam", "reinforce", "reinforce-mean", "mvd"])
def test_normal_normal_unbiased(estimator):
    x = jnp.array(1.0)
    objective = elbo(normal_model, normal_guide).with_estimators({"z": estimator})
    exact = jax.grad(normal_elbo_exact)(NORMAL_PARAMS, x)
    if estimator.stateful:  # thread the running mean as fit would, then test with a warm state
        state = objective.init_state(NORMAL_PARAMS, x)
        for i in range(50):
            _, state = objective.grad_estimate(i, NORMAL_PARAMS, x, state=state)
        samples = draws(lambda k: objective.grad_estimate(k, NORMAL_PARAMS, x, state=state)[0],
                        jax.random.PRNGKey(1), N)
    else:
        samples = grads_of(objective, NORMAL_PARAMS, x)
    assert_unbiased(samples, exact)


def test_normal_normal_value_unbiased():
    x = jnp.array(1.0)
    objective = elbo(normal_model, normal_guide)
    values = draws(lambda k: objective.estimate(k, NORMAL_PARAMS, x), jax.random.PRNGKey(2), N)
    assert_unbiased(values, normal_elbo_exact(NORMAL_PARAMS, x))


def test_enum_bernoulli_exact_and_zero_variance():
    x = jnp.array(1.3)
    objective = elbo(bern_model, bern_guide).with_estimators({"z": ENUM})
    value, grads = draws(lambda k: objective.value_and_grad_estimate(k, BERN_PARAMS, x),
                         jax.random.PRNGKey(0), 64)
    exact_value, exact_grads = jax.value_and_grad(bern_elbo_exact)(BERN_PARAMS, x)
    np.testing.assert_allclose(value, exact_value, rtol=1e-5, atol=1e-6)
    for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(exact_grads)):
        np.testing.assert_allclose(g, np.broadcast_to(e, g.shape), rtol=1e-5, atol=1e-6)
        assert np.ptp(np.asarray(g)) <= 1e-6  # the same for every key


@pytest.mark.parametrize("estimator", [REINFORCE, MVD], ids=["reinforce", "mvd"])
def test_bernoulli_latent_unbiased(estimator):
    x = jnp.array(1.3)
    objective = elbo(bern_model, bern_guide).with_estimators({"z": estimator})
    assert_unbiased(grads_of(objective, BERN_PARAMS, x), jax.grad(bern_elbo_exact)(BERN_PARAMS, x))


@pytest.mark.parametrize("c_estimator", [ENUM, REINFORCE, MVD], ids=["enum", "reinforce", "mvd"])
def test_categorical_then_reparameterised_normal(c_estimator):
    x = jnp.array(0.8)
    objective = elbo(mix_model, mix_guide).with_estimators({"c": c_estimator})
    exact = jax.grad(mix_elbo_exact)(MIX_PARAMS, x)
    assert_unbiased(grads_of(objective, MIX_PARAMS, x, n=40_000), exact)


@pytest.mark.parametrize("estimator", [ENUM, REINFORCE, MVD], ids=["enum", "reinforce", "mvd"])
def test_iwae_four_particles_bernoulli(estimator):
    x = jnp.array(1.3)
    objective = iwae(bern_model, bern_guide, particles=4).with_estimators({"z": estimator})
    exact_value, exact = jax.value_and_grad(lambda p: bern_iwae_exact(p, x, 4))(BERN_PARAMS)
    if estimator is ENUM:  # 2^4 particle tuples enumerated exactly, in one vmapped program
        value, grads = objective.value_and_grad_estimate(0, BERN_PARAMS, x)
        np.testing.assert_allclose(value, exact_value, rtol=1e-5)
        for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(exact)):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)
        return
    assert_unbiased(grads_of(objective, BERN_PARAMS, x, n=40_000), exact)


def test_user_written_expectation_program():
    """A hand-written objective: E_q[(z - 1)^2 + log p(x | z)] with a Bernoulli then a Normal."""

    @gen
    def q(phi):
        b = sample("b", dist.Bernoulli(logits=phi[0]))
        sample("z", dist.Normal(phi[1] + b, jnp.exp(phi[2])))

    @expectation
    def program(phi, x):
        tr = q.sim(phi)
        z = tr.choices["z"]
        return (z - 1.0) ** 2 + dist.Normal(z, 1.0).log_prob(x)

    def exact(phi, x):
        p1 = jax.nn.sigmoid(phi[0])
        total = 0.0
        for b, pb in ((0.0, 1 - p1), (1.0, p1)):
            m, s2 = phi[1] + b, jnp.exp(2 * phi[2])
            total = total + pb * ((m - 1) ** 2 + s2 - 0.5 * ((x - m) ** 2 + s2) - 0.5 * jnp.log(2 * jnp.pi))
        return total

    phi, x = jnp.array([0.3, -0.2, -0.5]), jnp.array(0.7)
    samples = draws(lambda k: program.grad_estimate(k, phi, x), jax.random.PRNGKey(3), N)
    assert_unbiased(samples, jax.grad(exact)(phi, x))
    values = draws(lambda k: program.estimate(k, phi, x), jax.random.PRNGKey(4), N)
    assert_unbiased(values, exact(phi, x))


def test_enum_under_vmap_plate_is_exact_and_linear():
    xs = jax.random.normal(jax.random.PRNGKey(3), (100,))
    params = (jnp.array(0.2), jax.random.normal(jax.random.PRNGKey(4), (100,)))
    objective = elbo(plate_model, plate_guide).with_estimators({"z": ENUM})
    value, grads = objective.value_and_grad_estimate(0, params, xs)
    exact_value, exact = jax.value_and_grad(plate_elbo_exact)(params, xs)
    np.testing.assert_allclose(value, exact_value, rtol=1e-5)
    for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(exact)):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)
    # parallel enumeration: the rest of the program is evaluated twice (K = 2), not 2^100 times
    jaxpr = jax.make_jaxpr(lambda p: objective.estimate(0, p, xs))(params)
    assert "f32[2,100]" in str(jaxpr)


def test_enum_under_plate_with_particles_stays_parallel():
    """A particle axis over a plate: the trace's `sum(...)` of site densities starts at a literal 0,
    which under the particle vmap once hid the plate axis from the analysis (an opaque `0 + x`
    term), so ENUM fell back to joint enumeration (2^100 values: refused). Now exact per element."""
    xs = jax.random.normal(jax.random.PRNGKey(3), (100,))
    params = (jnp.array(0.2), jax.random.normal(jax.random.PRNGKey(4), (100,)))
    objective = elbo(plate_model, plate_guide, particles=3).with_estimators({"z": ENUM})
    value, grads = objective.value_and_grad_estimate(0, params, xs)
    exact_value, exact = jax.value_and_grad(plate_elbo_exact)(params, xs)
    np.testing.assert_allclose(value, exact_value, rtol=1e-5)
    for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(exact)):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


@gen
def chain_step(carry, _, phi):
    z = sample("z", dist.Bernoulli(logits=phi + 1.5 * carry - 0.7))
    return z * 1.0, z


chain = genvi.scan(chain_step, length=3)
WEIGHTS = jnp.array([1.0, -2.0, 3.0])


@expectation
def chain_program(phi):
    tr = chain.sim(jnp.array(0.0), None, phi)
    zs = tr.choices["z"]
    return jnp.sum(zs * WEIGHTS) + zs[0] * zs[2] - 0.5 * tr.log_density


def chain_exact(phi):
    total = 0.0
    for path in itertools.product((0.0, 1.0), repeat=3):
        carry, logp = 0.0, 0.0
        for z in path:
            logp = logp + dist.Bernoulli(logits=phi + 1.5 * carry - 0.7).log_prob(z)
            carry = z
        zs = jnp.array(path)
        total = total + jnp.exp(logp) * (jnp.sum(zs * WEIGHTS) + zs[0] * zs[2] - 0.5 * logp)
    return total


@pytest.mark.parametrize("estimator", [ENUM, REINFORCE, MVD], ids=["enum", "reinforce", "mvd"])
def test_bernoulli_chain_under_scan(estimator):
    phi = jnp.array(0.4)
    program = chain_program.with_estimators({"z": estimator})
    exact_value, exact = jax.value_and_grad(chain_exact)(phi)
    if estimator is ENUM:  # unrolled: each step sees its continuation; 8 paths, exact
        value, grad = program.value_and_grad_estimate(0, phi)
        np.testing.assert_allclose([value, grad], [exact_value, exact], rtol=1e-5)
        return
    samples = draws(lambda k: program.grad_estimate(k, phi), jax.random.PRNGKey(5), 100_000)
    assert_unbiased(samples, exact)


def test_leave_one_out_baseline_lowers_variance_without_bias():
    """ELBO with 8 vmapped particles on the Bernoulli model: per-particle credit + LOO baseline."""
    x = jnp.array(1.3)
    particles = 8

    def multi_elbo(estimator):
        @expectation
        def program(params, x):
            theta, phi = params

            def one():
                tr = bern_guide.sim(phi, x)
                return bern_model.log_density(tr.choices, theta, x) - tr.log_density

            return jnp.mean(genvi.vmap(one, axis_size=particles)())

        return program.with_estimators({"z": estimator})

    exact = jax.grad(bern_elbo_exact)(BERN_PARAMS, x)
    plain = grads_of(multi_elbo(REINFORCE), BERN_PARAMS, x)
    loo = grads_of(multi_elbo(REINFORCE(baseline=LeaveOneOut())), BERN_PARAMS, x, seed=1)
    assert_unbiased(plain, exact)
    assert_unbiased(loo, exact)
    var_plain, var_loo = np.var(plain[1]), np.var(loo[1])
    assert var_loo < 0.5 * var_plain, (var_loo, var_plain)


def test_rao_blackwellisation_uses_only_downstream_costs():
    """A cost computed before the site, and one independent of it, add no variance."""

    @gen
    def q(phi):
        a = sample("a", dist.Normal(0.0, 1.0))
        b = sample("b", dist.Bernoulli(logits=phi))
        return a, b

    @expectation
    def program(phi):
        a, b = q.sim(phi).retval
        return 100.0 * a ** 2 + b  # a huge cost that b does not influence

    samples = draws(lambda k: program.grad_estimate(k, jnp.array(0.1)), jax.random.PRNGKey(0), N)
    exact = jax.nn.sigmoid(0.1) * (1 - jax.nn.sigmoid(0.1))
    assert_unbiased(samples, exact)
    assert np.std(samples) < 0.6  # without Rao-Blackwellisation it is ~100


def test_running_mean_baseline_state_updates():
    objective = elbo(bern_model, bern_guide).with_estimators({"z": REINFORCE(baseline=RunningMean(0.5))})
    state = objective.init_state(BERN_PARAMS, jnp.array(1.3))
    assert set(state) == {"z"}
    _, state = objective.grad_estimate(0, BERN_PARAMS, jnp.array(1.3), state=state)
    assert int(state["z"][1]) == 1 and np.isfinite(state["z"][0])
