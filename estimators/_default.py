"""The estimator a site gets when nobody chose one."""

from __future__ import annotations

from typing import Any

from genvi._site import Estimator

from ._reinforce import REINFORCE
from ._reparam import REPARAM


def default_estimator(dist: Any) -> Estimator:
    """REPARAM where the distribution is reparameterisable, REINFORCE (no baseline) otherwise."""
    return REPARAM if dist.has_rsample else REINFORCE
