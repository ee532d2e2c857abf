"""The importance-weighted bound, `E[log (1/K) sum_k p(x, z_k) / q(z_k)]` (Burda et al. 2016)."""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.special import logsumexp

import genvi
from genvi import ConfigError, Expectation, GenerativeFunction, expectation


def iwae(model: GenerativeFunction, guide: GenerativeFunction, *, particles: int) -> Expectation:
    """The IWAE bound with `particles` joint particles (vmapped, so it compiles once for any K)."""
    if not isinstance(particles, int) or particles < 1:
        raise ConfigError(f"iwae(particles={particles!r}): particles must be an integer >= 1")

    @expectation
    def iwae_program(params, *data):
        model_params, guide_params = params

        def log_weight():
            trace = guide.sim(guide_params, *data)
            return model.log_density(trace.choices, model_params, *data) - trace.log_density

        log_weights = genvi.vmap(log_weight, axis_size=particles)()
        return logsumexp(log_weights) - jnp.log(particles)

    return iwae_program
