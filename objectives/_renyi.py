"""The variational Rényi bound (Li & Turner 2016).

`L_alpha = E[1 / (1 - alpha) log (1/K) sum_k w_k^(1 - alpha)]`: alpha = 0 is the IWAE bound, and
alpha -> 1 the ELBO (the limit, `mean_k log w_k`, is used at alpha = 1 exactly). Per data point
for local latents (`_weights.py`); every guide site keeps its own estimator.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from genvi import ConfigError, Expectation, GenerativeFunction, expectation

from ._weights import check_particles, log_mean_exp, particles as run_particles, weights


def renyi(model: GenerativeFunction, guide: GenerativeFunction, *, alpha: float, particles: int) -> Expectation:
    """The Rényi bound of order `alpha` with `particles` particles."""
    check_particles("renyi", particles)
    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise ConfigError(f"renyi(alpha={alpha!r}): alpha must be a finite real number")

    @expectation
    def renyi_program(params, *data):
        model_params, guide_params = params
        box = {}

        def one():
            w, _ = weights(model, guide, model_params, guide_params, data, objective="renyi")
            box["scale"] = w.scale
            return w.log_w

        log_w = run_particles(one, particles)
        if alpha == 1:
            bound = jnp.mean(log_w, axis=0)
        else:
            bound = log_mean_exp((1 - alpha) * log_w) / (1 - alpha)
        return box["scale"] * jnp.sum(bound)

    return renyi_program
