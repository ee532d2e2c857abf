"""Radial flows (Rezende & Mohamed 2015, section 4.1 and appendix A.2).

`f(z) = z + beta h(alpha, r) (z - z0)`, `r = |z - z0|`, `h = 1 / (alpha + r)`, with
`log|det J| = (d - 1) log(1 + beta h) + log(1 + beta h + beta h' r)
            = (d - 1) log(1 + beta h) + log(1 + beta alpha h^2)`.

Invertibility needs `beta >= -alpha`; with `constrain=True` (the default) `alpha = softplus(a)`
and `beta = -alpha + softplus(b)` for raw `a`, `b`, as in the paper's appendix. The inverse is
closed form: `rho = |y - z0| = r (1 + beta / (alpha + r))` is the quadratic
`r^2 + (alpha + beta - rho) r - rho alpha = 0`, whose product of roots is `-rho alpha <= 0`, so
exactly one root is non-negative; then `z = z0 + (y - z0) / (1 + beta h(r))`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from genvi import ConfigError

from ._bijection import Bijection, check_cond_dim, check_dim

_EPS = 1e-20  # inside square roots of squared norms: keeps gradients finite at r = 0


class Radial(Bijection):
    """One radial layer; parameters `(z0, a, b)` learned directly, or produced from a context by
    an equinox MLP when `cond_dim` is given (amortised).

    **Arguments:** `dim`, `key` (keyword-only), `cond_dim`, `constrain` (the paper's
    `beta >= -alpha`; `False` uses `alpha`, `beta` as given, see `Radial.from_params`),
    `init_scale` (spread of the initial `z0`), `hidden`, `depth` (the conditioner MLP).
    """

    params: jax.Array | None
    conditioner: eqx.nn.MLP | None
    dim: int = eqx.field(static=True)
    cond_dim: int | None = eqx.field(static=True)
    constrain: bool = eqx.field(static=True)

    def __init__(self, dim: int, *, key: jax.Array, cond_dim: int | None = None, constrain: bool = True,
                 init_scale: float = 1.0, hidden: int = 64, depth: int = 1):
        check_dim("Radial", dim)
        check_cond_dim("Radial", cond_dim)
        self.dim, self.cond_dim, self.constrain = dim, cond_dim, constrain
        k1, k2 = jax.random.split(key)
        # alpha = softplus(0) ~ 0.69; beta = -alpha + softplus(-2) starts as a mild contraction.
        start = jnp.concatenate([init_scale * jax.random.normal(k1, (dim,)), jnp.array([0.0, -2.0])])
        if cond_dim is None:
            self.params, self.conditioner = start, None
        else:
            mlp = eqx.nn.MLP(cond_dim, dim + 2, hidden, depth, activation=jnp.tanh, key=k2)
            mlp = eqx.tree_at(lambda m: (m.layers[-1].weight, m.layers[-1].bias), mlp,
                              (mlp.layers[-1].weight * 0.01, start))
            self.params, self.conditioner = None, mlp

    @classmethod
    def from_params(cls, z0: jax.Array, alpha: float | jax.Array, beta: float | jax.Array, *,
                    constrain: bool = False) -> "Radial":
        """A layer with the given centre and (with `constrain=False`, the default here) the given
        `alpha > 0` and `beta >= -alpha`; other values are refused with a `ConfigError`.
        With `constrain=True`, `alpha` and `beta` are the raw (unconstrained) parameters."""
        z0 = jnp.asarray(z0)
        if z0.ndim != 1:
            raise ConfigError(f"Radial.from_params: z0 must be a vector, got shape {z0.shape}")
        if not constrain and not isinstance(z0, jax.core.Tracer):
            a, b = float(alpha), float(beta)
            if not a > 0 or b < -a:
                raise ConfigError(
                    f"Radial.from_params: alpha = {a:.4g}, beta = {b:.4g} make the radial map non-invertible "
                    "(it needs alpha > 0 and beta >= -alpha); pass constrain=True for the paper's "
                    "reparameterisation or choose other values"
                )
        layer = cls(z0.shape[0], key=jax.random.PRNGKey(0), constrain=constrain)
        p = jnp.concatenate([z0, jnp.asarray([alpha, beta], z0.dtype)])
        return eqx.tree_at(lambda m: m.params, layer, p)

    def z0_alpha_beta(self, context: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
        """`(z0, alpha, beta)` after the constraint."""
        p = self.params if self.conditioner is None else self.conditioner(context)
        z0, a, b = p[: self.dim], p[self.dim], p[self.dim + 1]
        if not self.constrain:
            return z0, a, b
        alpha = jax.nn.softplus(a)
        return z0, alpha, -alpha + jax.nn.softplus(b)

    def _log_det(self, r, alpha, beta):
        h = 1.0 / (alpha + r)
        return (self.dim - 1) * jnp.log1p(beta * h) + jnp.log1p(beta * alpha * h ** 2)

    def forward_and_log_det(self, z, context=None):
        self._check(z, context)
        z0, alpha, beta = self.z0_alpha_beta(context)
        diff = z - z0
        r = jnp.sqrt(jnp.sum(diff ** 2) + _EPS)
        return z + beta / (alpha + r) * diff, self._log_det(r, alpha, beta)

    def inverse_and_log_det(self, y, context=None):
        self._check(y, context)
        z0, alpha, beta = self.z0_alpha_beta(context)
        diff = y - z0
        rho = jnp.sqrt(jnp.sum(diff ** 2) + _EPS)
        B = alpha + beta - rho
        disc = jnp.sqrt(B ** 2 + 4.0 * rho * alpha)
        # the non-negative root, in the form that avoids cancellation for either sign of B
        r = jnp.where(B >= 0, 2.0 * rho * alpha / (B + disc), 0.5 * (disc - B))
        return z0 + diff / (1.0 + beta / (alpha + r)), -self._log_det(r, alpha, beta)
