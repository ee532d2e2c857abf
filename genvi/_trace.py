"""Trace: what one run of a generative function chose, how likely it was, and what it returned."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ._choicemap import ChoiceMap


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
    """

    choices: ChoiceMap
    site_log_densities: ChoiceMap
    retval: Any
    plates: tuple[tuple[str, tuple[str | None, ...]], ...] = eqx.field(static=True, default=())

    @property
    def log_density(self) -> jax.Array:
        """The joint log density of the trace: the sum over every site and plate element."""
        leaves = jax.tree.leaves(self.site_log_densities)
        if not leaves:
            return jnp.zeros(())
        return sum(jnp.sum(leaf) for leaf in leaves)

    def __getitem__(self, addr: str) -> Any:
        return self.choices[addr]
