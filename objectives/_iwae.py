"""The importance-weighted bound (Burda et al. 2016), optionally with the DReG gradient.

`IWAE_K = E[log (1/K) sum_k w_k]`, `w_k = p(x, z_k) / q(z_k)`, formed per data point for latents
local to a data plate and jointly otherwise (see `_weights.py`). Particles are a vmapped axis.

`dreg=True` (Tucker et al. 2019, doubly reparameterised gradients) needs every guide site
reparameterised: the model parameters get `sum_k w~_k grad log p(x, z_k)` and the guide
parameters `sum_k w~_k^2 d log w_k / d z_k * d z_k / d phi`, which is unbiased for the same bound
with lower variance than the plain reparameterised IWAE gradient as K grows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from genvi import Expectation, GenerativeFunction, expectation
from genvi.estimators import Reparam

from ._common import require, stop
from ._weights import check_particles, log_mean_exp, particles as run_particles, split, weights

sg = jax.lax.stop_gradient


def iwae(model: GenerativeFunction, guide: GenerativeFunction, *, particles: int,
         dreg: bool = False) -> Expectation:
    """The IWAE bound with `particles` particles (see the module docstring)."""
    check_particles("iwae", particles)
    if dreg:
        return _dreg(model, guide, particles)

    @expectation
    def iwae_program(params, *data):
        model_params, guide_params = params
        box = {}

        def one():
            w, _ = weights(model, guide, model_params, guide_params, data, objective="iwae")
            box["scale"] = w.scale
            return w.log_w

        log_w = run_particles(one, particles)
        return box["scale"] * jnp.sum(log_mean_exp(log_w))

    return iwae_program


def _dreg(model: GenerativeFunction, guide: GenerativeFunction, particles: int) -> Expectation:
    policy = require("iwae(dreg=True)", (Reparam,), Reparam(),
                     "differentiates through reparameterised samples (DReG)")

    @expectation(policy=policy)
    def iwae_dreg_program(params, *data):
        model_params, guide_params = params
        box = {}

        def one():
            q = guide.sim(guide_params, *data)
            # the guide's gradient flows only along the sample path: log q at stopped parameters,
            # the model at stopped parameters; the model's gradient at stopped samples
            q_path = guide.score(q.choices, stop(guide_params), *data)
            path = split(model.score(q.choices, stop(model_params), *data), q_path, "iwae")
            fixed = split(model.score(stop(q.choices), model_params, *data), q_path, "iwae")
            box["scale"] = path.scale
            return path.log_w, fixed.log_p

        path_log_w, model_log_p = run_particles(one, particles)
        norm = jax.nn.softmax(sg(path_log_w), axis=0)
        bound = box["scale"] * jnp.sum(log_mean_exp(path_log_w))
        model_term = jnp.sum(norm * (model_log_p - sg(model_log_p)))
        guide_term = jnp.sum(norm ** 2 * (path_log_w - sg(path_log_w)))
        return sg(bound) + box["scale"] * (model_term + guide_term)

    return iwae_dreg_program

