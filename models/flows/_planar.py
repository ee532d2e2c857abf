"""Planar flows (Rezende & Mohamed 2015, section 4.1 and appendix A.1).

`f(z) = z + u_hat h(w^T z + b)` with `log|det J| = log|1 + (w^T u_hat) h'(w^T z + b)|`.

Invertibility: for `h = tanh`, `f` is invertible iff `w^T u >= -1`. The paper's
reparameterisation `u_hat = u + (m(w^T u) - w^T u) w / |w|^2`, `m(x) = -1 + softplus(x)`, makes
`w^T u_hat = m(w^T u) > -1` for every raw `u` (`constrain=True`, the default). We use
`w^T u_hat = m(w^T u)` directly in the log-determinant and in the inverse, so rounding never
takes the slope `1 + m h'` below zero.

The inverse (not in the paper; FlowJAX only has one for leaky-ReLU): with `alpha = w^T z`,
`w^T y = alpha + m h(alpha + b)`, a scalar equation whose left side is non-decreasing in
`alpha`, with the root bracketed by `[w^T y - |m|, w^T y + |m|]` (as `|tanh| <= 1`). We solve it
with safeguarded Newton steps (bisection whenever Newton leaves the bracket), then take one more
Newton step *with* gradients from the stopped root: its value is the root and its derivative
is the implicit-function derivative `-dg / g'`, so `log_prob` is exactly differentiable in the
value and in the parameters without differentiating the solver. For leaky-ReLU the inverse is
closed form per branch (the sign of `w^T y + b` picks the branch).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from genvi import ConfigError

from ._bijection import Bijection, check_cond_dim, check_dim

_ACTIVATIONS = ("tanh", "leaky_relu")


class Planar(Bijection):
    """One planar layer. Parameters are learned directly, or (with `cond_dim`) produced from a
    context vector by an equinox MLP (amortised, as in the paper's DLGM experiments).

    **Arguments:**

    - `dim`: the dimension of `z`.
    - `key`: initialisation key (keyword-only).
    - `cond_dim`: the context dimension for an amortised layer (`None`: unconditional).
    - `activation`: `"tanh"` (the paper's) or `"leaky_relu"` (closed-form inverse).
    - `negative_slope`: leaky-ReLU slope for negative inputs; must be in `(0, 1]`.
    - `constrain`: use the paper's `u_hat` (always invertible). `False` uses `u` as given, which
      is invertible only while `w^T u >= -1` (tanh); see `Planar.from_params`.
    - `init_scale`: standard deviation of the initial `w`, `u` (and of the conditioner's last
      layer); `hidden`, `depth`: the conditioner MLP.
    """

    params: jax.Array | None
    conditioner: eqx.nn.MLP | None
    dim: int = eqx.field(static=True)
    cond_dim: int | None = eqx.field(static=True)
    activation: str = eqx.field(static=True)
    negative_slope: float = eqx.field(static=True)
    constrain: bool = eqx.field(static=True)

    def __init__(self, dim: int, *, key: jax.Array, cond_dim: int | None = None, activation: str = "tanh",
                 negative_slope: float = 0.01, constrain: bool = True, init_scale: float = 0.1,
                 hidden: int = 64, depth: int = 1):
        check_dim("Planar", dim)
        check_cond_dim("Planar", cond_dim)
        _check_activation(activation, negative_slope)
        self.dim, self.cond_dim = dim, cond_dim
        self.activation, self.negative_slope, self.constrain = activation, float(negative_slope), constrain
        if cond_dim is None:
            self.params = init_scale * jax.random.normal(key, (2 * dim + 1,))
            self.conditioner = None
        else:
            mlp = eqx.nn.MLP(cond_dim, 2 * dim + 1, hidden, depth, activation=jnp.tanh, key=key)
            last = mlp.layers[-1]
            mlp = eqx.tree_at(lambda m: m.layers[-1].weight, mlp, last.weight * init_scale)
            self.params, self.conditioner = None, mlp

    @classmethod
    def from_params(cls, w: jax.Array, u: jax.Array, b: jax.Array | float, *, activation: str = "tanh",
                    negative_slope: float = 0.01, constrain: bool = True) -> "Planar":
        """A layer with the given `w`, `u`, `b` (with `constrain=False`, used exactly as given).

        An explicitly non-invertible configuration (`w^T u < -1` for tanh, or
        `1 + slope * w^T u <= 0` for leaky-ReLU) is refused with a `ConfigError`.
        """
        w, u = jnp.asarray(w), jnp.asarray(u)
        if w.ndim != 1 or w.shape != u.shape:
            raise ConfigError(f"Planar.from_params: w and u must be vectors of one shape, got {w.shape} and {u.shape}")
        layer = cls(w.shape[0], key=jax.random.PRNGKey(0), activation=activation,
                    negative_slope=negative_slope, constrain=constrain)
        layer = eqx.tree_at(lambda m: m.params, layer, jnp.concatenate([w, u, jnp.reshape(jnp.asarray(b, w.dtype), (1,))]))
        if not constrain and not isinstance(w, jax.core.Tracer):
            wu = float(w @ u)
            slope_min = 1.0 if activation == "tanh" else min(1.0, negative_slope)
            if activation == "tanh" and wu < -1.0 or activation == "leaky_relu" and min(1 + wu, 1 + slope_min * wu) <= 0:
                raise ConfigError(
                    f"Planar.from_params: w^T u = {wu:.4g} makes the {activation} planar map non-invertible "
                    f"(it needs w^T u >= -1{'' if activation == 'tanh' else ' and 1 + slope * w^T u > 0'}); "
                    "pass constrain=True (the paper's u_hat) or choose another u"
                )
        return layer

    # --- parameters ---------------------------------------------------------------------------
    def wub(self, context: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """`(w, u_hat, b, m)` with `m = w^T u_hat` (for the given context if amortised)."""
        p = self.params if self.conditioner is None else self.conditioner(context)
        d = self.dim
        w, u, b = p[:d], p[d:2 * d], p[2 * d]
        wu = w @ u
        if not self.constrain:
            return w, u, b, wu
        m = -1.0 + jax.nn.softplus(wu)
        u_hat = u + (m - wu) * w / (w @ w + jnp.finfo(w.dtype).tiny)
        return w, u_hat, b, m

    def _h(self, a):
        if self.activation == "tanh":
            return jnp.tanh(a)
        return jnp.where(a >= 0, a, self.negative_slope * a)

    def _dh(self, a):
        if self.activation == "tanh":
            return 1.0 - jnp.tanh(a) ** 2
        return jnp.where(a >= 0, 1.0, self.negative_slope).astype(a.dtype)

    # --- the map ------------------------------------------------------------------------------
    def forward_and_log_det(self, z, context=None):
        self._check(z, context)
        w, u_hat, b, m = self.wub(context)
        a = w @ z + b
        return z + u_hat * self._h(a), jnp.log(jnp.abs(1.0 + m * self._dh(a)))

    def inverse_and_log_det(self, y, context=None):
        self._check(y, context)
        w, u_hat, b, m = self.wub(context)
        c = w @ y
        if self.activation == "leaky_relu":
            slope = jnp.where(c + b >= 0, 1.0, self.negative_slope).astype(y.dtype)
            a = (c + b) / (1.0 + m * slope)  # = w^T z + b, same sign as c + b
        else:
            a = _solve_tanh(c, m, b) + b
        return y - u_hat * self._h(a), -jnp.log(jnp.abs(1.0 + m * self._dh(a)))


def _solve_tanh(c: jax.Array, m: jax.Array, b: jax.Array, iters: int = 24) -> jax.Array:
    """The root `alpha` of `g(alpha) = alpha + m tanh(alpha + b) - c` (non-decreasing when
    `m >= -1`), exact in value and first derivatives (see the module docstring)."""

    def g(x, c, m, b):
        return x + m * jnp.tanh(x + b) - c

    def dg(x, m, b):
        return 1.0 + m * (1.0 - jnp.tanh(x + b) ** 2)

    cs, ms, bs = (jax.lax.stop_gradient(v) for v in (c, m, b))
    half = jnp.abs(ms)

    def body(_, state):
        x, lo, hi = state
        gx = g(x, cs, ms, bs)
        lo = jnp.where(gx < 0, x, lo)
        hi = jnp.where(gx > 0, x, hi)
        step = x - gx / dg(x, ms, bs)
        inside = (step > lo) & (step < hi)
        return jnp.where(inside, step, 0.5 * (lo + hi)), lo, hi

    x0 = cs - ms * jnp.tanh(cs + bs)  # the root when tanh is locally flat
    x0 = jnp.clip(x0, cs - half, cs + half)
    root, _, _ = jax.lax.fori_loop(0, iters, body, (x0, cs - half, cs + half))
    root = jax.lax.stop_gradient(root)
    return root - g(root, c, m, b) / dg(root, ms, bs)


def _check_activation(activation: str, negative_slope: float) -> None:
    if activation not in _ACTIVATIONS:
        raise ConfigError(f"Planar: activation must be one of {_ACTIVATIONS}, got {activation!r}")
    if activation == "leaky_relu" and not 0.0 < negative_slope <= 1.0:
        raise ConfigError(
            f"Planar: negative_slope must be in (0, 1] for an invertible leaky-ReLU planar map, got "
            f"{negative_slope!r} (a slope <= 0 folds the negative half-space)"
        )
