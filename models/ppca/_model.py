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

Candidates k = 1..kmax can share one compiled batch in `select`: `init(k, x, width=kmax)` pads
the loadings to `kmax` columns and switches off the last `kmax - k` with a mask (`active`); a
switched-off column has the same N(0, 1) law under the model and the guide (so it adds exactly
zero to the ELBO) and is multiplied by zero in the likelihood, so the padded model *is* the
k-component model.

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
    - `log_prior_scale`: the loadings' prior log-scale `log s`.
    - `learn_scale`: 1.0 to learn `log s` (type-II), 0.0 to hold it fixed (never trained itself;
      an array rather than a flag so fixed and learned candidates share one compiled batch).
    - `active`: `[width]`, 1.0 for the k components in use, 0.0 for padding (never trained).
    """

    mean: Float[Array, " d"]
    log_prior_scale: Float[Array, ""]
    learn_scale: Float[Array, ""]
    active: Float[Array, " width"]

    @property
    def k(self) -> int:
        return int(jnp.sum(self.active))


class GuideParams(eqx.Module):
    """Mean-field guide: `q(W) = N(w_loc, exp(w_log_scale)^2)` elementwise, `q(sigma^2) =
    LogNormal(noise_loc, exp(noise_log_scale))`; padded columns (`active == 0`) are N(0, 1)."""

    w_loc: Float[Array, "d width"]
    w_log_scale: Float[Array, "d width"]
    noise_loc: Float[Array, ""]
    noise_log_scale: Float[Array, ""]
    active: Float[Array, " width"]


@gen
def _row(loadings: jax.Array, mean: jax.Array, noise: jax.Array, x: jax.Array) -> None:
    cov_diag = jnp.broadcast_to(noise, mean.shape)
    sample("x", dist.LowRankMultivariateNormal(mean, loadings, cov_diag), obs=x)


rows = genvi.vmap(_row, in_axes=(None, None, None, 0), plate="data")


@gen
def model(params: ModelParams, x: Float[Array, "n d"]) -> jax.Array:
    """PPCA with `z` integrated out; `x` is `[n, d]` (a `"data"` plate over rows)."""
    active = jax.lax.stop_gradient(params.active)
    d, width = params.mean.shape[0], active.shape[0]
    learn = jax.lax.stop_gradient(params.learn_scale)
    log_s = learn * params.log_prior_scale + (1.0 - learn) * jax.lax.stop_gradient(params.log_prior_scale)
    scale = jnp.where(active > 0, jnp.exp(log_s), 1.0)
    loadings = sample("W", dist.Normal(jnp.zeros((d, width)), jnp.broadcast_to(scale, (d, width))).to_event(2))
    noise = sample("noise", dist.InverseGamma(*NOISE_PRIOR))
    sample("rows", rows(loadings * active, params.mean, noise, x))
    return loadings * active


@gen
def guide(params: GuideParams, x: Float[Array, "n d"]) -> jax.Array:
    """The mean-field variational family over the loadings and the noise variance."""
    del x
    on = jax.lax.stop_gradient(params.active) > 0
    sample("noise", dist.LogNormal(params.noise_loc, jnp.exp(params.noise_log_scale)))
    loc = jnp.where(on, params.w_loc, 0.0)
    scale = jnp.where(on, jnp.exp(params.w_log_scale), 1.0)
    return sample("W", dist.Normal(loc, scale).to_event(2))


def init(k: int, x: Float[Array, "n d"], *, prior_scale: float | str = "learned", init_scale: float = 0.1,
         width: int | None = None) -> Callable[[jax.Array], tuple[ModelParams, GuideParams]]:
    """A factory `key -> (model_params, guide_params)` for k components on data like `x`.

    **Arguments:**

    - `k`: the number of components (>= 1).
    - `x`: the data `[n, d]`; its mean and variance set the starting mean and noise.
    - `prior_scale`: `"learned"` (type-II, the default) or a fixed positive loading prior scale.
    - `init_scale`: the spread of the random starting loadings (restarts differ by it).
    - `width`: pad the loadings to this many columns (>= k), so that candidates of every k up
      to `width` have the same shapes and `select` trains them in one compiled batch.
    """
    if not isinstance(k, int) or k < 1:
        raise genvi.ConfigError(f"ppca.init(k={k!r}): the number of components must be an integer >= 1")
    width = k if width is None else width
    if not isinstance(width, int) or width < k:
        raise genvi.ConfigError(f"ppca.init(width={width!r}): must be an integer >= k = {k}")
    if jnp.ndim(x) != 2:
        raise genvi.ShapeError(f"ppca.init: x must be [rows, features], got shape {jnp.shape(x)}")
    if prior_scale != "learned" and not (isinstance(prior_scale, (int, float)) and prior_scale > 0):
        raise genvi.ConfigError(f"ppca.init(prior_scale={prior_scale!r}): use 'learned' or a positive number")
    x = jnp.asarray(x)
    d = x.shape[1]
    mean, log_var = x.mean(0), jnp.log(jnp.mean(jnp.var(x, 0)))
    learned = prior_scale == "learned"
    log_s = jnp.zeros((), x.dtype) if learned else jnp.log(jnp.asarray(prior_scale, x.dtype))
    learn = jnp.asarray(1.0 if learned else 0.0, x.dtype)

    active = (jnp.arange(width) < k).astype(x.dtype)

    def factory(key: jax.Array) -> tuple[ModelParams, GuideParams]:
        w = init_scale * jax.random.normal(key, (d, width))
        guide_params = GuideParams(w, jnp.full((d, width), jnp.log(init_scale)), log_var,
                                   jnp.log(jnp.array(0.1)), active)
        return ModelParams(mean, log_s, learn, active), guide_params

    return factory


def candidate(k: int, x: Float[Array, "n d"], **options) -> tuple:
    """`(model, guide, factory)`: PPCA with k components as a `genvi.vi.select` candidate."""
    return model, guide, init(k, x, **options)
