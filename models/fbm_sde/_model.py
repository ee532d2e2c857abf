"""The family as genvi generative functions: a model and a guide over a plate of observed paths.

    model(obs_model, obs, index):  x0 ~ N(m0, s0)  [unless the config fixes x0]
                                   path ~ ReferencePath          (log density 0: the prior law)
                                   obs ~ N(X(t_i), noise)        (observed)
    guide(posterior, obs, index):  x0 ~ N(loc[index], scale[index])
                                   path ~ PosteriorPath(sde, control, x0)   (REPARAM; log dQ/dP)

so `elbo(model, guide)` is E_Q[sum_i log p(o_i | X(t_i))] - E_Q int 1/2 |u|^2 dt - KL(x0).
Why the prior SDE is in the guide's parameters: the posterior path is the prior SDE plus a
control, so sampling it needs the prior's drift, diffusion and H; keeping one copy there (and
the path density relative to the prior law) lets every parameter, H included, be trained by
the ordinary objectives and `fit` with `params = (obs_model, posterior)`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist

import genvi
from genvi import ConfigError, ShapeError, gen, sample

from ._path import PosteriorPath, ReferencePath
from ._sde import FractionalSDE, PathConfig, solve


class ObsModel(eqx.Module):
    """The model's parameters: observation noise sd and the initial-state prior N(x0_loc, x0_scale)."""

    log_noise: jax.Array
    x0_loc: jax.Array
    x0_log_scale: jax.Array
    learn_noise: bool = eqx.field(static=True)

    def __init__(self, noise: float, dim: int = 1, x0_loc=0.0, x0_scale=1.0, learn_noise: bool = False):
        if not noise > 0:
            raise ConfigError(f"observation noise must be positive, got {noise}")
        self.log_noise = jnp.log(jnp.asarray(noise, jnp.float32))
        self.x0_loc = jnp.broadcast_to(jnp.asarray(x0_loc, jnp.float32), (dim,))
        self.x0_log_scale = jnp.log(jnp.broadcast_to(jnp.asarray(x0_scale, jnp.float32), (dim,)))
        self.learn_noise = learn_noise

    @property
    def noise(self) -> jax.Array:
        return jnp.exp(self.log_noise if self.learn_noise else jax.lax.stop_gradient(self.log_noise))


class Posterior(eqx.Module):
    """The guide's parameters: the prior SDE, the control and per-path initial-state posteriors."""

    sde: FractionalSDE
    control: object
    x0_loc: jax.Array  # (paths, D)
    x0_log_scale: jax.Array  # (paths, D)

    def __init__(self, sde: FractionalSDE, control, num_paths: int = 1, x0_loc=0.0, x0_scale=1.0):
        shape = (num_paths, sde.dim)
        self.sde, self.control = sde, control
        self.x0_loc = jnp.broadcast_to(jnp.asarray(x0_loc, jnp.float32), shape)
        self.x0_log_scale = jnp.log(jnp.broadcast_to(jnp.asarray(x0_scale, jnp.float32), shape))


def _check_obs(obs, config: PathConfig, dim: int) -> None:
    expected = (len(config.obs_times), dim)
    if tuple(jnp.shape(obs)) != expected:
        raise ShapeError(f"site 'obs': one path's observations must have shape (n_obs, D) = {expected} "
                         f"(one row per observation time), got {tuple(jnp.shape(obs))}")


def model(config: PathConfig, dim: int, num_processes: int) -> genvi.GenerativeFunction:
    """The model over a plate `"data"` of paths; call as `model(obs_model, obs, index)` with
    `obs` of shape (paths, n_obs, D) and `index` = arange(paths)."""
    size = dim * (num_processes + 1) + 2

    @gen
    def one_path(obs_model: ObsModel, obs: jax.Array, index: jax.Array):
        _check_obs(obs, config, dim)
        if config.x0 is None:
            sample("x0", dist.Normal(obs_model.x0_loc, jnp.exp(obs_model.x0_log_scale)).to_event(1))
        path = sample("path", ReferencePath((len(config.obs_times), size)))
        sample("obs", dist.Normal(path[:, :dim], obs_model.noise).to_event(2), obs=obs)
        return path

    return genvi.vmap(one_path, in_axes=(None, 0, 0), plate="data")


def guide(config: PathConfig) -> genvi.GenerativeFunction:
    """The guide over the same plate; call as `guide(posterior, obs, index)`."""

    @gen
    def one_path(posterior: Posterior, obs: jax.Array, index: jax.Array):
        if config.x0 is None:
            x0 = sample("x0", dist.Normal(posterior.x0_loc[index], jnp.exp(posterior.x0_log_scale[index])).to_event(1))
        else:
            x0 = jnp.asarray(config.x0, jnp.float32)
        return sample("path", PosteriorPath(posterior.sde, posterior.control, x0, index, config))

    return genvi.vmap(one_path, in_axes=(None, 0, 0), plate="data")


def sample_prior(key: jax.Array, sde: FractionalSDE, x0, config: PathConfig, num_samples: int = 1) -> jax.Array:
    """`num_samples` prior paths at the observation times, shape (num_samples, n_obs, D (K+1) + 2)."""
    keys = jax.random.split(key, num_samples)
    return jax.vmap(lambda k: solve(sde, None, x0, 0, config, k))(keys)


def sample_posterior(key: jax.Array, posterior: Posterior, config: PathConfig, index: int = 0,
                     num_samples: int = 1) -> jax.Array:
    """`num_samples` posterior paths of path `index` (initial state from its guide)."""
    def one(k):
        k0, k1 = jax.random.split(k)
        if config.x0 is None:
            x0 = posterior.x0_loc[index] + jnp.exp(posterior.x0_log_scale[index]) * jax.random.normal(k0, (posterior.sde.dim,))
        else:
            x0 = jnp.asarray(config.x0, jnp.float32)
        return solve(posterior.sde, posterior.control, x0, index, config, k1)

    return jax.vmap(one)(jax.random.split(key, num_samples))
