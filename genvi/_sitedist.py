"""SiteDist: the distribution of a (possibly vmapped) sample site, as estimators see it.

A site inside `genvi.vmap` holds one NumPyro distribution per mapped element. Rather than
rebuilding a batched distribution (NumPyro keeps batch shapes as static metadata, so stacked
leaves would not update them), every operation is mapped over the vmap levels with `jax.vmap`.
The *element shape* of a site is `level sizes + batch_shape`: one independent element per entry,
which is what `log_prob` returns and what estimators align with the program's terms.

Draws are the exception: a mapped draw needs one key per element, and those threefry loops were
among the largest ops of a REINFORCE step (benchmarks/RESULTS.md, W4). So NumPyro's own distributions are
rebuilt as one batched distribution (`promote_batch_shape`, what NumPyro does for its own
vmapped plates) and draw from a single key; other classes keep the mapped draw.

An estimator's draw comes with its log density (`rsample_and_log_prob`, `sample_and_log_prob`),
and `log_prob` of that very value returns it again: the program's `log q` and the estimator's
score then are one computation, which XLA would not merge on its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpyro.distributions as nd
from numpyro.distributions.batch_util import promote_batch_shape

from ._draw import rsample_and_log_prob
from ._primitive import SiteSpec


def placeholder(spec: SiteSpec) -> nd.Distribution:
    """A distribution object with the site's type and shapes but no values, for static checks."""
    return jax.tree.unflatten(spec.treedef, [None] * spec.n_leaves)


class SiteDist:
    """The distribution of one site with `levels` of vmapped independent copies."""

    def __init__(self, spec: SiteSpec, leaves: list[Any]):
        self.spec = spec
        self.leaves = list(leaves)
        self.levels = spec.levels
        self.level_shape = tuple(size for size, _ in spec.levels)
        static = placeholder(spec)
        self.batch_shape = tuple(static.batch_shape)
        self.event_shape = tuple(static.event_shape)
        self.element_shape = self.level_shape + self.batch_shape
        self.shape = self.element_shape + self.event_shape
        self.type = type(static)
        self._drawn: list[tuple[jax.Array, jax.Array]] = []  # (draw, its log density)

    @property
    def size(self) -> int:
        """The number of independent elements."""
        return math.prod(self.element_shape)

    def map(self, fn: Callable[..., Any], *arrays: Any) -> Any:
        """Apply `fn(dist, *arrays)` per mapped element; `arrays` carry the level axes in front."""
        return _map(self.spec, self.levels, self.leaves, arrays, fn)

    def element0(self) -> nd.Distribution:
        """The distribution of the first mapped element (for supports and static attributes)."""
        leaves = list(self.leaves)
        for _, flags in self.levels:
            leaves = [leaf[0] if flag else leaf for leaf, flag in zip(leaves, flags)]
        return jax.tree.unflatten(self.spec.treedef, leaves)

    def _keys(self, key: jax.Array) -> jax.Array:
        if not self.levels:
            return key
        keys = jax.random.split(key, math.prod(self.level_shape))
        return keys.reshape(self.level_shape + keys.shape[1:])

    def batched(self) -> nd.Distribution | None:
        """One NumPyro distribution of batch shape `element_shape`, or None where that cannot be
        built safely (no levels, or a class from outside NumPyro)."""
        if not self.levels or not self.type.__module__.startswith("numpyro.distributions"):
            return None
        try:
            batched = promote_batch_shape(_map(self.spec, self.levels, self.leaves, (), lambda d: d))
        except NotImplementedError:
            return None
        if tuple(batched.batch_shape) != self.element_shape or tuple(batched.event_shape) != self.event_shape:
            return None
        return batched

    def sample(self, key: jax.Array) -> jax.Array:
        batched = self.batched()
        if batched is not None:
            return batched.sample(key)
        return self.map(lambda d, k: d.sample(k), self._keys(key))

    def rsample_and_log_prob(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """A reparameterised draw and its element-shaped log density, computed together
        (from the draw's noise where `genvi._draw` knows how)."""
        batched = self.batched()
        if batched is not None:
            return self._remember(*rsample_and_log_prob(batched, key))
        return self._remember(*self.map(rsample_and_log_prob, self._keys(key)))

    def sample_and_log_prob(self, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """A draw with its gradient stopped (for score-function estimators) and its log density,
        whose gradient is the score."""
        x = jax.lax.stop_gradient(self.sample(key))
        return self._remember(x, self.log_prob(x))

    def _remember(self, x: jax.Array, log_p: jax.Array) -> tuple[jax.Array, jax.Array]:
        self._drawn.append((x, log_p))
        return x, log_p

    def log_prob(self, x: jax.Array) -> jax.Array:
        """Element-shaped log density of `x` (shape `self.shape`); for this object's own draw,
        the density computed with it."""
        for drawn, log_p in self._drawn:
            if x is drawn:
                return log_p
        return self.map(lambda d, v: d.log_prob(v), x)

    def support(self) -> jax.Array:
        """All values of a finite support, each broadcast to the site's shape: `[K, *shape]`."""
        values = self.element0().enumerate_support(expand=False)
        return jax.vmap(lambda v: jnp.broadcast_to(v, self.shape))(values)


def _map(spec, levels, leaves, arrays, fn):
    if not levels:
        return fn(jax.tree.unflatten(spec.treedef, leaves), *arrays)
    (size, flags), rest = levels[0], levels[1:]
    axes = [0 if flag else None for flag in flags]
    return jax.vmap(
        lambda lv, *ar: _map(spec, rest, lv, ar, fn), in_axes=(axes, *([0] * len(arrays))), axis_size=size
    )(leaves, *arrays)
