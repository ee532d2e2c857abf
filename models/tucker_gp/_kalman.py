"""Kalman filter and RTS smoother of a mode's chain under Gaussian messages on `u = H x`.

Each unique coordinate i carries a Gaussian factor `exp(ηᵢᵀ u − ½ uᵀ Λᵢ u)` on the R function
values `u = H x_i` (the merged per-entry messages of EP, or Gaussian observations in the tests).
Λ may be singular (no information on some direction), so the update is written without Λ⁻¹:
`K = P Hᵀ (I + Λ H P Hᵀ)⁻¹`, `m ← m + K (η − Λ H m)`, `P ← P − K Λ H P`. Both passes are one
`lax.scan` over the n unique coordinates, O(n D³).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._ssm import ModePrior


class PathPosterior(NamedTuple):
    """A Gaussian over a mode's state path: marginals and lag-one cross-covariances.

    `mean` (n, D), `cov` (n, D, D), `cross` (n, D, D) with `cross[i] = Cov(x_i, x_(i+1))`
    (the last one is unused, zero).
    """

    mean: jax.Array
    cov: jax.Array
    cross: jax.Array


def _sym(p: jax.Array) -> jax.Array:
    return 0.5 * (p + jnp.swapaxes(p, -1, -2))


def kalman_filter(prior: ModePrior, prec: jax.Array, shift: jax.Array):
    """Filtered and one-step predicted means/covariances; `prec` (n, R, R), `shift` (n, R)."""
    D = prior.A.shape[-1]
    H = prior.H
    eye_r = jnp.eye(H.shape[0], dtype=H.dtype)

    def step(carry, inp):
        m, P = carry
        A, Q, lam, eta = inp
        mp, Pp = A @ m, _sym(A @ P @ A.T + Q)
        S = H @ Pp @ H.T
        K = jnp.linalg.solve((eye_r + lam @ S).T, (Pp @ H.T).T).T
        mf = mp + K @ (eta - lam @ (H @ mp))
        Pf = _sym(Pp - K @ lam @ H @ Pp)
        return (mf, Pf), (mf, Pf, mp, Pp)

    init = (jnp.zeros(D, H.dtype), jnp.zeros((D, D), H.dtype))
    _, out = jax.lax.scan(step, init, (prior.A, prior.Q, prec, shift))
    return out


def rts_smoother(prior: ModePrior, mf, Pf, mp, Pp) -> PathPosterior:
    """Rauch-Tung-Striebel backward pass over the filter's output."""

    def step(carry, inp):
        ms_next, Ps_next = carry
        m, P, A_next, mp_next, Pp_next = inp
        G = jnp.linalg.solve(Pp_next, A_next @ P).T  # P Aᵀ Pp⁻¹ (Pp symmetric)
        ms = m + G @ (ms_next - mp_next)
        Ps = _sym(P + G @ (Ps_next - Pp_next) @ G.T)
        return (ms, Ps), (ms, Ps, G @ Ps_next)

    last = (mf[-1], Pf[-1])
    xs = (mf[:-1], Pf[:-1], prior.A[1:], mp[1:], Pp[1:])
    _, (ms, Ps, cross) = jax.lax.scan(step, last, xs, reverse=True)
    mean = jnp.concatenate([ms, mf[-1:]])
    cov = jnp.concatenate([Ps, Pf[-1:]])
    cross = jnp.concatenate([cross, jnp.zeros_like(Pf[-1:])])
    return PathPosterior(mean, cov, cross)


@jax.jit
def smooth(prior: ModePrior, prec: jax.Array, shift: jax.Array) -> PathPosterior:
    """The exact Gaussian posterior of the chain given the messages (filter, then smoother)."""
    return rts_smoother(prior, *kalman_filter(prior, prec, shift))


def function_moments(prior: ModePrior, path: PathPosterior) -> tuple[jax.Array, jax.Array]:
    """Means (n, R) and second moments `E[u uᵀ]` (n, R, R) of the function values `u = H x`."""
    H = prior.H
    mean = path.mean @ H.T
    cov = jnp.einsum("rd,nde,se->nrs", H, path.cov, H)
    return mean, cov + mean[:, :, None] * mean[:, None, :]
