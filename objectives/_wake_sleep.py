"""Reweighted wake-sleep (Bornschein & Bengio 2015; Le et al. 2019).

With K guide samples held fixed (DETACHED) and normalised weights `w~_k`:

- `p_wake`: the model's gradient `sum_k w~_k grad log p(x, z_k)` (the IWAE gradient at fixed
  samples); its value is the IWAE bound; the guide gets no gradient.
- `q_wake`: the guide's gradient `sum_k w~_k grad log q(z_k)`, a self-normalised estimate of
  `-grad KL(p(z | x) || q)`: the guide learns to cover the posterior, which suits discrete
  latents; its value is `sum_k w~_k log q(z_k)`; the model gets no gradient.
- `rws`: both at once (one set of particles); its value is the IWAE bound.

Like IWAE they are formed per data point for latents local to a data plate. `genvi.normalize`
(SIR) can serve as a better proposal inside other wake-sleep variants.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from genvi import Expectation, GenerativeFunction, expectation
from genvi.estimators import DETACHED, Detached

from ._common import require
from ._weights import check_particles, log_mean_exp, particles as run_particles, weights

sg = jax.lax.stop_gradient


def _wake(model, guide, particles: int, name: str, combine: Callable) -> Expectation:
    check_particles(name, particles)
    policy = require(name, (Detached,), DETACHED, "differentiates log densities at fixed (detached) samples")

    @expectation(policy=policy)
    def wake_program(params, *data):
        model_params, guide_params = params
        box = {}

        def one():
            w, _ = weights(model, guide, model_params, guide_params, data, objective=name)
            box["scale"] = w.scale
            return w.log_p, w.log_q

        log_p, log_q = run_particles(one, particles)
        norm = jax.nn.softmax(sg(log_p - log_q), axis=0)
        bound = jnp.sum(log_mean_exp(log_p - log_q))
        p_term = jnp.sum(norm * (log_p - sg(log_p)))
        q_term = jnp.sum(norm * log_q)
        return box["scale"] * combine(bound, p_term, q_term)

    return wake_program


def p_wake(model: GenerativeFunction, guide: GenerativeFunction, *, particles: int) -> Expectation:
    """The wake update of the model (see the module docstring)."""
    return _wake(model, guide, particles, "p_wake", lambda bound, p, q: sg(bound) + p)


def q_wake(model: GenerativeFunction, guide: GenerativeFunction, *, particles: int) -> Expectation:
    """The wake update of the guide (see the module docstring)."""
    return _wake(model, guide, particles, "q_wake", lambda bound, p, q: q)


def rws(model: GenerativeFunction, guide: GenerativeFunction, *, particles: int) -> Expectation:
    """Reweighted wake-sleep: `p_wake` and `q_wake` together (see the module docstring)."""
    return _wake(model, guide, particles, "rws", lambda bound, p, q: sg(bound) + p + (q - sg(q)))
