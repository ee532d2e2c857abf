"""Probabilistic PCA with priors on the loadings and the noise variance, latents collapsed.

The model of Tipping & Bishop (1999) with the priors of Chérief-Abdellatif (2019):

    W[j, c] ~ N(0, s^2)            loadings, d x k; s learned (type-II) or fixed
    sigma^2 ~ InverseGamma(a, b)   noise variance
    z_i     ~ N(0, I_k)            latents, one per row
    x_i     ~ N(W z_i + mu, sigma^2 I_d)

The latents have a closed-form marginal, `x_i | W, sigma^2 ~ N(mu, W W^T + sigma^2 I)`, used
here: the guide is mean-field over `(W, sigma^2)` only and `q(z_i | W, sigma^2)` is the exact
conditional, which is tighter than a mean-field factor over `z` and has no per-row variational
parameters. The likelihood is NumPyro's `LowRankMultivariateNormal` (Woodbury: O(d k^2) per row).
With `elbo(..., analytic_kl=True)` the loadings' KL is closed form (Normal against Normal).

The prior scale `s` matters for selection (a fixed small `s` penalises every column and can pick
k = 1 where a broad one picks the truth): by default it is a model parameter, so the ELBO is
maximised over it (type-II maximum likelihood, as ARD does for one scale per column).
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

NOISE_PRIOR = (1.0, 1.0)  # InverseGamma(concentration, rate) on the noise variance


class ModelParams(eqx.Module):
    """The model's point parameters.

    - `mean`: `[d]`, the data mean `mu` (maximum likelihood).
    - `log_prior_scale`: the loadings' prior log-scale `log s`: an array (trained, type-II) or a
      Python float (fixed, not trained).
    - `k`: the number of components (static).
    """

    mean: Float[Array, " d"]
    log_prior_scale: Float[Array, ""] | float
    k: int = eqx.field(static=True)


class GuideParams(eqx.Module):
    """Mean-field guide: `q(W) = N(w_loc, exp(w_log_scale)^2)` elementwise, `q(sigma^2) =
    LogNormal(noise_loc, exp(noise_log_scale))`."""

    w_loc: Float[Array, "d k"]
    w_log_scale: Float[Array, "d k"]
    noise_loc: Float[Array, ""]
    noise_log_scale: Float[Array, ""]


@gen
def _row(loadings: jax.Array, mean: jax.Array, noise: jax.Array, x: jax.Array) -> None:
    cov_diag = jnp.broadcast_to(noise, mean.shape)
    sample("x", dist.LowRankMultivariateNormal(mean, loadings, cov_diag), obs=x)


rows = genvi.vmap(_row, in_axes=(None, None, None, 0), plate="data")


@gen
def model(params: ModelParams, x: Float[Array, "n d"]) -> jax.Array:
    """PPCA with `z` integrated out; `x` is `[n, d]` (a `"data"` plate over rows)."""
    d, k = params.mean.shape[0], params.k
    scale = jnp.exp(params.log_prior_scale)
    loadings = sample("W", dist.Normal(jnp.zeros((d, k)), scale).to_event(2))
    noise = sample("noise", dist.InverseGamma(*NOISE_PRIOR))
    sample("rows", rows(loadings, params.mean, noise, x))
    return loadings


@gen
def guide(params: GuideParams, x: Float[Array, "n d"]) -> jax.Array:
    """The mean-field variational family over the loadings and the noise variance."""
    del x
    sample("noise", dist.LogNormal(params.noise_loc, jnp.exp(params.noise_log_scale)))
    return sample("W", dist.Normal(params.w_loc, jnp.exp(params.w_log_scale)).to_event(2))


def init(k: int, x: Float[Array, "n d"], *, prior_scale: float | str = "learned",
         init_scale: float = 0.1) -> Callable[[jax.Array], tuple[ModelParams, GuideParams]]:
    """A factory `key -> (model_params, guide_params)` for k components on data like `x`.

    **Arguments:**

    - `k`: the number of components (>= 1).
    - `x`: the data `[n, d]`; its mean and variance set the starting mean and noise.
    - `prior_scale`: `"learned"` (type-II, the default) or a fixed positive loading prior scale.
    - `init_scale`: the spread of the random starting loadings (restarts differ by it).
    """
    if not isinstance(k, int) or k < 1:
        raise genvi.ConfigError(f"ppca.init(k={k!r}): the number of components must be an integer >= 1")
    if jnp.ndim(x) != 2:
        raise genvi.ShapeError(f"ppca.init: x must be [rows, features], got shape {jnp.shape(x)}")
    if prior_scale != "learned" and not (isinstance(prior_scale, (int, float)) and prior_scale > 0):
        raise genvi.ConfigError(f"ppca.init(prior_scale={prior_scale!r}): use 'learned' or a positive number")
    x = jnp.asarray(x)
    d = x.shape[1]
    mean, log_var = x.mean(0), jnp.log(jnp.mean(jnp.var(x, 0)))
    log_s = jnp.zeros(()) if prior_scale == "learned" else float(jnp.log(prior_scale))

    def factory(key: jax.Array) -> tuple[ModelParams, GuideParams]:
        w = init_scale * jax.random.normal(key, (d, k))
        guide_params = GuideParams(w, jnp.full((d, k), jnp.log(init_scale)), log_var, jnp.log(jnp.array(0.1)))
        return ModelParams(mean, log_s, k), guide_params

    return factory


def candidate(k: int, x: Float[Array, "n d"], **options) -> tuple:
    """`(model, guide, factory)`: PPCA with k components as a `genvi.vi.select` candidate."""
    return model, guide, init(k, x, **options)
