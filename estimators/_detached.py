"""DETACHED: draw without a gradient path and add no score term: the objective supplies it.

On its own this estimator is *biased* (it ignores how the site's distribution depends on the
parameters). It exists for objectives that write their own gradient for the site: VIMCO adds
its leave-one-out score term, reweighted wake-sleep differentiates `log q` at fixed samples.
Those objectives select it themselves; users rarely need it directly.
"""

from __future__ import annotations

from typing import ClassVar

import jax

from genvi._site import LocalEstimator
from genvi._sitedist import SiteDist


class Detached(LocalEstimator):
    """`stop_gradient(sample)`, no correction (use the instance `DETACHED`)."""

    needs_terms: ClassVar[bool] = False

    def draw(self, key: jax.Array, dist: SiteDist) -> tuple[jax.Array, None]:
        return jax.lax.stop_gradient(dist.sample(key)), None


DETACHED = Detached()
