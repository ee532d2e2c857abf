"""W3 and W6: a Gaussian mixture whose assignments are summed out exactly.

Model: `mu_k ~ N(0, 10^2 I)` (K means in D = 2 dimensions), for each of N points
`c_n ~ Categorical(uniform)`, `x_n ~ N(mu_{c_n}, I)`. Guide: `mu ~ N(loc, exp(log_scale))`
(reparameterised). The ELBO with the assignments marginalised,
`E_q(mu)[sum_n log sum_k p(c_n = k) N(x_n | mu_k, I) + log p(mu) - log q(mu)]`, is computed

- by hand with a `logsumexp` over k;
- by NumPyro's `TraceEnum_ELBO` (parallel enumeration of `c` in the model, through funsor);
- by genvi with the assignments collapsed in the model (`genvi.collapse(point)` under the
  `"data"` plate: each point's density is `log sum_k p(x_n, k | mu)`, enumerated per point), so
  the guide covers the means alone; all three estimate the same value and gradient (the runner
  checks the values agree). The work is O(N K), which W6 checks by timing N in {100, 1000, 10000}.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax
from jax.scipy.special import logsumexp
from numpyro.contrib.funsor import config_enumerate
from numpyro.infer import SVI, TraceEnum_ELBO
from _workload import Workload, ascent_impl, svi_impl

import genvi
from genvi import gen, sample
from genvi.objectives import elbo

DIM = 2
PRIOR_SCALE = 10.0


def mixture_data(n: int, k: int, seed: int = 0) -> jax.Array:
    """`n` points in 2-D from `k` well-separated unit-variance clusters (fixed seed)."""
    k_centres, k_assign, k_noise = jax.random.split(jax.random.PRNGKey(seed), 3)
    centres = 6.0 * jax.random.normal(k_centres, (k, DIM))
    assign = jax.random.randint(k_assign, (n,), 0, k)
    return centres[assign] + jax.random.normal(k_noise, (n, DIM))


def _point_log_lik(mu: jax.Array, x: jax.Array) -> jax.Array:
    """`log N(x | mu_k, I)` for every component k (shape `[..., K]`)."""
    return dist.Normal(mu, 1.0).to_event(1).log_prob(x[..., None, :])


def programs(k: int):
    """genvi's model and guide for `k` components (the model has no parameters: `()`)."""

    @gen
    def point(mu, x):
        c = sample("c", dist.Categorical(logits=jnp.zeros(k)))
        sample("x", dist.Normal(mu[c], 1.0).to_event(1), obs=x)

    points = genvi.vmap(genvi.collapse(point), in_axes=(None, 0), plate="data")

    @gen
    def model(_params, x):
        mu = sample("mu", dist.Normal(jnp.zeros((k, DIM)), PRIOR_SCALE).to_event(2))
        sample("points", points(mu, x))

    @gen
    def guide(params, x):
        loc, log_scale = params
        sample("mu", dist.Normal(loc, jnp.exp(log_scale)).to_event(2))

    return model, guide


def hand_written_elbo(params, key, x):
    """The same ELBO with the assignments summed out by a logsumexp."""
    (), (loc, log_scale) = params
    eps = jax.random.normal(key, loc.shape)
    mu = loc + jnp.exp(log_scale) * eps
    k = loc.shape[0]
    log_lik = jnp.sum(logsumexp(_point_log_lik(mu, x), axis=-1) - jnp.log(k))
    log_prior = jnp.sum(dist.Normal(0.0, PRIOR_SCALE).log_prob(mu))
    log_q = jnp.sum(-0.5 * eps ** 2 - log_scale - 0.5 * jnp.log(2 * jnp.pi))
    return log_lik + log_prior - log_q


def numpyro_programs(loc0: jax.Array):
    k = loc0.shape[0]

    @config_enumerate
    def np_model(x):
        mu = numpyro.sample("mu", dist.Normal(jnp.zeros((k, DIM)), PRIOR_SCALE).to_event(2))
        with numpyro.plate("data", x.shape[0]):
            c = numpyro.sample("c", dist.Categorical(logits=jnp.zeros(k)))
            numpyro.sample("x", dist.Normal(mu[c], 1.0).to_event(1), obs=x)

    def np_guide(x):
        loc = numpyro.param("loc", loc0)
        log_scale = numpyro.param("log_scale", jnp.full((k, DIM), -1.0))
        numpyro.sample("mu", dist.Normal(loc, jnp.exp(log_scale)).to_event(2))

    return np_model, np_guide


def build(n: int = 1000, k: int = 3, numpyro_impl: bool = True, name: str = "W3") -> Workload:
    """W3 (`n=1000, k=3`) or one W6 cell: full-batch steps on `n` points, `k` components."""
    data = mixture_data(n, k)
    loc0 = 3.0 * jax.random.normal(jax.random.PRNGKey(1), (k, DIM))
    params = ((), (loc0, jnp.full((k, DIM), -1.0)))
    objective = elbo(*programs(k))
    optimizer = optax.adam(1e-2)
    impls = {
        "genvi": ascent_impl(lambda p, key, x: objective.value_and_grad_estimate(key, p, x),
                             params, data, n, optimizer),
        "hand-written": ascent_impl(jax.value_and_grad(hand_written_elbo), params, data, n, optimizer),
    }
    if numpyro_impl:
        np_model, np_guide = numpyro_programs(loc0)
        svi = SVI(np_model, np_guide, optimizer, TraceEnum_ELBO(max_plate_nesting=1))
        impls["numpyro"] = svi_impl(svi, (data,), data, n)
    return Workload(name,
                    f"Gaussian mixture, N={n}, K={k}, assignments enumerated", impls,
                    meta={"n": n, "k": k, "data": data, "objective": objective, "params": params})
