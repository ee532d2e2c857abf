"""ENUM: exact enumeration of a finite support.

`E[k(x)] = sum_v q(v) k(v)`: the continuation is evaluated for every value (one `vmap` over the
support, so the rest of the program is traced once) and the terms are averaged with weights
`q(v)`, whose gradient gives the exact `sum_v grad q(v) k(v)`. Under a plate each element is
enumerated in parallel (cost O(N K), not K^N), which needs the terms downstream of the site to
keep the elements apart. Where a term mixes the elements (a log-mean-exp over particles),
the elements are enumerated jointly, K^N values, if that fits in `max_support`; otherwise genvi
says so rather than silently enumerate an exponential number of paths.
"""

from __future__ import annotations

from typing import Any

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from genvi._errors import ConfigError, EstimatorError
from genvi._site import Estimator, Outcome, SiteCall


class Enum(Estimator):
    """Exact enumeration (use `ENUM`, or `ENUM(max_support=...)`).

    **Arguments:**

    - `max_support`: the largest support a site may have (default 1024). Nested enumerated sites
      multiply their supports; the program-wide limit is `@expectation(max_branches=...)`.
    """

    max_support: int = 1024

    def __check_init__(self):
        if self.max_support < 1:
            raise ConfigError(f"ENUM(max_support={self.max_support}): must be at least 1")

    def __call__(self, max_support: int = 1024) -> "Enum":
        return Enum(max_support)

    def check(self, address: str, dist: Any) -> None:
        if not dist.has_enumerate_support:
            raise EstimatorError(
                f"site {address!r}: ENUM needs a distribution with finite support, got "
                f"{type(dist).__name__}; use REPARAM or REINFORCE"
            )

    def rule(self, call: SiteCall) -> Outcome:
        values = call.dist.support()
        size = values.shape[0]
        if size > self.max_support:
            raise EstimatorError(
                f"site {call.address!r}: ENUM over a support of {size} values exceeds "
                f"max_support={self.max_support}; use REINFORCE or MVD, or ENUM(max_support=...)"
            )
        with call.branching(size):
            outs, logq = jax.vmap(lambda v: (call.continue_(v), call.dist.log_prob(v)))(values)
        first = jax.tree.map(lambda a: a[0], outs)
        if all(call.factorises(key) for key in call.dependent(first)):
            return _combine(call, outs, jnp.exp(logq), lambda w, key, shape: call.to_term(w, key, shape))
        return self._joint(call, values)

    def _joint(self, call: SiteCall, values: jax.Array) -> Outcome:
        """Enumerate every joint assignment of the site's elements (a term mixes them)."""
        size, n = values.shape[0], call.dist.size
        if size ** n > self.max_support:
            first = jax.eval_shape(call.continue_, values[0])
            call.require_factorised(first, f"ENUM (joint support {size}^{n} > max_support={self.max_support})")
        flat = values.reshape(size, n, *call.dist.event_shape)
        index = np.array(list(itertools.product(range(size), repeat=n)), dtype=np.int32)
        joint = flat[index, np.arange(n)].reshape(len(index), *call.dist.shape)
        with call.branching(len(index)):
            outs, logq = jax.vmap(lambda v: (call.continue_(v), jnp.sum(call.dist.log_prob(v))))(joint)
        return _combine(call, outs, jnp.exp(logq), lambda w, key, shape: jnp.broadcast_to(w, shape))


def _combine(call: SiteCall, outs: Outcome, weights: jax.Array, place) -> Outcome:
    """Average each dependent term over the enumerated values with weights `q(v)`."""
    first = jax.tree.map(lambda a: a[0], outs)
    dependent = set(call.dependent(first))
    terms = {}
    for key, (value, surrogate) in outs.terms.items():
        if key not in dependent:
            terms[key] = (value[0], surrogate[0])
            continue
        w = jax.vmap(lambda wk: place(wk, key, value.shape[1:]))(weights)
        terms[key] = (jnp.sum(jax.lax.stop_gradient(w) * value, 0), jnp.sum(w * surrogate, 0))
    return Outcome(terms, first.states)


ENUM = Enum()
