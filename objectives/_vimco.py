"""VIMCO (Mnih & Rezende 2016): the IWAE bound for guides whose samples are not reparameterised.

The gradient is `sum_k (L - L_{-k}) grad log q(z_k) + sum_k w~_k grad log w_k`, where `L` is the
K-sample bound and `L_{-k}` the same bound with `log w_k` replaced by the mean of the other
particles' log weights: a leave-one-out control variate that does not depend on `z_k`, so the
estimator stays unbiased. Guide sites are drawn DETACHED (the program supplies the score term);
a site forced to another estimator is refused. Per data point for local latents (`_weights.py`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from genvi import ConfigError, Expectation, GenerativeFunction, expectation
from genvi.estimators import DETACHED, Detached

from ._common import require
from ._weights import log_mean_exp, particles as run_particles, weights

sg = jax.lax.stop_gradient


def leave_one_out_bounds(log_w: jax.Array) -> jax.Array:
    """`L_{-k}` for each particle `k` (axis 0): `log w_k` replaced by the others' mean."""
    k = log_w.shape[0]
    others_mean = (jnp.sum(log_w, 0, keepdims=True) - log_w) / (k - 1)
    eye = jnp.eye(k, dtype=bool).reshape((k, k) + (1,) * (log_w.ndim - 1))
    replaced = jnp.where(eye, others_mean[:, None], log_w[None, :])  # [k (held out), j, ...]
    return logsumexp(replaced, axis=1) - jnp.log(k)


def vimco(model: GenerativeFunction, guide: GenerativeFunction, *, particles: int) -> Expectation:
    """The VIMCO objective with `particles >= 2` particles (see the module docstring)."""
    if not isinstance(particles, int) or particles < 2:
        raise ConfigError(f"vimco(particles={particles!r}): the leave-one-out control variate needs at least 2 particles")
    policy = require("vimco", (Detached,), DETACHED,
                     "supplies its own score-function gradient with leave-one-out control variates")

    @expectation(policy=policy)
    def vimco_program(params, *data):
        model_params, guide_params = params
        box = {}

        def one():
            w, _ = weights(model, guide, model_params, guide_params, data, objective="vimco")
            box["scale"] = w.scale
            return w.log_p, w.log_q

        log_p, log_q = run_particles(one, particles)
        log_w = log_p - log_q
        bound = log_mean_exp(log_w)
        control = sg(bound[None] - leave_one_out_bounds(log_w))
        score = jnp.sum(control * (log_q - sg(log_q)))
        return box["scale"] * (jnp.sum(bound) + score)

    return vimco_program
