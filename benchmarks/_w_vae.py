"""W1 and W2: the digits VAE (64-200-20 encoder, 10-200-64 decoder, tanh, batch 128, Adam).

W1 trains the reparameterised ELBO, W2 the IWAE bound with K = 8 particles (per data point).
Each has three implementations of the same mathematics: genvi's objective
(`objectives.elbo` / `objectives.iwae` on `genvi.models.vae`), the same maths written directly in
JAX on the same equinox networks, and NumPyro's SVI (`Trace_ELBO` / `RenyiELBO(alpha=0)`, which
is the per-data-point IWAE bound) with the networks registered by `numpyro.contrib.module.eqx_module`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax
from jax.scipy.special import logsumexp
from numpyro.contrib.module import eqx_module
from numpyro.infer import SVI, RenyiELBO, Trace_ELBO
from _workload import Impl, Workload, ascent_impl, svi_impl

import genvi.models.vae as vae
from genvi.objectives import elbo, iwae

BATCH = 128
LOG_2PI = jnp.log(2 * jnp.pi)


def hand_written_log_w(params, key, x):
    """Per-data-point `log p(x, z) - log q(z | x)` at one reparameterised draw, by hand."""
    decoder, encoder = params
    loc, log_scale = jnp.split(jax.vmap(encoder)(x), 2, axis=-1)
    eps = jax.random.normal(key, loc.shape)
    z = loc + jnp.exp(log_scale) * eps
    logits = jax.vmap(decoder)(z)
    log_lik = jnp.sum(x * logits - jax.nn.softplus(logits), -1)
    log_prior = jnp.sum(-0.5 * z ** 2 - 0.5 * LOG_2PI, -1)
    log_q = jnp.sum(-0.5 * eps ** 2 - log_scale - 0.5 * LOG_2PI, -1)
    return log_lik + log_prior - log_q


def hand_written_elbo(params, key, x):
    """The same ELBO as `elbo(vae.model, vae.guide)`, written directly in JAX."""
    return jnp.sum(hand_written_log_w(params, key, x))


def hand_written_iwae(particles: int):
    """The IWAE bound `sum_n log mean_k w_nk`, written directly in JAX."""

    def bound(params, key, x):
        log_w = jax.vmap(lambda k: hand_written_log_w(params, k, x))(jax.random.split(key, particles))
        return jnp.sum(logsumexp(log_w, axis=0) - jnp.log(particles))

    return bound


def numpyro_programs(net: vae.VAE):
    """NumPyro's model and guide of the same VAE (networks as `eqx_module` parameters)."""

    def model(x):
        decoder = eqx_module("decoder", net.decoder)
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", dist.Normal(jnp.zeros(net.latent), 1.0).to_event(1))
            numpyro.sample("x", dist.Bernoulli(logits=jax.vmap(decoder)(z)).to_event(1), obs=x)

    def guide(x):
        encoder = eqx_module("encoder", net.encoder)
        loc, log_scale = jnp.split(jax.vmap(encoder)(x), 2, axis=-1)
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("z", dist.Normal(loc, jnp.exp(log_scale)).to_event(1))

    return model, guide


def digits() -> jax.Array:
    return jnp.asarray(vae.binarized_digits()[0])


def build(particles: int = 1, numpyro_impl: bool = True) -> Workload:
    """W1 (`particles=1`, the ELBO) or W2 (`particles=K`, IWAE-K) on the digits."""
    data = digits()
    net = vae.VAE(jax.random.PRNGKey(0))
    if particles == 1:
        objective, hand, loss = elbo(vae.model, vae.guide), hand_written_elbo, Trace_ELBO()
        name, title = "W1", "digits VAE, reparameterised ELBO, batch 128"
    else:
        objective = iwae(vae.model, vae.guide, particles=particles)
        hand, loss = hand_written_iwae(particles), RenyiELBO(alpha=0.0, num_particles=particles)
        name, title = "W2", f"digits VAE, IWAE K={particles}, batch 128"
    impls = {
        "genvi": ascent_impl(lambda p, k, x: objective.value_and_grad_estimate(k, p, x),
                             net.params, data, BATCH),
        "hand-written": ascent_impl(eqx.filter_value_and_grad(hand), net.params, data, BATCH),
    }
    if numpyro_impl:
        model, guide = numpyro_programs(net)
        svi = SVI(model, guide, optax.adam(1e-3), loss)
        impls["numpyro"] = svi_impl(svi, (data[:BATCH],), data, BATCH)
    return Workload(name, title, impls)


__all__ = ["BATCH", "Impl", "build", "digits", "hand_written_elbo", "hand_written_iwae", "numpyro_programs"]
