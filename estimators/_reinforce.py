"""REINFORCE: the score-function gradient, Rao-Blackwellised, with optional baselines.

`grad E[k(x)] = E[grad k(x) + (k(x) - b) grad log q(x)]`. Only terms that depend on the site
(downstream in the program's dataflow) receive the score `grad log q`, and under a plate or a
particle axis each element only the entries of the terms aligned with it (see `_analysis.py`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from genvi._site import LocalEstimator, Outcome, SiteCall
from genvi._sitedist import SiteDist

from ._baselines import Baseline, as_baseline


class Reinforce(LocalEstimator):
    """Score-function gradient (use `REINFORCE` or `REINFORCE(baseline=...)`).

    **Arguments:**

    - `baseline`: `None`, `"loo"` (leave-one-out across the first element axis), `"mean"`
      (running mean across steps; keeps state), a [`Baseline`][] or a callable
      `fn(*program_args)` (a learned baseline).
    """

    baseline: Baseline | None = None

    def __init__(self, baseline: Any = None):
        self.baseline = as_baseline(baseline)

    def __call__(self, baseline: Any = None) -> "Reinforce":
        return Reinforce(baseline)

    @property
    def stateful(self) -> bool:  # type: ignore[override]
        return self.baseline is not None and self.baseline.stateful

    def init_state(self) -> Any:
        return self.baseline.init_state() if self.baseline is not None else None

    def draw(self, key: jax.Array, dist: SiteDist) -> tuple[jax.Array, jax.Array]:
        return dist.sample_and_log_prob(key)

    def adjust(self, call: SiteCall, outcome: Outcome, logq: jax.Array) -> Outcome:
        # One element-shaped score term `(cost - b) * (log q - stop_gradient(log q))`, value zero:
        # to first order the same gradient as a magic box on every dependent term (`to_element`
        # is `to_term`'s adjoint), without a product and an exp per term element.
        cost = jax.lax.stop_gradient(call.cost(outcome))
        state, train = call.state, None
        if self.baseline is not None:
            b, state, train = self.baseline.compute(call, outcome, cost, call.state)
            cost = cost - jax.lax.stop_gradient(b)
        score = cost * (logq - jax.lax.stop_gradient(logq))
        if train is not None:
            score = score + train
        outcome = call.add_term(outcome, "score", jnp.zeros(call.element_shape), score)
        return call.with_state(outcome, state) if self.stateful else outcome


REINFORCE = Reinforce()
