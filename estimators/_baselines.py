"""Baselines for REINFORCE: control variates `b` that do not depend on the site's value.

Each returns an element-shaped `b`; REINFORCE's score term becomes
`(cost - b) * (log q - stop_gradient(log q))` (value zero), so `b` adds `-b * grad log q` to the
gradient, which changes the variance and never the mean.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from genvi._errors import ConfigError, EstimatorError
from genvi._site import Outcome, SiteCall


class Baseline(eqx.Module):
    """A baseline: `compute` returns `(b, new_state, training_surrogate_or_None)`."""

    stateful: ClassVar[bool] = False

    @abc.abstractmethod
    def compute(self, call: SiteCall, outcome: Outcome, cost: jax.Array, state: Any
                ) -> tuple[jax.Array, Any, jax.Array | None]:
        """`cost` is the element-shaped downstream cost (gradient stopped)."""

    def init_state(self) -> Any:
        return None


class LeaveOneOut(Baseline):
    """For element `n` along `axis`, the mean cost of the other elements (Kool et al. 2019).

    Unbiased because those costs do not depend on element `n`'s value; that requires every term
    downstream of the site to keep the elements along `axis` apart (a particle axis from
    `genvi.vmap`, or a data plate). Where a term mixes them (a log-mean-exp over particles, say)
    the baseline would be biased, and genvi raises instead (use VIMCO for IWAE-style bounds).
    """

    axis: int = 0

    def compute(self, call, outcome, cost, state):
        shape = call.element_shape
        if len(shape) <= self.axis or shape[self.axis] < 2:
            raise EstimatorError(
                f"site {call.address!r}: the leave-one-out baseline needs at least 2 elements along "
                f"axis {self.axis} (particles from genvi.vmap or a plate); the site's elements have "
                f"shape {shape}"
            )
        for key in call.dependent(outcome):
            if not call.aligned_on(key, self.axis):
                raise EstimatorError(
                    f"site {call.address!r}: the leave-one-out baseline needs each element along axis "
                    f"{self.axis} to have its own cost, but the term computed by `{call.describe(key)}` "
                    "mixes them, so the others' costs would depend on this element (biased); "
                    "use RunningMean, or VIMCO for multi-sample bounds"
                )
        n = shape[self.axis]
        total = jnp.sum(cost, axis=self.axis, keepdims=True)
        return (total - cost) / (n - 1), state, None


class RunningMean(Baseline):
    """An exponential moving average of the per-element cost across training steps."""

    stateful: ClassVar[bool] = True
    decay: float = 0.9

    def __check_init__(self):
        if not 0.0 <= self.decay < 1.0:
            raise ConfigError(f"RunningMean(decay={self.decay}): decay must lie in [0, 1)")

    def init_state(self):
        return (jnp.zeros(()), jnp.zeros((), jnp.int32))

    def compute(self, call, outcome, cost, state):
        avg, count = state
        corrected = jnp.where(count > 0, avg / (1.0 - self.decay ** jnp.maximum(count, 1)), 0.0)
        new = (self.decay * avg + (1.0 - self.decay) * jnp.mean(cost), count + 1)
        return jnp.broadcast_to(corrected, call.element_shape), new, None


class Learned(Baseline):
    """A user baseline `fn(*program_args) -> b` (broadcastable to the site's elements).

    Its parameters (inside the program's arguments) are trained to predict the cost: the
    surrogate gains `-(cost - b)^2` (value zero), as NVIL does (Mnih & Gregor 2014).
    """

    fn: Callable = eqx.field(static=True)

    def compute(self, call, outcome, cost, state):
        b = jnp.broadcast_to(self.fn(*call.args), call.element_shape)
        loss = jnp.square(cost - b)
        return b, state, jax.lax.stop_gradient(loss) - loss


def as_baseline(baseline: Any) -> Baseline | None:
    """Accept `None`, "loo", "mean", a `Baseline`, or a callable (a learned baseline)."""
    if baseline is None or isinstance(baseline, Baseline):
        return baseline
    if baseline == "loo":
        return LeaveOneOut()
    if baseline == "mean":
        return RunningMean()
    if callable(baseline):
        return Learned(baseline)
    raise ConfigError(f"baseline={baseline!r}: use None, 'loo', 'mean', a Baseline or a callable")
