"""REPARAM: the pathwise (reparameterisation) gradient.

The site's value is drawn as a differentiable function of its parameters and noise,
`x = T(eps, theta)`, so `grad k(x)` flows through `x`. NumPyro supplies `rsample` for every
distribution with `has_rsample`, including implicit reparameterisation of Gamma, Beta and
Dirichlet (Figurnov et al. 2018) through `jax.random.gamma`'s gradient.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax

from genvi._errors import EstimatorError
from genvi._site import LocalEstimator
from genvi._sitedist import SiteDist


class Reparam(LocalEstimator):
    """Pathwise gradient through `dist.rsample` (use the instance `REPARAM`)."""

    needs_terms: ClassVar[bool] = False

    def check(self, address: str, dist: Any) -> None:
        if not dist.has_rsample:
            raise EstimatorError(
                f"site {address!r}: REPARAM needs a reparameterisable distribution, got "
                f"{type(dist).__name__}; use REINFORCE, ENUM or MVD"
            )

    def draw(self, key: jax.Array, dist: SiteDist) -> tuple[jax.Array, None]:
        return dist.rsample_and_log_prob(key)[0], None


REPARAM = Reparam()
