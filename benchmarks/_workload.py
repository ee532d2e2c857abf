"""What a benchmark workload is, and the training-step plumbing its implementations share.

A workload is a few implementations of the same mathematics (genvi, the same maths written by
hand in JAX, NumPyro, ...), each a pure `state -> state` training step with its initial state, so
that the runner can compile them, measure their memory and time them in interleaved blocks.
Implementations whose gradients are compared for variance also give `grad(key) -> flat vector`
at fixed parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import optax


@dataclass
class Impl:
    """One implementation: a jittable `step(state) -> state` and its initial state."""

    step: Callable[[Any], Any]
    init: Any
    grad: Callable[[jax.Array], jax.Array] | None = None  # key -> flattened gradient estimate


@dataclass
class Workload:
    """Implementations of one mathematical problem; `subject` is measured against `references`."""

    name: str
    title: str
    impls: dict[str, Impl]
    subject: str = "genvi"
    references: tuple[str, ...] = ("hand-written", "numpyro")
    baseline: str = "hand-written"  # for the compile-time ratio
    meta: dict[str, Any] = field(default_factory=dict)


def ascent_step(value_and_grad: Callable, data: jax.Array | None, optimizer: optax.GradientTransformation,
                static: Any, batch: int) -> Callable:
    """A step maximising `value_and_grad(params, key, batch_data) -> (value, grads)` with `optimizer`.

    The state is `(params, opt_state, key)`; params are the inexact-array half of an equinox
    partition (`static` the rest); a minibatch of `batch` rows of `data` is drawn on device
    (`data=None`: the whole of nothing, for problems without data batches).
    """

    def step(state):
        params, opt_state, key = state
        key, k_batch, k_est = jax.random.split(key, 3)
        x = data if data is None or batch >= data.shape[0] else \
            data[jax.random.randint(k_batch, (batch,), 0, data.shape[0])]
        _, grads = value_and_grad(eqx.combine(params, static), k_est, x)
        grads = jax.tree.map(jnp.negative, eqx.filter(grads, eqx.is_inexact_array))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, key

    return step


def ascent_impl(value_and_grad: Callable, params: Any, data: jax.Array | None, batch: int,
                optimizer: optax.GradientTransformation | None = None, seed: int = 1) -> Impl:
    """An `Impl` of `ascent_step`, with a gradient sampler at the initial parameters."""
    optimizer = optimizer or optax.adam(1e-3)
    dynamic, static = eqx.partition(params, eqx.is_inexact_array)
    step = ascent_step(value_and_grad, data, optimizer, static, batch)
    x0 = data if data is None or batch >= data.shape[0] else data[:batch]

    def grad(key):
        _, grads = value_and_grad(eqx.combine(dynamic, static), key, x0)
        return jax.flatten_util.ravel_pytree(eqx.filter(grads, eqx.is_inexact_array))[0]

    return Impl(step, (dynamic, optimizer.init(dynamic), jax.random.PRNGKey(seed)), grad)


def svi_impl(svi: Any, init_args: tuple, data: jax.Array | None, batch: int, seed: int = 1,
             extra_args: tuple = ()) -> Impl:
    """An `Impl` of NumPyro's `SVI.update` on minibatches of `data` drawn on device.

    The gradient sampler differentiates `svi.loss.loss` at the initial parameters (negated, so it
    estimates the gradient of the objective, like the others).
    """
    svi_state = svi.init(jax.random.PRNGKey(seed), *init_args, *extra_args)
    n = None if data is None else data.shape[0]

    def step(state):
        svi_state, key = state
        key, k_batch = jax.random.split(key)
        x = data if data is None or batch >= n else data[jax.random.randint(k_batch, (batch,), 0, n)]
        svi_state, _ = svi.update(svi_state, x, *extra_args)
        return svi_state, key

    params0 = svi.get_params(svi_state)

    def grad(key):
        def objective(p):
            return -svi.loss.loss(key, p, svi.model, svi.guide, *init_args, *extra_args)

        return jax.flatten_util.ravel_pytree(jax.grad(objective)(params0))[0]

    return Impl(step, (svi_state, jax.random.PRNGKey(seed + 1)), grad)
