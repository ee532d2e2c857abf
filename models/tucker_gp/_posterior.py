"""The approximate posterior both routes produce, and prediction at any coordinates.

Each mode's function paths are a `PathPosterior` over its training grid; the core is Gaussian
(mean and covariance of vec(W); `None` for CP) and the noise variance is `E[1/τ]`. Prediction
at an entry interpolates each mode's functions at its coordinate (`_interp.py`, exact under the
Markov prior, so unseen coordinates are handled like seen ones) and takes the moments of f with
the factors independent across modes, as both routes' posteriors are.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._interp import interpolate
from ._kalman import PathPosterior
from ._moments import entry_moments
from ._spec import TuckerGP, check_coords
from ._ssm import ModePrior


class TuckerPosterior(eqx.Module):
    """`q(u¹…u^K) q(W) q(τ)`: per-mode Gaussian paths, a Gaussian core, the noise variance."""

    spec: TuckerGP = eqx.field(static=True)
    priors: tuple[ModePrior, ...]
    paths: tuple[PathPosterior, ...]
    core_mean: jax.Array | None
    core_cov: jax.Array | None
    noise_var: jax.Array

    def latent(self, k: int, t) -> tuple[jax.Array, jax.Array]:
        """Mode k's R functions at coordinates `t` (m,): means (m, R) and covariances (m, R, R)."""
        sde = self.spec.sde(k, self.priors[k].grid.dtype)
        return _latent(self.priors[k], sde, self.paths[k], jnp.asarray(t, self.priors[k].grid.dtype))

    def predict(self, coords, *, noise: bool = False, batch_size: int = 4096) -> tuple[jax.Array, jax.Array]:
        """Predictive mean and variance of f at `coords` (N, K), seen or unseen coordinates.

        `noise=True` adds the noise variance `E[1/τ]` (the variance of a new y rather than f).
        """
        c = check_coords(coords, self.spec.num_modes, "TuckerPosterior.predict")
        means, seconds = [], []
        for k in range(self.spec.num_modes):
            uniq, inv = np.unique(c[:, k], return_inverse=True)
            m, v = self.latent(k, uniq)
            means.append(m[inv.reshape(-1)])
            seconds.append((v + m[:, :, None] * m[:, None, :])[inv.reshape(-1)])
        mean, var = _entry_predict(self.core_mean, self.core_cov, means, seconds, batch_size)
        return mean, var + (self.noise_var if noise else 0.0)


@jax.jit
def _latent(prior, sde, path, t):
    return interpolate(prior, sde, path, t)


@functools.partial(jax.jit, static_argnames="batch_size")
def _entry_predict(core_mean, core_cov, means, seconds, batch_size):
    def one(args):
        ms, ss = args
        return entry_moments(core_mean, core_cov, list(ms), list(ss))

    ef, ef2 = jax.lax.map(one, (tuple(means), tuple(seconds)), batch_size=batch_size)
    return ef, jnp.maximum(ef2 - ef**2, 0.0)
