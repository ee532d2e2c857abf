"""The bijection interface every flow layer implements, and permutations between layers.

A layer maps one vector `z` of shape `[dim]` (optionally given a context vector of shape
`[cond_dim]`, for amortised flows) to `y`, with `log|det dy/dz|`. `Flow` composes layers and
vectorises them over sample and batch axes, so layers only ever see single vectors.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp

from genvi import ConfigError, ShapeError


class Bijection(eqx.Module):
    """A differentiable invertible map `R^dim -> R^dim` with its log-determinant.

    Subclasses define `forward_and_log_det` (the sampling direction) and `inverse_and_log_det`
    (used to score values: `log q(y) = log base(f^{-1}(y)) + log|det J_{f^{-1}}(y)|`), each taking
    one vector and an optional context, returning `(vector, scalar log|det J|)`.
    """

    dim: eqx.AbstractVar[int]
    cond_dim: eqx.AbstractVar[int | None]

    @abc.abstractmethod
    def forward_and_log_det(self, z: jax.Array, context: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """`(f(z), log|det df/dz|)` for one vector `z` of shape `[dim]`."""

    @abc.abstractmethod
    def inverse_and_log_det(self, y: jax.Array, context: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """`(f^{-1}(y), log|det df^{-1}/dy|)` for one vector `y` of shape `[dim]`."""

    def forward(self, z: jax.Array, context: jax.Array | None = None) -> jax.Array:
        return self.forward_and_log_det(z, context)[0]

    def inverse(self, y: jax.Array, context: jax.Array | None = None) -> jax.Array:
        return self.inverse_and_log_det(y, context)[0]

    def _check(self, x: jax.Array, context: jax.Array | None) -> None:
        """Refuse a vector or context of the wrong shape (static, so it runs at trace time)."""
        name = type(self).__name__
        if jnp.shape(x) != (self.dim,):
            raise ShapeError(f"{name}: expects one vector of shape ({self.dim},), got shape {jnp.shape(x)}; "
                             "Flow vectorises over sample and batch axes, call layers on single vectors")
        if self.cond_dim is not None:
            if context is None:
                raise ShapeError(f"{name}: this layer is conditional (cond_dim={self.cond_dim}) and needs a "
                                 f"context of shape ({self.cond_dim},), got None")
            if jnp.shape(context) != (self.cond_dim,):
                raise ShapeError(f"{name}: expects a context of shape ({self.cond_dim},), got shape "
                                 f"{jnp.shape(context)}")


class Permute(Bijection):
    """A fixed permutation of coordinates (log-determinant 0), placed between coupling or
    autoregressive layers so every coordinate gets transformed."""

    permutation: tuple[int, ...] = eqx.field(static=True)
    dim: int = eqx.field(static=True)
    cond_dim: None = eqx.field(static=True, default=None)

    def __init__(self, permutation: tuple[int, ...] | list[int] | jax.Array):
        perm = tuple(int(i) for i in permutation)
        if sorted(perm) != list(range(len(perm))):
            raise ConfigError(f"Permute: permutation must contain each of 0..{len(perm) - 1} once, got {perm}")
        self.permutation = perm
        self.dim = len(perm)
        self.cond_dim = None

    def forward_and_log_det(self, z, context=None):
        self._check(z, None)
        return z[jnp.array(self.permutation)], jnp.zeros((), z.dtype)

    def inverse_and_log_det(self, y, context=None):
        self._check(y, None)
        inv = sorted(range(self.dim), key=lambda i: self.permutation[i])
        return y[jnp.array(inv)], jnp.zeros((), y.dtype)


def Reverse(dim: int) -> Permute:
    """The permutation that reverses the coordinates (the usual choice between coupling layers)."""
    return Permute(tuple(range(dim - 1, -1, -1)))


def check_dim(name: str, dim: int, minimum: int = 1) -> None:
    if not isinstance(dim, int) or dim < minimum:
        raise ConfigError(f"{name}: dim must be an integer >= {minimum}, got {dim!r}")


def check_cond_dim(name: str, cond_dim: int | None) -> None:
    if cond_dim is not None and (not isinstance(cond_dim, int) or cond_dim < 1):
        raise ConfigError(f"{name}: cond_dim must be None (unconditional) or an integer >= 1, got {cond_dim!r}")
