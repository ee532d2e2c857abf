"""`Stack`: `n` layers of one structure applied by `lax.scan` over their stacked parameters.

A flow of K identical-structure layers (K = 32 planar layers, say) written as a Python list
traces and compiles K copies of the layer; stacked, it compiles one body, whatever K is, and
runs the same arithmetic. Use `Stack.of([layer, ...])` or `stack(make_layer, keys)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp

from genvi import ConfigError

from ._bijection import Bijection


class Stack(Bijection):
    """Layers `layers[0], ..., layers[n-1]` (in that order) of one structure, scanned."""

    stacked: Bijection
    n: int = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    cond_dim: int | None = eqx.field(static=True)

    def __init__(self, layers: Sequence[Bijection]):
        layers = list(layers)
        if not layers:
            raise ConfigError("Stack: needs at least one layer")
        structures = {jax.tree.structure(eqx.partition(layer, eqx.is_array)[1]) for layer in layers}
        shapes = {tuple(a.shape for a in jax.tree.leaves(eqx.filter(layer, eqx.is_array))) for layer in layers}
        if len(structures) > 1 or len(shapes) > 1:
            raise ConfigError("Stack: the layers must share one structure (same class, sizes and options); "
                              "put different layers in the Flow's list instead")
        arrays = [eqx.filter(layer, eqx.is_array) for layer in layers]
        static = eqx.filter(layers[0], eqx.is_array, inverse=True)
        self.stacked = eqx.combine(jax.tree.map(lambda *xs: jnp.stack(xs), *arrays), static)
        self.n, self.dim, self.cond_dim = len(layers), layers[0].dim, layers[0].cond_dim

    def _scan(self, x, context, inverse: bool):
        arrays, static = eqx.partition(self.stacked, eqx.is_array)

        def body(carry, layer_arrays):
            layer = eqx.combine(layer_arrays, static)
            fn = layer.inverse_and_log_det if inverse else layer.forward_and_log_det
            out, log_det = fn(carry, context)
            return out, log_det

        out, log_dets = jax.lax.scan(body, x, arrays, reverse=inverse)
        return out, jnp.sum(log_dets)

    def forward_and_log_det(self, z, context=None):
        self._check(z, context)
        return self._scan(z, context, inverse=False)

    def inverse_and_log_det(self, y, context=None):
        self._check(y, context)
        return self._scan(y, context, inverse=True)


def stack(make: Callable[[jax.Array], Bijection], keys: jax.Array) -> Stack:
    """`Stack([make(k) for k in keys])`: e.g. `stack(lambda k: Planar(2, key=k), jax.random.split(key, 32))`."""
    return Stack([make(k) for k in keys])
