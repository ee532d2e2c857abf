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
        dtype = self.priors[k].grid.dtype
        t = np.asarray(t, dtype).reshape(-1)
        padded = np.pad(t, (0, _bucket(len(t)) - len(t)), mode="edge")  # few shapes, few compiles
        m, v = _latent(self.priors[k], self.spec.sde(k, dtype), self.paths[k], jnp.asarray(padded))
        return m[: len(t)], v[: len(t)]

    def predict(self, coords, *, noise: bool = False, batch_size: int = 4096) -> tuple[jax.Array, jax.Array]:
        """Predictive mean and variance of f at `coords` (N, K), seen or unseen coordinates.

        `noise=True` adds the noise variance `E[1/τ]` (the variance of a new y rather than f).
        """
        c = check_coords(coords, self.spec.num_modes, "TuckerPosterior.predict")
        dtype = self.priors[0].grid.dtype
        n = c.shape[0]
        uniqs, invs = [], []
        for k in range(self.spec.num_modes):  # each mode's functions once per distinct coordinate
            uniq, inv = np.unique(c[:, k], return_inverse=True)
            uniqs.append(jnp.asarray(np.pad(uniq, (0, _bucket(len(uniq)) - len(uniq)), mode="edge"), dtype))
            invs.append(jnp.asarray(np.pad(inv.reshape(-1), (0, _bucket(n) - n)), jnp.int32))
        mean, var = _predict(self, tuple(uniqs), tuple(invs), min(batch_size, _bucket(n)))
        mean, var = np.asarray(mean)[:n], np.asarray(var)[:n]  # unpad on the host: no compile per n
        return jnp.asarray(mean), jnp.asarray(var + (np.asarray(self.noise_var) if noise else 0.0))


def _bucket(n: int) -> int:
    """The next power of two >= max(n, 256): query arrays are padded to it so that queries of
    similar size (and all small ones) share one compilation."""
    return 1 << max(8, (max(n, 1) - 1).bit_length())


@jax.jit
def _latent(prior, sde, path, t):
    return interpolate(prior, sde, path, t)


@functools.partial(jax.jit, static_argnames="batch_size")
def _predict(post: TuckerPosterior, uniqs, invs, batch_size: int):
    """Interpolate every mode at its distinct query coordinates, gather them per entry and take
    the moments of f, as one compiled program (queries padded to power-of-two buckets)."""
    means, seconds = [], []
    for k, (t, inv) in enumerate(zip(uniqs, invs)):
        m, v = interpolate(post.priors[k], post.spec.sde(k, t.dtype), post.paths[k], t)
        means.append(m[inv])
        seconds.append((v + m[:, :, None] * m[:, None, :])[inv])

    def one(args):
        ms, ss = args
        return entry_moments(post.core_mean, post.core_cov, list(ms), list(ss))

    ef, ef2 = jax.lax.map(one, (tuple(means), tuple(seconds)), batch_size=batch_size)
    return ef, jnp.maximum(ef2 - ef**2, 0.0)
