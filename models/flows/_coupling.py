"""Coupling layers: affine (RealNVP, Dinh et al. 2017) and rational-quadratic spline (neural
spline flows, Durkan et al. 2019).

The first `split` coordinates pass through unchanged and, with the context, feed an equinox MLP
(the conditioner) whose output parameterises an elementwise bijection of the other
coordinates; both directions cost one conditioner pass. The conditioner's last layer starts at
zero, so each layer starts as the identity (FlowJAX's convention for splines too).

The spline mathematics (bins, knots, derivatives, the forward map, its closed-form inverse and
their log-derivatives; identity outside `[-interval, interval]`) is FlowJAX's
`RationalQuadraticSpline`: we build one FlowJAX spline per transformed coordinate from the
conditioner's output with FlowJAX's own ravelled-parameter constructor, so its parameter
constraints (softmax bin widths with a minimum, softplus derivatives) are FlowJAX's too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from genvi import ConfigError

from ._bijection import Bijection, check_cond_dim, check_dim


def _conditioner(in_size: int, out_size: int, hidden: int, depth: int, activation: Callable,
                 key: jax.Array) -> eqx.nn.MLP:
    mlp = eqx.nn.MLP(in_size, out_size, hidden, depth, activation=activation, key=key)
    last = mlp.layers[-1]
    return eqx.tree_at(lambda m: (m.layers[-1].weight, m.layers[-1].bias), mlp,
                       (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))


class _Coupling(Bijection):
    conditioner: eqx.nn.MLP
    dim: int = eqx.field(static=True)
    cond_dim: int | None = eqx.field(static=True)
    split: int = eqx.field(static=True)

    def _setup(self, dim, cond_dim, split, per_coordinate, hidden, depth, activation, key):
        name = type(self).__name__
        check_dim(name, dim, minimum=2)
        check_cond_dim(name, cond_dim)
        split = dim // 2 if split is None else split
        if not 0 < split < dim:
            raise ConfigError(f"{name}: split must be in 1..{dim - 1} (coordinates kept as they are), got {split}")
        self.dim, self.cond_dim, self.split = dim, cond_dim, split
        self.conditioner = _conditioner(split + (cond_dim or 0), per_coordinate * (dim - split), hidden, depth,
                                        activation, key)

    def _params(self, kept, context):
        x = kept if context is None else jnp.concatenate([kept, context])
        return self.conditioner(x).reshape(self.dim - self.split, -1)

    @staticmethod
    def _elementwise(params, x, inverse):
        raise NotImplementedError

    def _apply(self, x, context, inverse):
        self._check(x, context)
        kept, moved = x[: self.split], x[self.split:]
        out, log_det = self._elementwise(self._params(kept, context), moved, inverse)
        return jnp.concatenate([kept, out]), log_det

    def forward_and_log_det(self, z, context=None):
        return self._apply(z, context, inverse=False)

    def inverse_and_log_det(self, y, context=None):
        return self._apply(y, context, inverse=True)


class AffineCoupling(_Coupling):
    """RealNVP coupling: `y_b = z_b exp(s(z_a)) + t(z_a)`, log-scales soft-clamped to
    `(-clamp, clamp)`.

    **Arguments:** `dim` (>= 2), `key` (keyword-only), `cond_dim`, `split` (default `dim // 2`),
    `hidden`, `depth`, `activation` (the conditioner MLP), `clamp`.
    """

    clamp: float = eqx.field(static=True)

    def __init__(self, dim: int, *, key: jax.Array, cond_dim: int | None = None, split: int | None = None,
                 hidden: int = 64, depth: int = 2, activation: Callable = jnp.tanh, clamp: float = 5.0):
        self.clamp = float(clamp)
        self._setup(dim, cond_dim, split, 2, hidden, depth, activation, key)

    def _elementwise(self, params, x, inverse):
        t, s = params[:, 0], self.clamp * jnp.tanh(params[:, 1] / self.clamp)
        if inverse:
            return (x - t) * jnp.exp(-s), -jnp.sum(s)
        return x * jnp.exp(s) + t, jnp.sum(s)


class SplineCoupling(_Coupling):
    """Rational-quadratic spline coupling (FlowJAX's spline, our conditioner).

    **Arguments:** `dim` (>= 2), `key` (keyword-only), `knots` (inner knots), `interval` (the
    spline acts on `[-interval, interval]`, identity outside), `cond_dim`, `split`, `hidden`,
    `depth`, `activation`.
    """

    knots: int = eqx.field(static=True)
    interval: float = eqx.field(static=True)

    def __init__(self, dim: int, *, key: jax.Array, knots: int = 8, interval: float = 4.0,
                 cond_dim: int | None = None, split: int | None = None, hidden: int = 64, depth: int = 2,
                 activation: Callable = jnp.tanh):
        if not isinstance(knots, int) or knots < 2:
            raise ConfigError(f"SplineCoupling: knots must be an integer >= 2, got {knots!r}")
        if not interval > 0:
            raise ConfigError(f"SplineCoupling: interval must be > 0, got {interval!r}")
        self.knots, self.interval = knots, float(interval)
        _, n = _spline_constructor(knots, self.interval)
        self._setup(dim, cond_dim, split, n, hidden, depth, activation, key)

    def _elementwise(self, params, x, inverse):
        import paramax

        make, _ = _spline_constructor(self.knots, self.interval)

        def one(p, xi):
            spline = paramax.unwrap(make(p))
            fn = spline.inverse_and_log_det if inverse else spline.transform_and_log_det
            return fn(xi)

        out, log_dets = jax.vmap(one)(params, x)
        return out, jnp.sum(log_dets)


@functools.lru_cache(maxsize=None)
def _spline_constructor(knots: int, interval: float) -> tuple[Callable[[jax.Array], Any], int]:
    """FlowJAX's constructor `raw vector -> RationalQuadraticSpline` (zero gives its init)."""
    try:
        from flowjax.bijections import RationalQuadraticSpline
        from flowjax.utils import get_ravelled_pytree_constructor
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("SplineCoupling uses FlowJAX's spline: pip install 'genvi[flows]'") from err
    spline = RationalQuadraticSpline(knots=knots, interval=interval)
    return get_ravelled_pytree_constructor(spline, filter_spec=eqx.is_inexact_array)
