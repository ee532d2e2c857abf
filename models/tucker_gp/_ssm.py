"""Matérn Gaussian processes as linear stochastic differential equations (state-space form).

A Matérn-ν GP f(t) with ν = p + 1/2 is the first component of the state x(t) ∈ R^(p+1) of
`dx = F x dt + L dβ`, `E[dβ²] = Qc dt` (Hartikainen & Särkkä, 2010). Between sorted coordinates
t_i < t_(i+1) the state is a Gauss-Markov chain: `x_(i+1) = A_i x_i + q_i`, with
`A_i = expm(F Δ_i)` and `q_i ~ N(0, Q_i)`, `Q_i = P∞ − A_i P∞ A_iᵀ`, where `P∞` is the stationary
covariance (the solution of `F P + P Fᵀ + L Qc Lᵀ = 0`). Both are computed in closed form
(`discretise`), accurate in float32 for gaps far below and far above the lengthscale.

R independent latent functions of one mode share a kernel: their joint state is the
block-diagonal `kron(I_R, ·)` of the single-function matrices, function r occupying states
`r d … r d + d − 1` (d = p + 1) and `H` picking each block's first state.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from genvi import ConfigError

KERNELS = {"matern12": 1, "matern32": 2, "matern52": 3}  # name -> state dimension d


class StateSpace(NamedTuple):
    """The SDE of one Matérn GP: `F`, `L` (d, 1), `Qc` (1, 1), `Pinf`, `H` (1, d)."""

    F: jax.Array
    L: jax.Array
    Qc: jax.Array
    Pinf: jax.Array
    H: jax.Array


def check_kernel(kernel: str, lengthscale: float, variance: float, where: str) -> None:
    """Raise a `ConfigError` naming `where` for an unknown kernel or a non-positive hyperparameter."""
    if kernel not in KERNELS:
        raise ConfigError(f"{where}: kernel={kernel!r} is unknown; choose one of {sorted(KERNELS)}")
    for name, value in (("lengthscale", lengthscale), ("variance", variance)):
        if not (np.isfinite(value) and value > 0):
            raise ConfigError(f"{where}: {name} must be a positive finite number, got {value!r}")


def matern_sde(kernel: str, lengthscale: float, variance: float, dtype=jnp.float32) -> StateSpace:
    """The state-space form of a Matérn-1/2, 3/2 or 5/2 kernel with the given hyperparameters."""
    check_kernel(kernel, lengthscale, variance, "matern_sde")
    s2, ell = float(variance), float(lengthscale)
    if kernel == "matern12":
        lam = 1.0 / ell
        F, Qc, Pinf = [[-lam]], 2.0 * s2 * lam, [[s2]]
    elif kernel == "matern32":
        lam = math.sqrt(3.0) / ell
        F, Qc = [[0.0, 1.0], [-lam**2, -2.0 * lam]], 4.0 * s2 * lam**3
        Pinf = [[s2, 0.0], [0.0, s2 * lam**2]]
    else:
        lam = math.sqrt(5.0) / ell
        F = [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-lam**3, -3.0 * lam**2, -3.0 * lam]]
        Qc = 16.0 / 3.0 * s2 * lam**5
        k = s2 * lam**2 / 3.0
        Pinf = [[s2, 0.0, -k], [0.0, k, 0.0], [-k, 0.0, s2 * lam**4]]
    d = KERNELS[kernel]
    L = np.zeros((d, 1))
    L[-1, 0] = 1.0
    H = np.zeros((1, d))
    H[0, 0] = 1.0
    arr = lambda a: jnp.asarray(np.asarray(a, dtype=np.float64), dtype=dtype)  # noqa: E731
    return StateSpace(arr(F), arr(L), arr([[Qc]]), arr(Pinf), arr(H))


def matern_kernel(kernel: str, lengthscale: float, variance: float, x: jax.Array, y: jax.Array) -> jax.Array:
    """The Matérn kernel matrix `k(x_i, y_j)` (the closed form the state-space prior must reproduce)."""
    check_kernel(kernel, lengthscale, variance, "matern_kernel")
    r = jnp.abs(x[:, None] - y[None, :]) / lengthscale
    if kernel == "matern12":
        return variance * jnp.exp(-r)
    if kernel == "matern32":
        s = math.sqrt(3.0) * r
        return variance * (1.0 + s) * jnp.exp(-s)
    s = math.sqrt(5.0) * r
    return variance * (1.0 + s + s**2 / 3.0) * jnp.exp(-s)


def _gap_integral(m: int, lam: jax.Array, dt: jax.Array) -> jax.Array:
    """`∫_0^Δ s^m e^(−2λs) ds`: a power series for 2λΔ < 1, the incomplete-gamma closed form
    `m!/(2λ)^(m+1) (1 − e^(−x) Σ_(i≤m) x^i/i!)`, x = 2λΔ, otherwise (each where it is accurate)."""
    x = 2.0 * lam * dt
    series = sum((-x) ** i / float(math.factorial(i) * (m + i + 1)) for i in range(18)) * dt ** (m + 1)
    xs = jnp.maximum(x, 1.0)
    closed = math.factorial(m) / (2.0 * lam) ** (m + 1) * (
        1.0 - jnp.exp(-xs) * sum(xs**i / math.factorial(i) for i in range(m + 1)))
    return jnp.where(x < 1.0, series, closed)


def discretise(sde: StateSpace, delta: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`A = expm(F Δ)` and `Q = ∫_0^Δ e^(Fs) L Qc Lᵀ e^(Fᵀs) ds` (= P∞ − A P∞ Aᵀ) for each Δ ≥ 0.

    A Matérn `F` has the single eigenvalue −λ (λ = √(2ν)/ℓ), so `N = F + λI` is nilpotent and
    `expm(FΔ) = e^(−λΔ) Σ_(j<d) (NΔ)^j / j!` exactly; `Q` follows term by term in closed form,
    without the cancellation `P∞ − A P∞ Aᵀ` suffers in float32 when Δ ≪ ℓ (tests check both).

    **Arguments:** `delta` (m,) gaps. **Returns:** `A`, `Q`, each (m, d, d).
    """
    F, L = sde.F, sde.L
    d = F.shape[0]
    lam = jnp.abs(F[-1, -1]) / d
    eye = jnp.eye(d, dtype=F.dtype)
    N = F + lam * eye
    powers = [eye]
    for _ in range(d - 1):
        powers.append(powers[-1] @ N)
    dt = jnp.asarray(delta, F.dtype)[:, None, None]
    A = jnp.exp(-lam * dt) * sum(p * dt**j / math.factorial(j) for j, p in enumerate(powers))
    NL = [p @ L for p in powers]
    Q = sum(sde.Qc[0, 0] * (NL[j] @ NL[k].T) / (math.factorial(j) * math.factorial(k))
            * _gap_integral(j + k, lam, dt) for j in range(d) for k in range(d))
    return A, 0.5 * (Q + jnp.swapaxes(Q, -1, -2))


def stack_functions(mat: jax.Array, rank: int) -> jax.Array:
    """`kron(I_rank, mat)` over the last two axes: R independent copies of one function's matrix."""
    eye = jnp.eye(rank, dtype=mat.dtype)
    out = jnp.einsum("rs,...ij->...risj", eye, mat)
    shape = mat.shape[:-2] + (rank * mat.shape[-2], rank * mat.shape[-1])
    return out.reshape(shape)


class ModePrior(NamedTuple):
    """The Gauss-Markov prior of one mode's R functions over its sorted unique coordinates.

    `A[0] = I` and `Q[0] = P∞` so that the first state, like every other, is `A x_prev + q` from
    `x_prev = 0`; `A[i], Q[i]` (i ≥ 1) carry state i − 1 to state i. Shapes (n, D, D), D = R d.
    """

    grid: jax.Array
    A: jax.Array
    Q: jax.Array
    Pinf: jax.Array
    H: jax.Array


@functools.partial(jax.jit, static_argnames="rank")
def mode_prior(sde: StateSpace, grid: jax.Array, rank: int) -> ModePrior:
    """The prior chain of `rank` functions at the strictly increasing coordinates `grid` (n,)."""
    grid = jnp.asarray(grid, sde.F.dtype)
    A, Q = discretise(sde, jnp.diff(grid))
    d = sde.F.shape[0]
    A = jnp.concatenate([jnp.eye(d, dtype=A.dtype)[None], A])
    Q = jnp.concatenate([sde.Pinf[None], Q])
    return ModePrior(grid, stack_functions(A, rank), stack_functions(Q, rank),
                     stack_functions(sde.Pinf, rank), stack_functions(sde.H, rank))
