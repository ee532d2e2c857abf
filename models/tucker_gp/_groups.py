"""Sufficient statistics of the entries, computed once per distinct combination of coordinates.

Every per-entry quantity the EP messages and the core update need depends on the entry only
through its grid positions. For mode k, `a_n = W_(k) ⊗_(j≠k) u^j(i_j(n))` depends only on the
positions along the *other* modes, so its moments are computed once per distinct combination of
those positions (an `EntryGroups` row) and summed into mode k's coordinates. On
US-TEMP's 44,755 entries the combinations number 10,076, 2,500 and 88 for the three modes; the
core's `Σ_n ⊗_k M^k` likewise becomes a sum over the last mode's 88 combinations of
`(⊗_(k<K) M^k) ⊗ (Σ_(n in the combination) M^K_n)`. Exact (sums regrouped); the savings are the
data's structure, and with no repeated combinations it costs what the per-entry form does.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._moments import kron_first, kron_second_sum, mode_moments


class EntryGroups(NamedTuple):
    """Per mode k: `combo[k]` (G_k, K − 1) distinct positions along the other modes (in mode
    order) and `member[k]` (N,) the combination of each entry."""

    combo: tuple[jax.Array, ...]
    member: tuple[jax.Array, ...]


def entry_groups(index: np.ndarray, multiple: int = 512) -> EntryGroups:
    """Group the entries' (N, K) grid positions by their positions along all modes but one.

    The combinations are padded with unused rows to a multiple of `multiple`, so data sets of
    similar structure (the folds of one data set) share shapes and compiled programs.
    """
    index = np.asarray(index)
    combos, members = [], []
    for k in range(index.shape[1]):
        rest = np.delete(index, k, axis=1)
        if rest.shape[1] == 0:  # one mode: a single (empty) combination
            combo, member = np.zeros((1, 0), np.int32), np.zeros(len(index), np.int32)
        else:
            combo, member = np.unique(rest, axis=0, return_inverse=True)
            combo = np.pad(combo, ((0, (-len(combo)) % multiple), (0, 0)))  # never a member's row
        combos.append(jnp.asarray(combo, jnp.int32))
        members.append(jnp.asarray(member.reshape(-1), jnp.int32))
    return EntryGroups(tuple(combos), tuple(members))


def _at_combos(values: list, combo: jax.Array, k: int) -> list:
    """The other modes' per-coordinate `values` at each combination; a placeholder at mode k."""
    others = [j for j in range(len(values)) if j != k]
    out = [None] * len(values)
    for pos, j in enumerate(others):
        out[j] = values[j][combo[:, pos]]
    out[k] = jnp.zeros((combo.shape[0],) + values[k].shape[1:], values[k].dtype)  # unused by mode_moments
    return out


def mode_stats(core, means: list, seconds: list, groups: EntryGroups, index: jax.Array, y: jax.Array, k: int,
               weight: jax.Array | None = None):
    """`Σ_n w_n E[a aᵀ]` (n_k, R, R) and `Σ_n w_n y_n E[a]` (n_k, R) per coordinate of mode k.

    `means[j]` (n_j, R_j), `seconds[j]` (n_j, R_j, R_j): each mode's function moments on its grid;
    `core` the core's mean (None for CP); `weight` (N,) optional per-entry weights.
    """
    combo, member = groups.combo[k], groups.member[k]
    ea, eaa = jax.vmap(lambda m, s: mode_moments(core, m, s, k))(_at_combos(means, combo, k),
                                                                 _at_combos(seconds, combo, k))
    n = means[k].shape[0]
    w = jnp.ones_like(y) if weight is None else weight
    lam = jax.ops.segment_sum(w[:, None, None] * eaa[member], index[:, k], n)  # O(N R²): gathers only
    eta = jax.ops.segment_sum((w * y)[:, None] * ea[member], index[:, k], n)
    return lam, eta


def core_stats(means: list, seconds: list, groups: EntryGroups, index: jax.Array, y: jax.Array):
    """`Σ_n ⊗_k M^k_n` (P, P) and `Σ_n y_n ⊗_k m^k_n` (P,), grouped over the last mode."""
    L = len(means) - 1
    G = groups.combo[L].shape[0]
    at = index[:, L]
    last_second = jax.ops.segment_sum(seconds[L][at], groups.member[L], G)  # Σ over each combination
    last_first = jax.ops.segment_sum(y[:, None] * means[L][at], groups.member[L], G)
    combo = groups.combo[L]
    sec = [seconds[j][combo[:, j]] for j in range(L)] + [last_second]
    first = [means[j][combo[:, j]] for j in range(L)] + [last_first]
    return kron_second_sum(sec), jnp.sum(kron_first(first), axis=0)


def core_fit(core: jax.Array, means: list, groups: EntryGroups, index: jax.Array) -> jax.Array:
    """`f_n = vec(W)ᵀ ⊗_k m^k_n` per entry (N,), the other modes contracted once per combination."""
    L = len(means) - 1
    combo = groups.combo[L]
    z = kron_first([means[j][combo[:, j]] for j in range(L)])  # (G, P / R_L)
    g = z @ core.reshape(-1, core.shape[-1])  # (G, R_L)
    return jnp.sum(g[groups.member[L]] * means[L][index[:, L]], axis=-1)
