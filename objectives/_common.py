"""Small helpers shared by the objective programs."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax

from genvi import EstimatorError


def stop(tree: Any) -> Any:
    """`stop_gradient` on every array leaf of `tree` (equinox modules included)."""
    return jax.tree.map(lambda x: jax.lax.stop_gradient(x) if eqx.is_array(x) else x, tree)


def require(name: str, allowed: tuple, default: Any, why: str):
    """An estimator policy: sites default to `default`; choices outside `allowed` are refused."""

    def policy(address: str, dist: Any, chosen: Any) -> Any:
        est = default if chosen is None else chosen
        if not isinstance(est, allowed):
            raise EstimatorError(
                f"site {address!r}: {name} {why}, but the site asks for {type(est).__name__}; "
                "drop the override or choose another objective"
            )
        est.check(address, dist)
        return est

    return policy
