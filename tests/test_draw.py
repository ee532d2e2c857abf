"""Draws that carry their log density (`genvi._draw`, `SiteDist`): same values, same densities,
same gradients as `rsample` then `log_prob`, and the program's `log q` reuses them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import pytest
from numpyro.distributions import transforms as T

import genvi
from conftest import all_eqns, assert_unbiased, draws
from genvi import gen, sample
from genvi._draw import rsample_and_log_prob
from genvi.estimators import REINFORCE
from genvi.models.flows import AffineCoupling, Flow

PARAMS = {"loc": jnp.array([0.3, -1.2, 2.0]), "raw": jnp.array([0.1, -0.4, 0.7])}
FLOW = Flow(3, [AffineCoupling(3, key=jax.random.PRNGKey(1), hidden=8)])

FAMILIES = {
    "normal, scalar scale": lambda p: nd.Normal(p["loc"], jnp.exp(p["raw"][0])),
    "normal, to_event": lambda p: nd.Normal(p["loc"], jnp.exp(p["raw"])).to_event(1),
    "full-rank gaussian": lambda p: nd.MultivariateNormal(
        p["loc"], scale_tril=jnp.tril(jnp.outer(p["raw"], p["raw"])) + jnp.diag(jnp.exp(p["raw"]))),
    "lognormal": lambda p: nd.LogNormal(p["loc"], jnp.exp(p["raw"])),
    "transformed, event-level": lambda p: nd.TransformedDistribution(
        nd.Normal(p["loc"], jnp.exp(p["raw"])).to_event(1),
        [T.AffineTransform(1.0, 2.0), T.StickBreakingTransform()]),
    "gamma (no registered rule)": lambda p: nd.Gamma(jnp.exp(p["raw"]), 2.0),
    "flow (own sample_and_log_prob)": lambda p: FLOW(base=nd.Normal(p["loc"], jnp.exp(p["raw"])).to_event(1)),
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_draw_and_density_match_rsample_then_log_prob(name):
    build, key = FAMILIES[name], jax.random.PRNGKey(3)
    x, log_p = rsample_and_log_prob(build(PARAMS), key)
    d = build(PARAMS)
    np.testing.assert_allclose(x, d.rsample(key), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_p, d.log_prob(x), rtol=1e-4, atol=1e-4)
    assert log_p.shape == tuple(d.batch_shape)

    # the same function of the parameters, so the same pathwise gradient (in float64: the inverse
    # the separate route takes loses digits in float32)
    def joint(p):
        return jnp.sum(rsample_and_log_prob(build(p), key)[1])

    def separate(p):
        d = build(p)
        return jnp.sum(d.log_prob(d.rsample(key)))

    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), PARAMS)
        for a, b in zip(jax.tree.leaves(jax.grad(joint)(p64)), jax.tree.leaves(jax.grad(separate)(p64))):
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def _count(jaxpr, name: str) -> int:
    return sum(eqn.primitive.name == name for eqn in all_eqns(jaxpr))


def test_program_scores_a_reparameterised_draw_from_its_noise():
    @gen
    def guide(p):
        sample("z", nd.Normal(p["loc"], jnp.exp(p["raw"])).to_event(1))

    @genvi.expectation
    def neg_entropy(p):
        return guide.sim(p).log_density

    exact = -jnp.sum(0.5 * jnp.log(2 * jnp.pi * jnp.e) + PARAMS["raw"])  # E[log q] = -entropy
    _, grad = neg_entropy.value_and_grad_estimate(jax.random.PRNGKey(0), PARAMS)
    jaxpr = jax.make_jaxpr(lambda p: neg_entropy.estimate(jax.random.PRNGKey(0), p))(PARAMS).jaxpr
    assert _count(jaxpr, "div") == 0  # no `(z - loc) / scale`: the noise is used directly
    np.testing.assert_allclose(grad["raw"], -np.ones(3), rtol=1e-5)  # d(-entropy)/d raw, exactly
    assert_unbiased(draws(lambda k: neg_entropy.estimate(k, PARAMS), jax.random.PRNGKey(1), 10_000), exact)


def test_score_and_program_share_one_log_density():
    @gen
    def guide(logits):
        sample("b", nd.Bernoulli(logits=logits).to_event(1), estimator=REINFORCE)

    @genvi.expectation
    def neg_log_q(logits):
        return -guide.sim(logits).log_density

    logits = jnp.array([0.5, -1.0, 2.0])
    jaxpr = jax.make_jaxpr(lambda l: neg_log_q.value_and_grad_estimate(jax.random.PRNGKey(0), l))(logits).jaxpr
    # one Bernoulli log density (its softplus has one log1p), shared by the score and the program
    assert _count(jaxpr, "log1p") == 1
