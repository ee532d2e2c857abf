"""The path as a random choice: NumPyro distributions over solved paths, for genvi sites.

A path's density is taken with respect to the *prior* path law P (the fractional SDE with
u = 0). So the model's site `ReferencePath` has log density 0 (P relative to itself), and the
guide's `PosteriorPath` has log density log dQ/dP, which Girsanov gives as a functional of the
path that the solver integrates along with it (`_sde.py`): the guide's density is read off the
value. The ELBO's log p - log q then equals log p(obs | X) - log dQ/dP, the paper's objective.

`PosteriorPath.rsample` is the solve itself, so the site is REPARAM: gradients flow through
diffrax into the drift, diffusion, control and H.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as nd
from numpyro.distributions import constraints

from genvi import ConfigError

from ._sde import FractionalSDE, PathConfig, solve


class PosteriorPath(nd.Distribution):
    """The controlled SDE's path at the observation times; value shape (n_obs, D (K+1) + 2).

    `log_prob(value)` = log dQ/dP of the path: 1/2 int |u|^2 dt (`girsanov="expected"`, the
    KL's integrand; its expectation is the same as the exact one's) or that plus int u . dW
    (`"full"`, the exact log weight, needed by IWAE).
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.real, 2)
    pytree_data_fields = ("arrays", "x0", "index")
    pytree_aux_fields = ("static", "config")

    def __init__(self, sde: FractionalSDE, control, x0: jax.Array, index, config: PathConfig):
        self.arrays, self.static = eqx.partition((sde, control), eqx.is_array)
        self.x0, self.index, self.config = jnp.asarray(x0, jnp.float32), jnp.asarray(index), config
        super().__init__(batch_shape=(), event_shape=(len(config.obs_times), config.state_size(sde)))

    @property
    def has_rsample(self) -> bool:
        return True

    def rsample(self, key: jax.Array, sample_shape: tuple = ()) -> jax.Array:
        sde, control = eqx.combine(self.arrays, self.static)
        one = lambda k: solve(sde, control, self.x0, self.index, self.config, k)
        if not sample_shape:
            return one(key)
        keys = jax.random.split(key, int(jnp.prod(jnp.asarray(sample_shape))))
        return jax.vmap(one)(keys).reshape(tuple(sample_shape) + self.event_shape)

    def sample(self, key: jax.Array, sample_shape: tuple = ()) -> jax.Array:
        return self.rsample(key, sample_shape)

    def log_prob(self, value: jax.Array) -> jax.Array:
        cost = value[..., -1, -2]
        return cost + value[..., -1, -1] if self.config.girsanov == "full" else cost


class ReferencePath(nd.Distribution):
    """The prior path law as the reference measure: log density 0 for every path.

    It cannot be sampled by itself (the prior SDE lives in the guide's parameters, because the
    posterior is the prior plus a control); use `fbm_sde.sample_prior` for prior paths.
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.real, 2)
    pytree_data_fields = ()
    pytree_aux_fields = ()

    def __init__(self, event_shape: tuple[int, int]):
        super().__init__(batch_shape=(), event_shape=tuple(event_shape))

    def sample(self, key, sample_shape=()):
        raise ConfigError("site 'path': the model's path is the reference (prior) law, whose SDE lives in the "
                          "guide's parameters; sample prior paths with fbm_sde.sample_prior(key, sde, x0, config)")

    def log_prob(self, value: jax.Array) -> jax.Array:
        return jnp.zeros(jnp.shape(value)[:-2])
