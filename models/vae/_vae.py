"""The VAE's networks and generative functions."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist

import genvi
from genvi import gen, sample


class VAE(eqx.Module):
    """Decoder `latent -> hidden -> data` logits and encoder `data -> hidden -> 2 x latent`."""

    decoder: eqx.nn.MLP
    encoder: eqx.nn.MLP
    latent: int = eqx.field(static=True)

    def __init__(self, key: jax.Array, data_dim: int = 64, hidden: int = 200, latent: int = 10):
        kd, ke = jax.random.split(key)
        self.decoder = eqx.nn.MLP(latent, data_dim, hidden, depth=1, activation=jnp.tanh, key=kd)
        self.encoder = eqx.nn.MLP(data_dim, 2 * latent, hidden, depth=1, activation=jnp.tanh, key=ke)
        self.latent = latent

    @property
    def params(self) -> tuple[eqx.nn.MLP, eqx.nn.MLP]:
        """`(model_params, guide_params)` as genvi objectives expect them."""
        return self.decoder, self.encoder


@gen
def point(decoder: eqx.nn.MLP, x: jax.Array) -> jax.Array:
    """One data point: `z ~ N(0, I)`, `x ~ Bernoulli(logits=decoder(z))`."""
    latent = decoder.in_size
    z = sample("z", dist.Normal(jnp.zeros(latent), 1.0).to_event(1))
    sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)
    return z


@gen
def point_guide(encoder: eqx.nn.MLP, x: jax.Array) -> jax.Array:
    """The amortised guide: `z ~ N(loc(x), exp(log_scale(x)))`."""
    loc, log_scale = jnp.split(encoder(x), 2)
    return sample("z", dist.Normal(loc, jnp.exp(log_scale)).to_event(1))


model = genvi.vmap(point, in_axes=(None, 0), plate="data")
guide = genvi.vmap(point_guide, in_axes=(None, 0), plate="data")
