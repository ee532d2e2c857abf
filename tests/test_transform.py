"""The transformation handles what real programs contain: jit, cond, scan, custom_jvp, vmap."""

from __future__ import annotations


import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from conftest import all_eqns, assert_unbiased, draws
from exact import BERN_PARAMS, NORMAL_PARAMS, bern_guide, bern_model, normal_guide, normal_model

import genvi
from genvi import _jax_compat, expectation, gen, sample
from genvi.estimators import ENUM, MVD, REINFORCE
from genvi.objectives import elbo



@gen
def q(phi):
    a = sample("a", dist.Normal(phi[0], jnp.exp(phi[1])))
    b = sample("b", dist.Bernoulli(logits=phi[2]))
    return a, b


def f(a, b):
    return jnp.where(b > 0, jax.nn.relu(a) ** 2, jax.nn.softplus(a))


def exact(phi):
    """E[f(a, b)] by quadrature over a and enumeration over b."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    a = phi[0] + jnp.exp(phi[1]) * nodes
    w = jnp.asarray(weights / weights.sum())
    p1 = jax.nn.sigmoid(phi[2])
    return p1 * jnp.sum(w * jax.nn.relu(a) ** 2) + (1 - p1) * jnp.sum(w * jax.nn.softplus(a))


PHI = jnp.array([0.3, -0.4, 0.2])


@pytest.mark.parametrize("b_estimator", [ENUM, REINFORCE, MVD], ids=["enum", "reinforce", "mvd"])
def test_cond_jit_and_custom_jvp_inside_program(b_estimator):
    @expectation
    def program(phi):
        a, b = q.sim(phi).retval
        y = jax.lax.cond(b > 0, lambda a: jax.nn.relu(a) ** 2, lambda a: jax.nn.softplus(a), a)
        return jax.jit(lambda y: y * 1.0)(y)

    program = program.with_estimators({"b": b_estimator})
    assert_unbiased(draws(lambda k: program.grad_estimate(k, PHI), jax.random.PRNGKey(0), 20_000),
                    jax.grad(exact)(PHI))


def test_sites_inside_cond_branches():
    @gen
    def branchy(phi):
        b = sample("b", dist.Bernoulli(logits=phi[2]))
        return b

    @expectation
    def program(phi):
        b = branchy.sim(phi).retval
        return jax.lax.cond(b > 0, lambda: jax.nn.relu(q.sim(phi).retval[0]) ** 2,
                            lambda: jax.nn.softplus(q.sim(phi).retval[0]))

    assert_unbiased(draws(lambda k: program.grad_estimate(k, PHI), jax.random.PRNGKey(1), 20_000),
                    jax.grad(exact)(PHI))


def test_sites_inside_lax_scan_and_jitted_helper():
    @gen
    def step_dist(mu):
        return sample("w", dist.Normal(mu, 1.0))

    @expectation
    def program(mu):
        def body(c, _):
            w = jax.jit(lambda m: step_dist.sim(m).retval)(mu + 0.5 * c)
            return w, w

        _, ws = jax.lax.scan(body, 0.0, None, length=3)
        return jnp.sum(ws)

    # w1 ~ N(mu, 1), w2 ~ N(mu + w1/2, 1), w3 ~ N(mu + w2/2, 1): E[sum] = mu (1 + 1.5 + 1.75)
    samples = draws(lambda k: program.value_and_grad_estimate(k, jnp.array(0.4)), jax.random.PRNGKey(0), 10_000)
    assert_unbiased(samples, (0.4 * 4.25, 4.25))


def test_vmap_outside_matches_loop_and_jit_matches_eager():
    objective = elbo(normal_model, normal_guide)
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    batched = jax.vmap(lambda k: objective.grad_estimate(k, NORMAL_PARAMS, 1.0))(keys)
    looped = [objective.grad_estimate(k, NORMAL_PARAMS, 1.0) for k in keys]
    for i, g in enumerate(looped):
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(batched)):
            np.testing.assert_allclose(a, b[i], rtol=1e-5)
    eager = objective.estimate(keys[0], NORMAL_PARAMS, 1.0)
    jitted = jax.jit(lambda k: objective.estimate(k, NORMAL_PARAMS, 1.0))(keys[0])
    np.testing.assert_allclose(eager, jitted, rtol=1e-6)


def test_vmap_over_data_outside_the_program():
    objective = elbo(bern_model, bern_guide).with_estimators({"z": ENUM})
    xs = jnp.array([0.1, 1.3, -0.5])
    values = jax.vmap(lambda x: objective.estimate(0, BERN_PARAMS, x))(xs)
    singles = jnp.stack([objective.estimate(0, BERN_PARAMS, x) for x in xs])
    np.testing.assert_allclose(values, singles, rtol=1e-6)


def test_value_of_value_and_grad_equals_estimate():
    objective = elbo(normal_model, normal_guide)
    value, _ = objective.value_and_grad_estimate(7, NORMAL_PARAMS, 1.0)
    np.testing.assert_allclose(value, objective.estimate(7, NORMAL_PARAMS, 1.0), rtol=1e-6)


def test_reparam_only_program_compiles_to_hand_written_size():
    """No per-site bookkeeping is left in a REPARAM-only program's jaxpr."""
    objective = elbo(normal_model, normal_guide)

    def by_hand(params, key):
        mu, (m, log_s) = params
        z = m + jnp.exp(log_s) * jax.random.normal(key)
        return (dist.Normal(mu, 1.0).log_prob(z) + dist.Normal(z, 1.0).log_prob(1.0)
                - dist.Normal(m, jnp.exp(log_s)).log_prob(z))

    def surrogate(p):
        return genvi._adev.evaluate(objective.fn, (p, 1.0), key=jax.random.PRNGKey(0), overrides={},
                                    states=None, max_branches=10)[1]

    ours = jax.make_jaxpr(jax.grad(surrogate))(NORMAL_PARAMS)
    hand = jax.make_jaxpr(jax.grad(lambda p: by_hand(p, jax.random.PRNGKey(0))))(NORMAL_PARAMS)
    assert len(ours.eqns) <= 1.3 * len(hand.eqns) + 10, (len(ours.eqns), len(hand.eqns))


def _trivial_ops(jaxpr) -> list[str]:
    """Equations that compute nothing on a traced value: a sum over no axes, `x * 1`, `0 + x` (nested
    jaxprs too). An equation on literals alone is left out: XLA folds it, and it is JAX's own (JAX 0.6
    transposes `-0.5 * y` against grad's literal seed as `mul -0.5 1.0`)."""
    found = []
    for eqn in all_eqns(jaxpr):
        literals = [getattr(v, "val", None) for v in eqn.invars if isinstance(v, jax.extend.core.Literal)]
        on_traced = len(literals) < len(eqn.invars)
        if on_traced and ((eqn.primitive.name == "reduce_sum" and eqn.params["axes"] == ()) or
                          (eqn.primitive.name == "mul" and 1.0 in literals) or
                          (eqn.primitive.name == "add" and 0.0 in literals)):
            found.append(str(eqn))
    return found


def test_site_and_objective_totals_bind_no_trivial_operations():
    """Summing a site's scalar log density, scaling by 1 and starting totals at 0 would each be
    traced, differentiated and transposed again; under a data plate and particles none is left."""

    @gen
    def point(mu, x):
        sample("x", dist.Normal(mu, 2.0), obs=x)  # scales of 2, not 1: NumPyro's own `log(sqrt(2 pi) * 1)`

    points = genvi.vmap(point, in_axes=(None, 0), plate="data")

    @gen
    def model(_params, x):
        sample("points", points(sample("mu", dist.Normal(0.0, 2.0)), x))

    @gen
    def guide(params, x):
        sample("mu", dist.Normal(params[0], jnp.exp(params[1])))

    x = jnp.array([0.5, -0.2, 1.3])
    for objective in (elbo(model, guide), elbo(model, guide, particles=4)):
        jaxpr = jax.make_jaxpr(lambda p: objective.value_and_grad_estimate(jax.random.PRNGKey(0), p, x))(
            (None, jnp.array([0.1, -0.3]))).jaxpr
        assert _trivial_ops(jaxpr) == []


def test_jax_compat_bind_reproduces_eval_jaxpr():
    def fn(x):
        return jax.nn.relu(jax.jit(jnp.sin)(x)).sum() + jax.nn.logsumexp(x)

    closed = jax.make_jaxpr(fn)(jnp.arange(3.0))
    env = dict(zip(closed.jaxpr.invars, [jnp.arange(3.0)]))
    for eqn in closed.jaxpr.eqns:
        vals = [v.val if hasattr(v, "val") else env[v] for v in eqn.invars]
        env.update(zip(eqn.outvars, _jax_compat.bind(eqn.primitive, eqn.params, vals)))
    np.testing.assert_allclose(env[closed.jaxpr.outvars[0]], fn(jnp.arange(3.0)), rtol=1e-6)


def test_jax_compat_finds_sub_jaxprs_as_jax_does():
    def fn(x):
        y = jax.lax.cond(x.sum() > 0, jnp.sin, jnp.cos, x)
        return jax.lax.scan(lambda c, v: (c + v, None), 0.0, y)[0]

    closed = jax.make_jaxpr(fn)(jnp.arange(3.0))
    found = [list(_jax_compat.walk_params(e.params)) for e in closed.jaxpr.eqns]
    assert [len(f) for f in found if f] == [2, 1]  # the cond's two branches, the scan's body
    public = getattr(jax.extend.core, "jaxprs_in_params", None)
    if public is not None:
        assert found == [list(public(e.params)) for e in closed.jaxpr.eqns]


def test_reparam_gamma_beta_dirichlet_implicit_gradients():
    @gen
    def g(conc):
        a = sample("a", dist.Gamma(conc[0], 1.0))
        b = sample("b", dist.Beta(conc[1], conc[2]))
        c = sample("c", dist.Dirichlet(conc))
        return a, b, c

    @expectation
    def program(conc):
        a, b, c = g.sim(conc).retval
        return a + b + c[0]

    conc = jnp.array([1.5, 2.0, 3.0])

    def exact(conc):
        return conc[0] + conc[1] / (conc[1] + conc[2]) + conc[0] / conc.sum()

    assert_unbiased(draws(lambda k: program.grad_estimate(k, conc), jax.random.PRNGKey(0), 20_000),
                    jax.grad(exact)(conc))
