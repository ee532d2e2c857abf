"""Affine autoregressive flows with a MADE conditioner: IAF (Kingma et al. 2016) and MAF
(Papamakarios et al. 2017).

Both transform `y_i = z_i exp(s_i) + t_i`; they differ in what `(t, s)` are computed from:

| layer | `(t, s)` from | sampling (`forward`) | scoring (`inverse`) |
| --- | --- | --- | --- |
| `IAF` | `z_{<i}` (the input) | one MADE pass | `dim` sequential passes |
| `MAF` | `y_{<i}` (the output) | `dim` sequential passes | one MADE pass |

The sequential direction is exact after `dim` fixed-point sweeps (each sweep fixes one more
coordinate, as the dependence is strictly triangular), so it differentiates exactly too.
Log-scales are soft-clamped to `(-clamp, clamp)` by `clamp * tanh(s / clamp)` for stability.
The affine arithmetic is two lines and written here; the conditioner is equinox.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from ._bijection import Bijection, check_cond_dim, check_dim
from ._made import MADE


class _Autoregressive(Bijection):
    made: MADE
    dim: int = eqx.field(static=True)
    cond_dim: int | None = eqx.field(static=True)
    clamp: float = eqx.field(static=True)

    def __init__(self, dim: int, *, key: jax.Array, cond_dim: int | None = None, hidden: int = 64,
                 depth: int = 1, activation: Callable = jnp.tanh, clamp: float = 5.0):
        name = type(self).__name__
        check_dim(name, dim)
        check_cond_dim(name, cond_dim)
        self.dim, self.cond_dim, self.clamp = dim, cond_dim, float(clamp)
        self.made = MADE(dim, 2, key=key, cond_dim=cond_dim, hidden=hidden, depth=depth, activation=activation)

    def _shift_log_scale(self, x, context):
        t, s = self.made(x, context)
        return t, self.clamp * jnp.tanh(s / self.clamp)

    def _one_pass_forward(self, z, context):
        t, s = self._shift_log_scale(z, context)
        return z * jnp.exp(s) + t, jnp.sum(s)

    def _one_pass_inverse(self, y, context):
        t, s = self._shift_log_scale(y, context)
        return (y - t) * jnp.exp(-s), -jnp.sum(s)

    def _sweep_forward(self, z, context):
        def sweep(_, y):  # y_i = z_i exp(s_i(y_<i)) + t_i(y_<i)
            t, s = self._shift_log_scale(y, context)
            return z * jnp.exp(s) + t
        y = jax.lax.fori_loop(0, self.dim, sweep, jnp.zeros_like(z))
        _, s = self._shift_log_scale(y, context)
        return y, jnp.sum(s)

    def _sweep_inverse(self, y, context):
        def sweep(_, z):  # z_i = (y_i - t_i(z_<i)) exp(-s_i(z_<i))
            t, s = self._shift_log_scale(z, context)
            return (y - t) * jnp.exp(-s)
        z = jax.lax.fori_loop(0, self.dim, sweep, jnp.zeros_like(y))
        _, s = self._shift_log_scale(z, context)
        return z, -jnp.sum(s)


class IAF(_Autoregressive):
    """Inverse autoregressive flow layer: fast sampling, `dim` passes to score a given value.

    **Arguments:** `dim`, `key` (keyword-only), `cond_dim` (amortised: the context enters MADE),
    `hidden`, `depth`, `activation` (MADE), `clamp` (log-scale bound).
    """

    def forward_and_log_det(self, z, context=None):
        self._check(z, context)
        return self._one_pass_forward(z, context)

    def inverse_and_log_det(self, y, context=None):
        self._check(y, context)
        return self._sweep_inverse(y, context)


class MAF(_Autoregressive):
    """Masked autoregressive flow layer: one pass to score, `dim` passes to sample.

    **Arguments:** as [`IAF`][].
    """

    def forward_and_log_det(self, z, context=None):
        self._check(z, context)
        return self._sweep_forward(z, context)

    def inverse_and_log_det(self, y, context=None):
        self._check(y, context)
        return self._one_pass_inverse(y, context)
