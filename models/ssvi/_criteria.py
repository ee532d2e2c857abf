"""Removal criteria of SSVI: scores of active weights from `q(theta_i) = N(mu_i, sigma_i^2)`.

The lowest-scoring weights are removed. With `r = |mu| / sigma`:

| name | score |
| --- | --- |
| `"abs_mu"` | `|mu|` |
| `"snr"` | `|mu| / sigma` (the signal-to-noise ratio of `theta`) |
| `"abs_mean"` | `E|theta| = sigma sqrt(2/pi) exp(-r^2/2) + |mu| erf(r / sqrt 2)` (folded normal mean) |
| `"snr_abs"` | `SNR(|theta|) = E|theta| / sd|theta|` |

`E|theta| / sigma` and `Var|theta| / sigma^2` are functions of `r` alone, so `SNR(|theta|)` is a
function of `r`, and an increasing one: it ranks weights exactly as `|mu| / sigma` does (the
paper's best criterion is therefore the simple SNR; tested in float64). It is computed from `r`
in a form without cancellation: with `d = sqrt(2/pi) exp(-r^2/2) - r erfc(r/sqrt 2)`,
`E|theta|/sigma = r + d` and `Var|theta|/sigma^2 = 1 - 2 r d - d^2`.

Near `r = 0` the SNR of `|theta|` is flat to fourth order (`SNR(0.1) - SNR(0) = 3e-5`), below
float32 resolution, so its float32 values tie or invert there; [`criterion`][] therefore ranks
`"snr_abs"` by `|mu| / sigma`, which is the same order computed exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from genvi import ConfigError

_SQRT_2_PI = math.sqrt(2.0 / math.pi)


def _folded(r: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`(E|z|, Var|z|)` of `z ~ N(r, 1)`, `r >= 0`."""
    d = _SQRT_2_PI * jnp.exp(-0.5 * r * r) - r * jax.scipy.special.erfc(r / math.sqrt(2.0))
    return r + d, 1.0 - 2.0 * r * d - d * d


def abs_mu(mu: jax.Array, sigma: jax.Array) -> jax.Array:
    return jnp.abs(mu)


def snr(mu: jax.Array, sigma: jax.Array) -> jax.Array:
    return jnp.abs(mu) / sigma


def abs_mean(mu: jax.Array, sigma: jax.Array) -> jax.Array:
    return sigma * _folded(jnp.abs(mu) / sigma)[0]


def snr_abs(mu: jax.Array, sigma: jax.Array) -> jax.Array:
    mean, var = _folded(jnp.abs(mu) / sigma)
    return mean / jnp.sqrt(var)


CRITERIA: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "abs_mu": abs_mu, "snr": snr, "abs_mean": abs_mean, "snr_abs": snr_abs}
_RANK_BY = {**CRITERIA, "snr_abs": snr}  # the same order, without float32 ties (module docstring)


def criterion(name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The ranking key of the criterion called `name`: its score, except `"snr_abs"`, which is
    ranked by the equivalent `|mu| / sigma` (see the module docstring)."""
    if name not in CRITERIA:
        raise ConfigError(f"criterion={name!r}: choose one of {sorted(CRITERIA)}")
    return _RANK_BY[name]
