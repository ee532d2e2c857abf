"""SSVI's alternating optimisation as a `genvi.vi.Strategy` that `fit` runs between chunks.

Between the gradient steps on `(mu, rho)` within the support, every `every` steps until
`end_fraction` of training (`T_end`), each sparse layer with `k` active weights

1. removes the `n = floor(k * f_t)` active weights with the lowest criterion score,
   `f_t = alpha / 2 * (1 + cos(pi t / T_end))` (Li et al. 2024, Sec. 4);
2. adds `n` weights from outside its current support with the largest `|dL/dmu|`: the dense
   gradient `dL/dW` at the current point, computed only here, through a zero `probe` on each
   layer's mean weight (an unbiased minibatch estimate from `FitContext.grad`); new weights get
   `mu = 0` and `rho` = the layer's mean `rho`;
3. keeps the optimiser state consistent: the moments of kept weights move with them, those of
   new weights are zero (`optax.tree_utils.tree_map_params` finds every parameter-shaped tree in
   the state, whatever the optimiser).

Every update also writes the step into each [`SparseBNN`][]'s `step` leaf, which drives the KL
warm-up. `alpha = 0` gives a static mask (no swaps), used for the random-mask baseline. Stacked
networks ([`stack`][]: independent copies, e.g. seeds, trained in one `fit`) are updated copy by
copy, vmapped.
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from genvi import ConfigError
from genvi.vi import FitContext, Strategy

from ._criteria import criterion as get_criterion
from ._layers import SparseWeights
from ._net import SparseBNN


def _is_layer(x: Any) -> bool:
    return isinstance(x, SparseWeights)


def layers_of(tree: Any) -> list[SparseWeights]:
    """Every sparse layer in a pytree, in tree order."""
    return [x for x in jax.tree.leaves(tree, is_leaf=_is_layer) if _is_layer(x)]


def _nets_of(tree: Any) -> list[SparseBNN]:
    is_net = lambda x: isinstance(x, SparseBNN)  # noqa: E731
    return [x for x in jax.tree.leaves(tree, is_leaf=is_net) if is_net(x)]


@eqx.filter_jit
def _dense_grads(context: FitContext, params: Any) -> list[jax.Array]:
    """`dL/dW` for every sparse layer's full weight tensor (via zero probes), one minibatch."""
    probed = eqx.tree_at(layers_of, params, [layer.with_probe() for layer in layers_of(params)])
    grads = context.grad(probed)
    return [g.probe for g in layers_of(grads)]


def _keep(x: jax.Array) -> jax.Array:
    return x


def _swap(layer: SparseWeights, n: int, grad: jax.Array, score_fn) -> tuple[SparseWeights, jax.Array, jax.Array]:
    """Remove the `n` lowest-scoring active weights, add the `n` inactive ones of largest |grad|;
    returns the new layer and, per new position, the old position it came from and whether it
    is fresh (for the optimiser moments)."""
    k = layer.active
    order = jnp.argsort(score_fn(layer.mu, layer.sigma), stable=True)
    keep = jnp.sort(order[n:])
    grow = jnp.where(layer.mask().reshape(-1), -jnp.inf, jnp.abs(grad).reshape(-1))
    added = jax.lax.top_k(grow, n)[1].astype(layer.index.dtype)
    new = eqx.tree_at(lambda s: (s.index, s.mu, s.rho), layer, (
        jnp.concatenate([layer.index[keep], added]),
        jnp.concatenate([layer.mu[keep], jnp.zeros(n, layer.mu.dtype)]),
        jnp.concatenate([layer.rho[keep], jnp.full(n, jnp.mean(layer.rho), layer.rho.dtype)])))
    return new, jnp.concatenate([keep, jnp.zeros(n, keep.dtype)]), jnp.arange(k) >= k - n


def _swap_any(layer: SparseWeights, n: int, grad: jax.Array, score_fn):
    """[`_swap`][] for one layer or, vmapped, for a stack of independent copies (`stack`)."""
    if layer.index.ndim == 1:
        new, gather, fresh = _swap(layer, n, grad, score_fn)
    else:
        new, gather, fresh = jax.vmap(lambda l, g: _swap(l, n, g, score_fn))(layer, grad)

    def remap(moment: jax.Array) -> jax.Array:
        return jnp.where(fresh, jnp.zeros((), moment.dtype), jnp.take_along_axis(moment, gather, axis=-1))

    return new, remap


class SSVI(Strategy):
    """The SSVI remove-and-add schedule (see the module docstring).

    **Arguments:**

    - `total_steps`: `fit`'s `num_steps` (T); updates stop at `end_fraction * T`.
    - `every`: Δ, the steps between updates.
    - `alpha`: the initial fraction of each layer's support swapped, in [0, 1].
    - `criterion`: removal score, one of `"abs_mu"`, `"snr"`, `"abs_mean"`, `"snr_abs"`.
    - `end_fraction`: the fraction of training after which the support is frozen.
    """

    total_steps: int = eqx.field(static=True, kw_only=True)
    every: int = eqx.field(static=True, default=100)
    alpha: float = eqx.field(static=True, default=0.3)
    criterion: str = eqx.field(static=True, default="snr_abs")
    end_fraction: float = eqx.field(static=True, default=0.75)

    def __check_init__(self):
        if not isinstance(self.total_steps, int) or self.total_steps < 1:
            raise ConfigError(f"SSVI(total_steps={self.total_steps!r}): must be a positive integer (fit's num_steps)")
        if not isinstance(self.every, int) or self.every < 1:
            raise ConfigError(f"SSVI(every={self.every!r}): must be a positive integer (steps between updates)")
        if not isinstance(self.alpha, (int, float)) or not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"SSVI(alpha={self.alpha!r}): the swapped fraction must lie in [0, 1]")
        if not isinstance(self.end_fraction, (int, float)) or not 0.0 < self.end_fraction <= 1.0:
            raise ConfigError(f"SSVI(end_fraction={self.end_fraction!r}): must lie in (0, 1]")
        get_criterion(self.criterion)

    def fraction(self, step: int) -> float:
        """`f_t = alpha/2 (1 + cos(pi t / T_end))` before `T_end`, 0 after."""
        t_end = self.end_fraction * self.total_steps
        return 0.0 if step >= t_end else 0.5 * self.alpha * (1.0 + math.cos(math.pi * step / t_end))

    def counts(self, step: int, params: Any) -> list[int]:
        """How many weights each sparse layer swaps at `step` (bounded by its inactive pool)."""
        f = self.fraction(step)
        return [min(math.floor(layer.active * f), layer.size - layer.active) for layer in layers_of(params)]

    def update(self, step: int, params: Any, opt_state: Any, context: FitContext) -> tuple[Any, Any]:
        nets = _nets_of(params)
        if nets:
            params = eqx.tree_at(lambda t: [m.step for m in _nets_of(t)], params,
                                 [jnp.full(m.step.shape, step, m.step.dtype) for m in nets])
        counts = self.counts(step, params)
        if not any(counts):
            return params, opt_state
        grads = _dense_grads(context, params)
        score_fn = get_criterion(self.criterion)
        layers, remaps = [], []
        for layer, n, g in zip(layers_of(params), counts, grads):
            new, remap = _swap_any(layer, n, g, score_fn) if n else (layer, _keep)
            layers.append(new)
            remaps.append(remap)
        fns = jax.tree.map(lambda _: _keep, eqx.filter(params, eqx.is_inexact_array))
        fns = eqx.tree_at(lambda t: [x for l in layers_of(t) for x in (l.mu, l.rho)], fns,
                          [r for r in remaps for _ in (0, 1)])
        opt_state = optax.tree_utils.tree_map_params(context.optimizer, lambda m, fn: fn(m), opt_state, fns)
        return eqx.tree_at(layers_of, params, layers), opt_state
