"""The latent functions at coordinates off the training grid, from neighbouring smoothed states.

Under the Markov prior, the state at t with grid neighbours t_k < t < t_(k+1) depends on the
data only through x_k and x_(k+1): `x_t | x_k, x_(k+1) ~ N(B₁ x_k + B₂ x_(k+1), C)` with
`B₂ = Q₁ A₂ᵀ Q⁻¹`, `B₁ = A₁ − B₂ A`, `C = Q₁ − B₂ A₂ Q₁` (A₁, Q₁ over t − t_k; A₂, Q₂ over
t_(k+1) − t; A = A₂A₁ and Q over the whole gap). Averaging over the posterior of (x_k, x_(k+1))
(marginals and their cross-covariance) gives the exact posterior at t. Before the first
coordinate the bridge is the stationary backward conditional `B₂ = P∞ Aᵀ P∞⁻¹`, `C = P∞ − B₂ A P∞`;
after the last it is the forward prediction `B₁ = A`, `C = Q`. At a grid coordinate it returns
the smoothed state itself.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._kalman import PathPosterior
from ._ssm import ModePrior, StateSpace, discretise, stack_functions


def _bridge(sde: StateSpace, rank: int, d1: jax.Array, d2: jax.Array, where: jax.Array):
    """`B₁, B₂, C` (D, D each) for gaps d1 = t − t_prev ≥ 0, d2 = t_next − t ≥ 0.

    `where`: 0 inside the grid, −1 before the first coordinate, +1 after the last.
    """
    (A1, A2, Aw), (Q1, Q2, Qw) = discretise(sde, jnp.stack([d1, d2, d1 + d2]))
    K = jnp.linalg.solve(Qw + 1e-12 * jnp.eye(Qw.shape[0], dtype=Qw.dtype), A2 @ Q1).T  # Q1 A2ᵀ Qw⁻¹
    inner = (A1 - K @ Aw, K, Q1 - K @ A2 @ Q1)
    P = sde.Pinf
    back = jnp.linalg.solve(P, A2 @ P).T  # P∞ A2ᵀ P∞⁻¹, A2 over t_first − t
    before = (jnp.zeros_like(P), back, P - back @ A2 @ P)
    after = (A1, jnp.zeros_like(P), Q1)
    pick = lambda a, b, c: jnp.where(where < 0, a, jnp.where(where > 0, c, b))  # noqa: E731
    return tuple(stack_functions(pick(a, b, c), rank) for a, b, c in zip(before, inner, after))


@jax.jit
def interpolate(prior: ModePrior, sde: StateSpace, path: PathPosterior, t: jax.Array):
    """Posterior means (m, R) and covariances (m, R, R) of the mode's functions at `t` (m,)."""
    grid = prior.grid
    n = grid.shape[0]
    rank = prior.H.shape[0]
    t = jnp.asarray(t, grid.dtype)

    def one(tq):
        loc = jnp.searchsorted(grid, tq, side="right")  # grid[loc-1] <= tq < grid[loc]
        where = jnp.where(loc == 0, -1, jnp.where(loc == n, 1, 0))
        prev = jnp.clip(loc - 1, 0, n - 1)
        nxt = jnp.clip(loc, 0, n - 1)
        d1 = jnp.where(where == 0, tq - grid[prev], jnp.where(where > 0, tq - grid[n - 1], 0.0))
        d2 = jnp.where(where == 0, grid[nxt] - tq, jnp.where(where < 0, grid[0] - tq, 0.0))
        B1, B2, C = _bridge(sde, rank, d1, d2, where)
        m = B1 @ path.mean[prev] + B2 @ path.mean[nxt]
        cross = path.cross[prev]  # Cov(x_prev, x_next) when they are neighbours
        joint = jnp.where(where == 0, B1 @ cross @ B2.T, 0.0)
        cov = C + B1 @ path.cov[prev] @ B1.T + B2 @ path.cov[nxt] @ B2.T + joint + joint.T
        H = prior.H
        return H @ m, H @ cov @ H.T

    return jax.vmap(one)(t)
