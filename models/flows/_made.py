"""MADE: the masked autoencoder conditioner of autoregressive flows (Germain et al. 2015),
written with equinox.

Output `k` for coordinate `i` depends only on coordinates `< i` of the input (and on the whole
context vector, which has degree 0). Degrees: inputs `1..d`; hidden units cycle through
`1..d-1`; a hidden unit of degree `m` sees inputs of degree `<= m`; an output of degree `i` sees
hidden units of degree `< i`. The last layer starts at zero, so a flow built on MADE starts as
the identity.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


class MaskedLinear(eqx.Module):
    """`y = (W * mask) x + b`; the boolean mask is not trained (not a floating-point leaf)."""

    weight: jax.Array
    bias: jax.Array
    mask: jax.Array

    def __init__(self, mask: np.ndarray, *, key: jax.Array, zero: bool = False):
        out_size, in_size = mask.shape
        bound = 1.0 / math.sqrt(max(1, int(mask.sum(1).max())))
        kw, kb = jax.random.split(key)
        scale = 0.0 if zero else 1.0
        self.weight = scale * jax.random.uniform(kw, (out_size, in_size), minval=-bound, maxval=bound)
        self.bias = scale * jax.random.uniform(kb, (out_size,), minval=-bound, maxval=bound)
        self.mask = jnp.asarray(mask, bool)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jnp.where(self.mask, self.weight, 0.0) @ x + self.bias


class MADE(eqx.Module):
    """`MADE(z, context) -> [out_per_dim, dim]`: autoregressive outputs per coordinate.

    **Arguments:** `dim`, `out_per_dim` (parameters per coordinate, e.g. 2 for shift and
    log-scale), `key` (keyword-only), `cond_dim` (context inputs, connected to every hidden
    unit), `hidden` (width), `depth` (hidden layers, >= 1), `activation`.
    """

    layers: tuple[MaskedLinear, ...]
    activation: Callable
    dim: int = eqx.field(static=True)
    cond_dim: int | None = eqx.field(static=True)
    out_per_dim: int = eqx.field(static=True)

    def __init__(self, dim: int, out_per_dim: int, *, key: jax.Array, cond_dim: int | None = None,
                 hidden: int = 64, depth: int = 1, activation: Callable = jnp.tanh):
        self.dim, self.cond_dim, self.out_per_dim, self.activation = dim, cond_dim, out_per_dim, activation
        c = cond_dim or 0
        degrees_in = np.concatenate([np.arange(1, dim + 1), np.zeros(c, int)])
        degrees_hidden = (np.arange(hidden) % max(dim - 1, 1)) + 1 if dim > 1 else np.zeros(hidden, int)
        degrees_out = np.tile(np.arange(1, dim + 1), out_per_dim)
        keys = jax.random.split(key, depth + 1)
        layers, prev = [], degrees_in
        for k in keys[:-1]:
            layers.append(MaskedLinear(degrees_hidden[:, None] >= prev[None, :], key=k))
            prev = degrees_hidden
        layers.append(MaskedLinear(degrees_out[:, None] > prev[None, :], key=keys[-1], zero=True))
        self.layers = tuple(layers)

    def __call__(self, z: jax.Array, context: jax.Array | None = None) -> jax.Array:
        x = z if context is None else jnp.concatenate([z, context])
        for layer in self.layers[:-1]:
            x = self.activation(layer(x))
        return self.layers[-1](x).reshape(self.out_per_dim, self.dim)
