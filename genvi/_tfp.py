"""A TFP-on-JAX distribution used at a genvi site, through a thin NumPyro-compatible adapter.

TFP is optional (`pip install genvi[tfp]`, pinned to a tfp-nightly that imports with current JAX).
`sample(addr, tfp_distribution)` wraps it automatically.
"""

from __future__ import annotations

from typing import Any

import jax
import numpyro.distributions as nd
from numpyro.distributions import constraints


def is_tfp_distribution(obj: Any) -> bool:
    """Whether `obj` is a TFP distribution (checked without importing TFP)."""
    return any(c.__module__.startswith("tensorflow_probability") and c.__name__ == "Distribution"
               for c in type(obj).__mro__)


class TFPDistribution(nd.Distribution):
    """A NumPyro `Distribution` that delegates to a TFP-on-JAX distribution.

    The TFP distribution is stored flattened (its leaves as this pytree's children), so genvi can
    vmap it like any NumPyro distribution; reparameterisation follows TFP's
    `reparameterization_type`.
    """

    pytree_data_fields = ("_leaves",)
    pytree_aux_fields = ("_treedef", "_reparameterized")
    support = constraints.real

    def __init__(self, distribution: Any):
        import tensorflow_probability.substrates.jax as tfp

        self._leaves, self._treedef = jax.tree.flatten(distribution)
        self._reparameterized = distribution.reparameterization_type == tfp.distributions.FULLY_REPARAMETERIZED
        super().__init__(tuple(distribution.batch_shape), tuple(distribution.event_shape))

    @property
    def tfp(self) -> Any:
        """The wrapped TFP distribution."""
        return jax.tree.unflatten(self._treedef, self._leaves)

    @property
    def has_rsample(self) -> bool:
        return self._reparameterized

    def sample(self, key, sample_shape=()):
        return self.tfp.sample(sample_shape, seed=key)

    def rsample(self, key, sample_shape=()):
        return self.sample(key, sample_shape)

    def log_prob(self, value):
        return self.tfp.log_prob(value)

    @property
    def mean(self):
        return self.tfp.mean()

    @property
    def variance(self):
        return self.tfp.variance()


def tfp_distribution(distribution: Any) -> TFPDistribution:
    """Wrap a TFP-on-JAX distribution for use at a genvi site."""
    return TFPDistribution(distribution)
