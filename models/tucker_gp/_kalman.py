"""Kalman filter and RTS smoother of a mode's chain under Gaussian messages on `u = H x`.

Each unique coordinate i carries a Gaussian factor `exp(ηᵢᵀ u − ½ uᵀ Λᵢ u)` on the R function
values `u = H x_i` (the merged per-entry messages of EP, or Gaussian observations in the tests).
Λ may be singular (no information on some direction), so the update is written without Λ⁻¹,
in a square-root form that keeps every covariance positive semi-definite in float32: with
`P = C Cᵀ` (the predicted covariance) and `Cᵀ Hᵀ Λ H C = V diag(λ) Vᵀ`, the filtered covariance is
`(P⁻¹ + Hᵀ Λ H)⁻¹ = C V diag(1 / (1 + λ)) Vᵀ Cᵀ` and `m ← m + P_f Hᵀ (η − Λ H m)`. The textbook
`P − K Λ H P` is a difference of nearly equal matrices when a coordinate carries many entries
(US-TEMP: thousands per latitude, E[τ]·Λ H P Hᵀ ~ 10⁶): in float32 it went indefinite, the
negative variances made the next EP messages indefinite, and Tucker R = 7 diverged. Negative
eigenvalues λ (an indefinite message from round-off) are clipped to 0, as EP implementations
skip negative-precision updates; the smoothed covariances are likewise floored at 0. Both passes
are one `lax.scan` over the n unique coordinates, O(n D³).
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


def _psd(p: jax.Array) -> jax.Array:
    """The nearest positive semi-definite matrix to symmetric `p` (eigenvalues floored at 0)."""
    lam, vec = jnp.linalg.eigh(_sym(p))
    return _sym((vec * jnp.maximum(lam, 0.0)) @ vec.T)


def _update(Pp: jax.Array, mp: jax.Array, H: jax.Array, lam: jax.Array, eta: jax.Array):
    """The filter's measurement update in square-root form (see the module docstring)."""
    ev, vec = jnp.linalg.eigh(_sym(Pp))
    C = vec * jnp.sqrt(jnp.maximum(ev, 0.0))  # Pp = C Cᵀ
    HC = H @ C
    b, V = jnp.linalg.eigh(_sym(HC.T @ lam @ HC))
    CV = C @ V
    Pf = _sym((CV / (1.0 + jnp.maximum(b, 0.0))) @ CV.T)
    return mp + Pf @ (H.T @ (eta - lam @ (H @ mp))), Pf


def kalman_filter(prior: ModePrior, prec: jax.Array, shift: jax.Array):
    """Filtered and one-step predicted means/covariances; `prec` (n, R, R), `shift` (n, R)."""
    D = prior.A.shape[-1]
    H = prior.H

    def step(carry, inp):
        m, P = carry
        A, Q, lam, eta = inp
        mp, Pp = A @ m, _sym(A @ P @ A.T + Q)
        mf, Pf = _update(Pp, mp, H, lam, eta)
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
        Ps = _psd(P + G @ (Ps_next - Pp_next) @ G.T)
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
