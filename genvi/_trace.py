"""Trace: what one run of a generative function chose, how likely it was, and what it returned."""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ._choicemap import ChoiceMap


def sum_arrays(arrays: Iterable[Any], dtype: Any = None) -> jax.Array:
    """The sum of every element of `arrays` (a scalar; 0 when there are none), binding no sum of a
    scalar and no `0 +`: every bound operation is traced, differentiated and transposed again."""
    totals = [jnp.sum(a) if jnp.ndim(a) else jnp.asarray(a) for a in arrays]
    return functools.reduce(operator.add, totals) if totals else jnp.zeros((), dtype)


class DistRecord(eqx.Module):
    """A site's distribution, flattened: `leaves` carry one leading axis per enclosing plate or
    scan step (as the site's value does), `treedef` rebuilds one element's distribution."""

    leaves: list
    treedef: Any = eqx.field(static=True)

    def element(self, *index: int) -> Any:
        """The distribution of one plate element (index the leading axes)."""
        return jax.tree.unflatten(self.treedef, [leaf[index] for leaf in self.leaves])


class Trace(eqx.Module):
    """The record of one execution of a generative function.

    **Fields:**

    - `choices`: the latent random choices, a [`genvi.ChoiceMap`][] keyed by address.
    - `site_log_densities`: each site's log density (latent and observed), keyed by address, with
      one leading axis per enclosing plate (`genvi.vmap`) or scan step, already scaled by the
      plate's subsampling factor.
    - `retval`: the return value of the function.
    - `plates`: for each site address, the names of its enclosing plates, outermost first
      (`None` for an unnamed `genvi.vmap` or a `genvi.scan` step axis).
    - `site_distributions`: each site's distribution as a [`DistRecord`][], keyed by address.
    - `scales`: for each site address, the factor its log density was multiplied by (the product
      of its plates' subsampling factors N/B; 1 without subsampling).
    """

    choices: ChoiceMap
    site_log_densities: ChoiceMap
    retval: Any
    site_distributions: dict = eqx.field(default_factory=dict)
    plates: tuple[tuple[str, tuple[str | None, ...]], ...] = eqx.field(static=True, default=())
    scales: tuple[tuple[str, float], ...] = eqx.field(static=True, default=())

    @property
    def log_density(self) -> jax.Array:
        """The joint log density of the trace: the sum over every site and plate element."""
        return sum_arrays(jax.tree.leaves(self.site_log_densities))

    def __getitem__(self, addr: str) -> Any:
        return self.choices[addr]
