"""W4 and W5: a sigmoid belief network on the binarised digits, two layers of Bernoulli latents.

Model `z2 ~ Bern(sigmoid(b2))` (H2 units), `z1 ~ Bern(sigmoid(W1 z2 + b1))` (H1),
`x ~ Bern(sigmoid(W0 z1 + b0))` (64 pixels); guide `z1 ~ Bern(sigmoid(V1 x + c1))`,
`z2 ~ Bern(sigmoid(V2 z1 + c2))`; the ELBO averaged over K particles, batch 128.

W4 trains it with REINFORCE and a leave-one-out baseline over the K particles: genvi
(`REINFORCE(baseline="loo")` on both sites), the same estimator by hand (each site's score times
its downstream cost minus the other particles' mean cost: `z1` multiplies every term, `z2` the
terms of `p(z2)`, `p(z1 | z2)`, `q(z2 | z1)`), and NumPyro's `TraceGraph_ELBO` (Rao-Blackwellised
REINFORCE, no baseline); a fourth row runs genvi with that same estimator (`REINFORCE` without a
baseline), the like-for-like comparison with NumPyro. W5 replaces REINFORCE by genvi's `MVD`
(no peer library has it).
Both report the gradient variance (trace of the covariance at the initial parameters) and the
work-normalised variance `variance x seconds per step` (lower is better).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import SVI, TraceGraph_ELBO
from _workload import Workload, ascent_impl, svi_impl

import genvi
from genvi import gen, sample
from genvi.estimators import MVD, REINFORCE
from genvi.objectives import elbo

BATCH = 128
HIDDEN = (16, 8)  # (H1, H2)
PARTICLES = 4
NO_BASELINE = "genvi, no baseline"
sg = jax.lax.stop_gradient


def init_params(key: jax.Array, data_dim: int = 64, hidden: tuple[int, int] = HIDDEN):
    """`((b2, (W1, b1), (W0, b0)), ((V1, c1), (V2, c2)))`: model and guide weights."""
    h1, h2 = hidden
    k = jax.random.split(key, 4)
    w = lambda key, shape: 0.1 * jax.random.normal(key, shape)
    theta = (jnp.zeros(h2), (w(k[0], (h1, h2)), jnp.zeros(h1)), (w(k[1], (data_dim, h1)), jnp.zeros(data_dim)))
    phi = ((w(k[2], (h1, data_dim)), jnp.zeros(h1)), (w(k[3], (h2, h1)), jnp.zeros(h2)))
    return theta, phi


def _bern(logits):
    return dist.Bernoulli(logits=logits).to_event(1)


# Layers are written `z @ w.T`, the layout of the hand-written and NumPyro programs: per point,
# `w @ z` under a vmap makes XLA-CPU work on `[out, batch]` and transpose (about 1.2x per step for
# plain JAX too; `xla_cpu_pitfalls.py`), which would compare layouts, not libraries.
@gen
def point(theta, x):
    b2, (w1, b1), (w0, b0) = theta
    z2 = sample("z2", _bern(b2))
    z1 = sample("z1", _bern(z2 @ w1.T + b1))
    sample("x", _bern(z1 @ w0.T + b0), obs=x)


@gen
def point_guide(phi, x):
    (v1, c1), (v2, c2) = phi
    z1 = sample("z1", _bern(x @ v1.T + c1))
    sample("z2", _bern(z1 @ v2.T + c2))


model = genvi.vmap(point, in_axes=(None, 0), plate="data")
guide = genvi.vmap(point_guide, in_axes=(None, 0), plate="data")


def _bern_log_prob(logits, value):
    return jnp.sum(value * logits - jax.nn.softplus(logits), -1)


def hand_written_reinforce_loo(particles: int = PARTICLES, per_point: bool = False):
    """The Rao-Blackwellised REINFORCE surrogate with a leave-one-out baseline, by hand.

    Returns `fn(params, key, x) -> surrogate` whose value is the K-particle ELBO and whose
    gradient is the estimator genvi forms for `REINFORCE(baseline="loo")` on both sites.
    `per_point=True` writes each layer as `jax.vmap(lambda z: w @ z)` over the batch instead of
    `z @ w.T` (same maths; `xla_cpu_pitfalls.py` times the two layouts).
    """

    def affine(w, b, z):
        return (jax.vmap(lambda row: w @ row)(z) if per_point else z @ w.T) + b

    def one(params, key, x):
        (b2, (w1, b1), (w0, b0)), ((v1, c1), (v2, c2)) = params
        k1, k2 = jax.random.split(key)
        l1 = affine(v1, c1, x)
        z1 = sg(jax.random.bernoulli(k1, jax.nn.sigmoid(l1)).astype(x.dtype))
        l2 = affine(v2, c2, z1)
        z2 = sg(jax.random.bernoulli(k2, jax.nn.sigmoid(l2)).astype(x.dtype))
        log_q1, log_q2 = _bern_log_prob(l1, z1), _bern_log_prob(l2, z2)
        log_p2 = _bern_log_prob(b2, z2)
        log_p1 = _bern_log_prob(affine(w1, b1, z2), z1)
        log_px = _bern_log_prob(affine(w0, b0, z1), x)
        return log_q1, log_q2, log_p2, log_p1, log_px

    def loo(cost):
        return (jnp.sum(cost, 0, keepdims=True) - cost) / (particles - 1)

    def surrogate(params, key, x):
        log_q1, log_q2, log_p2, log_p1, log_px = jax.vmap(lambda k: one(params, k, x))(
            jax.random.split(key, particles))  # each [K, B]
        f = log_p2 + log_p1 + log_px - log_q1 - log_q2
        cost1, cost2 = sg(f), sg(log_p2 + log_p1 - log_q2)
        score = (cost1 - loo(cost1)) * (log_q1 - sg(log_q1)) + (cost2 - loo(cost2)) * (log_q2 - sg(log_q2))
        return jnp.sum(jnp.mean(f + score, 0))

    return surrogate


def numpyro_programs(theta0, phi0):
    def np_model(x):
        b2, (w1, b1), (w0, b0) = numpyro.param("theta", theta0)
        with numpyro.plate("data", x.shape[0]):
            z2 = numpyro.sample("z2", _bern(b2))
            z1 = numpyro.sample("z1", _bern(z2 @ w1.T + b1))
            numpyro.sample("x", _bern(z1 @ w0.T + b0), obs=x)

    def np_guide(x):
        (v1, c1), (v2, c2) = numpyro.param("phi", phi0)
        with numpyro.plate("data", x.shape[0]):
            z1 = numpyro.sample("z1", _bern(x @ v1.T + c1))
            numpyro.sample("z2", _bern(z1 @ v2.T + c2))

    return np_model, np_guide


def _genvi_impl(objective, params, data):
    return ascent_impl(lambda p, k, x: objective.value_and_grad_estimate(k, p, x), params, data, BATCH)


def build(mvd: bool = False, particles: int = PARTICLES) -> Workload:
    """W4 (REINFORCE + LOO against hand-written and NumPyro) or W5 (MVD against REINFORCE + LOO)."""
    from _w_vae import digits

    data = digits()
    params = init_params(jax.random.PRNGKey(0))
    loo = elbo(model, guide, particles=particles).with_estimators(
        {"z1": REINFORCE(baseline="loo"), "z2": REINFORCE(baseline="loo")})
    if mvd:
        mvd_objective = elbo(model, guide, particles=particles).with_estimators({"z1": MVD, "z2": MVD})
        impls = {"genvi MVD": _genvi_impl(mvd_objective, params, data),
                 "genvi REINFORCE+LOO": _genvi_impl(loo, params, data)}
        return Workload("W5", f"sigmoid belief net {64}-{HIDDEN[0]}-{HIDDEN[1]}, MVD vs REINFORCE+LOO, "
                        f"K={particles}, batch {BATCH}", impls, subject="genvi MVD",
                        references=("genvi REINFORCE+LOO",), baseline="genvi REINFORCE+LOO")
    plain = elbo(model, guide, particles=particles).with_estimators({"z1": REINFORCE, "z2": REINFORCE})
    impls = {"genvi": _genvi_impl(loo, params, data),
             "hand-written": ascent_impl(jax.value_and_grad(hand_written_reinforce_loo(particles)),
                                         params, data, BATCH),
             # TraceGraph_ELBO's own estimator (Rao-Blackwellised, no baseline): like for like with NumPyro
             NO_BASELINE: _genvi_impl(plain, params, data)}
    np_model, np_guide = numpyro_programs(*params)
    svi = SVI(np_model, np_guide, optax.adam(1e-3), TraceGraph_ELBO(num_particles=particles))
    impls["numpyro"] = svi_impl(svi, (data[:BATCH],), data, BATCH)
    return Workload("W4", f"sigmoid belief net {64}-{HIDDEN[0]}-{HIDDEN[1]}, REINFORCE+LOO, K={particles}, "
                    f"batch {BATCH}", impls)
