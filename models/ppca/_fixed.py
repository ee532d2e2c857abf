"""PPCA with fixed loadings: explicit latents and a closed-form marginal likelihood.

With `W`, `mu` and `sigma^2` fixed, `z_i ~ N(0, I_k)`, `x_i | z_i ~ N(W z_i + mu, sigma^2 I)`
has `log p(x) = sum_i log N(x_i; mu, W W^T + sigma^2 I)` exactly: the reference against which
the ELBO and IWAE evidence estimates of `genvi.vi.select` are checked. The guide is mean-field
Gaussian per row, `q(z_i) = N(m_i, diag(s_i^2))`; its ELBO is strictly below `log p(x)` unless
the columns of `W` are orthogonal (then the exact posterior covariance is diagonal).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import Array, Float

import genvi
from genvi import gen, sample


class FixedLoadings(eqx.Module):
    """Fixed model parameters: loadings `[d, k]`, mean `[d]`, noise variance. The model stops
    their gradient, so training leaves them where they are."""

    loadings: Float[Array, "d k"]
    mean: Float[Array, " d"]
    noise: Float[Array, ""]


class LatentGuideParams(eqx.Module):
    """`q(z_i) = N(loc[i], exp(log_scale[i])^2)`, one row of parameters per data row."""

    loc: Float[Array, "n k"]
    log_scale: Float[Array, "n k"]


@gen
def _point(p: FixedLoadings, x: jax.Array) -> jax.Array:
    p = jax.lax.stop_gradient(p)
    k = p.loadings.shape[1]
    z = sample("z", dist.Normal(jnp.zeros(k), 1.0).to_event(1))
    sample("x", dist.Normal(p.loadings @ z + p.mean, jnp.sqrt(p.noise)).to_event(1), obs=x)
    return z


@gen
def _point_guide(loc: jax.Array, log_scale: jax.Array, x: jax.Array) -> jax.Array:
    del x
    return sample("z", dist.Normal(loc, jnp.exp(log_scale)).to_event(1))


_points = genvi.vmap(_point, in_axes=(None, 0), plate="data")
_points_guide = genvi.vmap(_point_guide, in_axes=(0, 0, 0), plate="data")


@gen
def fixed_model(p: FixedLoadings, x: Float[Array, "n d"]) -> jax.Array:
    """PPCA with fixed `W, mu, sigma^2`; the only latents are the rows' `z` (local)."""
    return sample("rows", _points(p, x))


@gen
def fixed_guide(q: LatentGuideParams, x: Float[Array, "n d"]) -> jax.Array:
    """Mean-field Gaussian over each row's latent."""
    return sample("rows", _points_guide(q.loc, q.log_scale, x))


def fixed_init(loadings: jax.Array, mean: jax.Array, noise: float | jax.Array, n: int
               ) -> Callable[[jax.Array], tuple[FixedLoadings, LatentGuideParams]]:
    """A factory `key -> (FixedLoadings, LatentGuideParams)` for `n` rows (random guide start)."""
    loadings, mean = jnp.asarray(loadings), jnp.asarray(mean)
    if loadings.ndim != 2 or mean.shape != (loadings.shape[0],):
        raise genvi.ShapeError(f"ppca.fixed_init: loadings must be [d, k] and mean [d]; got "
                               f"{loadings.shape} and {mean.shape}")
    k = loadings.shape[1]

    def factory(key: jax.Array) -> tuple[FixedLoadings, LatentGuideParams]:
        loc = 0.1 * jax.random.normal(key, (n, k))
        return FixedLoadings(loadings, mean, jnp.asarray(noise)), LatentGuideParams(loc, jnp.full((n, k), -1.0))

    return factory


def marginal_log_likelihood(x: Float[Array, "n d"], loadings: jax.Array, mean: jax.Array,
                            noise: float | jax.Array) -> jax.Array:
    """The exact `log p(x) = sum_i log N(x_i; mu, W W^T + sigma^2 I)`."""
    cov = loadings @ loadings.T + noise * jnp.eye(loadings.shape[0])
    return jnp.sum(dist.MultivariateNormal(mean, covariance_matrix=cov).log_prob(x))
