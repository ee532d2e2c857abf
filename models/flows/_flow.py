"""`Flow(base, layers)`: a composition of bijections, and `FlowDistribution`, the NumPyro
distribution a flow defines, for use at any genvi site.

`flow(context, base=...)` returns a `FlowDistribution`: `sample("z", flow(x))` draws with
REPARAM (`rsample` pushes base noise through the layers) and scores values with the exact
density `log q(y) = log base(f^{-1}(y)) + log|det J_{f^{-1}}(y)|`, through each layer's exact
inverse. The distribution is a pytree whose leaves are the flow's arrays (and the context's and
base's), so the flow's parameters are ordinary guide parameters and `genvi.vmap` plates map the
context (amortised guides) like any distribution parameter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as nd
from numpyro.distributions import constraints

from genvi import ConfigError, ShapeError

from ._bijection import Bijection


class Flow(eqx.Module):
    """A normalizing flow: base distribution pushed through `layers` (applied in order).

    **Arguments:**

    - `base`: an `int` `d` (the fixed standard normal `N(0, I_d)`) or a NumPyro distribution with
      event shape `(d,)` and no batch shape, held fixed (its arrays are not trained). For a learned
      or amortised base, pass `base=` when making the distribution: `flow(context, base=...)`.
    - `layers`: bijections of dimension `d` (`Planar`, `Radial`, `IAF`, `MAF`, `AffineCoupling`,
      `SplineCoupling`, `Permute`, ...); conditional layers must agree on `cond_dim`.

    `flow(context=None, base=None)` gives the [`FlowDistribution`][].
    """

    layers: tuple[Bijection, ...]
    base: nd.Distribution | None
    dim: int = eqx.field(static=True)
    cond_dim: int | None = eqx.field(static=True)

    def __init__(self, base: int | nd.Distribution, layers: Sequence[Bijection]):
        if isinstance(base, bool) or not isinstance(base, (int, nd.Distribution)):
            raise ConfigError(f"Flow: base must be a dimension (int) or a numpyro distribution, got {type(base).__name__}")
        dim = base if isinstance(base, int) else _event_dim(base, "Flow: base")
        layers = tuple(layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Bijection):
                raise ConfigError(f"Flow: layer {i} is a {type(layer).__name__}, not a genvi.models.flows Bijection")
            if layer.dim != dim:
                raise ShapeError(f"Flow: layer {i} ({type(layer).__name__}) has dim {layer.dim} but the base has "
                                 f"dimension {dim}; build every layer with dim={dim}")
        conds = sorted({layer.cond_dim for layer in layers if layer.cond_dim is not None})
        if len(conds) > 1:
            raise ShapeError(f"Flow: conditional layers disagree on cond_dim: {conds}; one context feeds them all")
        self.layers, self.dim = layers, dim
        self.base = None if isinstance(base, int) else base
        self.cond_dim = conds[0] if conds else None

    def __call__(self, context: jax.Array | None = None, *, base: nd.Distribution | None = None) -> "FlowDistribution":
        return FlowDistribution(self, context, base)

    def base_distribution(self) -> nd.Distribution:
        """The fixed base (gradients stopped), or `N(0, I)`."""
        if self.base is None:
            return nd.Normal(jnp.zeros(self.dim), 1.0).to_event(1)
        return jax.tree.map(jax.lax.stop_gradient, self.base)

    def forward_and_log_det(self, z: jax.Array, context: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Push one vector through every layer: `(f(z), log|det J_f(z)|)`."""
        total = jnp.zeros((), z.dtype)
        for layer in self.layers:
            z, log_det = layer.forward_and_log_det(z, context)
            total = total + log_det
        return z, total

    def inverse_and_log_det(self, y: jax.Array, context: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Pull one vector back through every layer: `(f^{-1}(y), log|det J_{f^{-1}}(y)|)`."""
        total = jnp.zeros((), y.dtype)
        for layer in reversed(self.layers):
            y, log_det = layer.inverse_and_log_det(y, context)
            total = total + log_det
        return y, total


class FlowDistribution(nd.Distribution):
    """The distribution of `f(z0)`, `z0 ~ base`, for a [`Flow`][] `f` (optionally given a context).

    `batch_shape` is the broadcast of the base's batch shape and the context's leading axes;
    `event_shape` is `(dim,)`. `rsample`/`sample` draw (reparameterised), `log_prob` scores any
    value exactly through the inverse, `sample_and_log_prob` draws and scores in one forward pass.
    """

    arg_constraints: dict = {}
    support = constraints.real_vector
    pytree_data_fields = ("_arrays",)
    pytree_aux_fields = ("_skeleton",)

    def __init__(self, flow: Flow, context: jax.Array | None = None, base: nd.Distribution | None = None):
        if not isinstance(flow, Flow):
            raise ConfigError(f"FlowDistribution: expected a Flow, got {type(flow).__name__}")
        base = flow.base_distribution() if base is None else base
        if _event_dim(base, "FlowDistribution: base") != flow.dim:
            raise ShapeError(f"FlowDistribution: the base has event shape {tuple(base.event_shape)} but the flow's "
                             f"layers have dimension {flow.dim}")
        if not base.has_rsample:
            raise ConfigError(f"FlowDistribution: the base {type(base).__name__} is not reparameterisable")
        batch = tuple(base.batch_shape)
        if flow.cond_dim is not None:
            if context is None or jnp.ndim(context) < 1 or jnp.shape(context)[-1] != flow.cond_dim:
                raise ShapeError(f"FlowDistribution: the flow's layers need a context of shape (..., {flow.cond_dim}), "
                                 f"got {None if context is None else jnp.shape(context)}")
            context = jnp.asarray(context)
            batch = jnp.broadcast_shapes(batch, context.shape[:-1])
        elif context is not None:
            raise ShapeError("FlowDistribution: a context was given but no layer is conditional (cond_dim=None); "
                             "build the conditional layers with cond_dim=...")
        leaves, treedef = jax.tree.flatten((flow, context, base))
        self._arrays = tuple(leaf for leaf in leaves if eqx.is_array(leaf))
        self._skeleton = (treedef, tuple(None if eqx.is_array(leaf) else leaf for leaf in leaves))
        super().__init__(batch_shape=tuple(batch), event_shape=(flow.dim,))

    # --- the parts ------------------------------------------------------------------------------
    def parts(self) -> tuple[Flow, jax.Array | None, nd.Distribution]:
        """`(flow, context, base)`, rebuilt from this pytree's leaves."""
        treedef, statics = self._skeleton
        arrays = iter(self._arrays)
        return jax.tree.unflatten(treedef, [next(arrays) if s is None else s for s in statics])

    @property
    def has_rsample(self) -> bool:
        return True

    def _rows(self, fn, x: jax.Array, context: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        """Apply `fn(vector, context) -> (vector, scalar)` over all leading axes of `x`."""
        lead = x.shape[:-1]
        if context is not None:
            lead = jnp.broadcast_shapes(lead, context.shape[:-1])
            context = jnp.broadcast_to(context, lead + context.shape[-1:]).reshape(-1, context.shape[-1])
        flat = jnp.broadcast_to(x, lead + x.shape[-1:]).reshape(-1, x.shape[-1])
        out, log_det = jax.vmap(fn, in_axes=(0, None if context is None else 0))(flat, context)
        return out.reshape(lead + x.shape[-1:]), log_det.reshape(lead)

    def sample_and_log_prob(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> tuple[jax.Array, jax.Array]:
        """Draw (reparameterised) and score the draws in one forward pass (no inverse)."""
        flow, context, base = self.parts()
        z0 = base.rsample(key, tuple(sample_shape) + tuple(self.batch_shape))
        y, log_det = self._rows(flow.forward_and_log_det, z0, context)
        return y, base.log_prob(z0) - log_det

    def rsample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        return self.sample_and_log_prob(key, sample_shape)[0]

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        return self.rsample(key, sample_shape)

    def log_prob(self, value: jax.Array) -> jax.Array:
        flow, context, base = self.parts()
        value = jnp.asarray(value)
        if value.ndim < 1 or value.shape[-1] != flow.dim:
            raise ShapeError(f"FlowDistribution.log_prob: values must have shape (..., {flow.dim}), got {value.shape}")
        z0, log_det = self._rows(flow.inverse_and_log_det, value, context)
        return base.log_prob(z0) + log_det


def _event_dim(dist: Any, where: str) -> int:
    if not isinstance(dist, nd.Distribution) or len(dist.event_shape) != 1:
        shape = getattr(dist, "event_shape", None)
        raise ShapeError(f"{where}: needs a distribution over vectors (event shape (d,)), got event shape {shape}; "
                         "use .to_event(1) on a batch of scalars")
    if not isinstance(dist, FlowDistribution) and len(dist.batch_shape) and where.startswith("Flow:"):
        raise ShapeError(f"{where}: a fixed base must have no batch shape, got {tuple(dist.batch_shape)}")
    return int(math.prod(dist.event_shape))
