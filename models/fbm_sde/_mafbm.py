"""Markov-approximate fractional Brownian motion (MA-fBM; Harms & Stefanovits 2019, Daems et al. 2024).

Fractional Brownian motion is a superposition of Ornstein-Uhlenbeck processes over a continuum
of speeds; MA-fBM keeps K of them, driven by one Brownian motion W:

    dY_k = -gamma_k Y_k dt + dW,    B_hat(t) = sum_k omega_k (Y_k(t) - Y_k(0)),

with speeds on a geometric grid gamma_k = r^(k - n), n = (K + 1)/2, r = gamma_max^(2/(K - 1))
(so gamma_1 = 1/gamma_max and gamma_K = gamma_max). Type II (Riemann-Liouville fBM) starts the
Y_k at 0; type I (Mandelbrot-van Ness fBM) starts them from their joint stationary law.

The weights omega(H) minimise E int_0^T (B_hat - B^H)^2 dt, so they solve A omega = b with
A_ij = int_0^T E[Yhat_i Yhat_j] dt and b_i = int_0^T E[Yhat_i B^H] dt (Yhat = Y(t) - Y(0)).
With a = H + 1/2 and x = gamma T, all entries are closed-form (derivation in docs/fbm_sde.md):

type II:  A_ij = T/g - (1 - e^{-gT})/g^2,   g = gamma_i + gamma_j
          b_i  = gamma_i^{-a-1} [x P(a, x) - a P(a + 1, x)]
type I:   A_ij = [2T - (1 - e^{-gamma_i T})/gamma_i - (1 - e^{-gamma_j T})/gamma_j] / g
          b_i  = gamma_i^{-a} [2T - (1 - e^{-x})/gamma_i - (e^x Q(a, x) - 1 + x^a/Gamma(a+1))/gamma_i]

P, Q are the regularised lower/upper incomplete gamma functions; e^x Q(a, x) is computed from
`gammaincc` for moderate x and from its asymptotic series for large x (`exp_gammaincc`).
Everything is differentiable in H, so H = sigmoid(h) can be learned through the solve.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from genvi import ConfigError

_ASYMPTOTIC_X = 25.0
_ASYMPTOTIC_TERMS = 14
RIDGE = 1e-10
"""Relative Tikhonov regularisation of the (Jacobi-scaled) normal equations. It leaves omega
unchanged to 5 digits for K <= 5 and bounds |omega| for K = 8 type II (condition number 1.5e15),
at a cost of at most 0.005 in relative L2 error (benchmarks/fbm_sde.py prints both)."""


def check_hurst(hurst: float, name: str = "hurst") -> None:
    """Raise `ConfigError` unless `hurst` (a concrete number) lies strictly inside (0, 1)."""
    try:
        value = float(hurst)
    except (TypeError, jax.errors.ConcretizationTypeError):
        return  # traced: H = sigmoid(h) is inside (0, 1) by construction
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{name} must lie strictly inside (0, 1), got {value}; pass e.g. {name}=0.3")


def gamma_grid(num_processes: int, gamma_max: float) -> np.ndarray:
    """The K speeds gamma_k = r^(k - n), k = 1..K, n = (K+1)/2, r = gamma_max^(2/(K-1)).

    A static float64 NumPy array (the grid is configuration, not a parameter)."""
    if int(num_processes) != num_processes or num_processes < 2:
        raise ConfigError(f"num_processes (K) must be an integer >= 2, got {num_processes}; MA-fBM "
                          "needs at least two OU processes (the paper uses K = 5)")
    if not gamma_max > 1.0:
        raise ConfigError(f"gamma_max must be > 1 (the grid spans [1/gamma_max, gamma_max]), got {gamma_max}")
    k = np.arange(1, num_processes + 1, dtype=np.float64)
    n = (num_processes + 1) / 2
    log_r = 2.0 * np.log(gamma_max) / (num_processes - 1)
    return np.exp((k - n) * log_r)


def exp_gammaincc(a, x, xp=jnp):
    """e^x Q(a, x), stable for large x (Q underflows and e^x overflows separately).

    Below x = 25 it is `gammaincc(a, x) * exp(x)`; above, the asymptotic series
    x^(a-1)/Gamma(a) * sum_k (a-1)(a-2)...(a-k) / x^k (relative error below 1e-8 there for
    a in (0.5, 1.5)). Both branches are evaluated at clipped arguments so gradients stay finite.
    `xp` is `jax.numpy` (default) or `numpy` (float64 on the host, with SciPy's special functions).
    """
    special = _special(xp)
    small = xp.minimum(x, _ASYMPTOTIC_X)
    direct = special.gammaincc(a, small) * xp.exp(small)
    big = xp.maximum(x, _ASYMPTOTIC_X)
    term, total = xp.ones_like(big), xp.ones_like(big)
    for k in range(1, _ASYMPTOTIC_TERMS):
        term = term * (a - k) / big
        total = total + term
    series = xp.exp((a - 1.0) * xp.log(big) - special.gammaln(a)) * total
    return xp.where(x <= _ASYMPTOTIC_X, direct, series)


def _special(xp):
    if xp is np:
        import scipy.special

        return scipy.special
    return jax.scipy.special


def _check_kind(kind: str) -> None:
    if kind not in ("I", "II"):
        raise ConfigError(f"fbm_type must be 'I' (Mandelbrot-van Ness) or 'II' (Riemann-Liouville), got {kind!r}")


def omega_system(hurst, gamma, horizon: float, kind: str = "II", xp=jnp):
    """The K x K matrix A and vector b of the normal equations A omega = b (module docstring).

    `xp=numpy` evaluates the same formulas in float64 on the host."""
    _check_kind(kind)
    check_hurst(hurst)
    special = _special(xp)
    a = hurst + 0.5
    T = horizon
    gamma = xp.asarray(gamma)
    g = gamma[:, None] + gamma[None, :]
    x = gamma * T
    if kind == "II":
        A = T / g + xp.expm1(-g * T) / g**2
        b = gamma ** (-a - 1.0) * (x * special.gammainc(a, x) - a * special.gammainc(a + 1.0, x))
    else:
        m = -xp.expm1(-x) / gamma  # (1 - e^{-gamma T}) / gamma
        A = (2.0 * T - m[:, None] - m[None, :]) / g
        tail = exp_gammaincc(a, x, xp) - 1.0 + xp.exp(a * xp.log(x) - special.gammaln(a + 1.0))
        b = gamma ** (-a) * (2.0 * T - m - tail / gamma)
    return A, b


def _solve_scaled(A, b, xp, ridge: float = RIDGE):
    """Solve the SPD system after a symmetric Jacobi scaling, with a relative Tikhonov `ridge`
    on the scaled matrix's diagonal (it is badly conditioned; see `optimal_omega`)."""
    d = 1.0 / xp.sqrt(xp.diag(A))
    scaled = A * d[:, None] * d[None, :] + ridge * xp.eye(A.shape[0])
    if xp is np:
        return np.linalg.solve(scaled, b * d) * d
    chol = jnp.linalg.cholesky(scaled)
    return jax.scipy.linalg.cho_solve((chol, True), b * d) * d


def _host_omega(hurst, gamma, horizon, kind):
    """omega(H) and d omega / dH in float64 on the host: A does not depend on H, so
    d omega/dH = A^{-1} db/dH, with db/dH by a central difference of the closed-form b."""
    h = np.float64(hurst)
    A, b = omega_system(h, gamma, horizon, kind, np)
    step = 1e-5
    db = (omega_system(h + step, gamma, horizon, kind, np)[1]
          - omega_system(h - step, gamma, horizon, kind, np)[1]) / (2 * step)
    return _solve_scaled(A, b, np).astype(np.float32), _solve_scaled(A, db, np).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _omega64(gamma: tuple, horizon: float, kind: str):
    """omega(H) for one (gamma, T, kind) as a differentiable JAX function, built once: the same
    callback object every call, so eager calls (host-side code) hit JAX's compile cache."""
    host = functools.partial(_host_omega, gamma=np.asarray(gamma), horizon=horizon, kind=kind)
    shape = jax.ShapeDtypeStruct((len(gamma),), jnp.float32)

    @jax.custom_jvp
    def omega(hurst):
        return _call_host(hurst)[0]

    def _call_host(hurst):
        return jax.pure_callback(host, (shape, shape), hurst, vmap_method="sequential")

    @omega.defjvp
    def _jvp(primals, tangents):
        value, derivative = _call_host(primals[0])
        return value, derivative * tangents[0]

    return omega


def optimal_omega(hurst, gamma, horizon: float, kind: str = "II", precision: str = "float64") -> jax.Array:
    """omega(H) minimising E int_0^T (B_hat - B^H)^2 dt; differentiable in `hurst`.

    The normal equations are badly conditioned (condition number 2e6 for K = 5 and 2e7 for
    K = 8, type II, gamma_max = 20), beyond float32, and for K = 8 beyond float64 (1.5e15): the
    exact solution has |omega| ~ 1e5 with cancelling signs, useless in a float32 simulation,
    so a relative ridge `RIDGE` = 1e-10 is added (module constant). `precision="float64"` (default) solves them
    in float64 on the host through `jax.pure_callback` with a custom JVP
    (d omega/dH = A^{-1} db/dH), so it works under `jit`, `vmap` and `grad`;
    `precision="float32"` solves the same closed form in JAX (fine for type I and K <= 3).
    """
    if precision == "float32":
        A, b = omega_system(hurst, jnp.asarray(gamma, jnp.float32), horizon, kind)
        return _solve_scaled(A, b, jnp)
    if precision != "float64":
        raise ConfigError(f"precision must be 'float64' or 'float32', got {precision!r}")
    _check_kind(kind)
    check_hurst(hurst)
    gamma = tuple(float(g) for g in np.asarray(gamma))
    return _omega64(gamma, float(horizon), kind)(jnp.asarray(hurst, jnp.float32))


def fbm_second_moment(hurst, horizon: float, kind: str = "II", xp=jnp):
    """int_0^T E[B^H(t)^2] dt for the fBM of the given type (normalised with 1/Gamma(H + 1/2))."""
    _check_kind(kind)
    gammaln = _special(xp).gammaln
    jnp_ = xp
    a = hurst + 0.5
    T = horizon
    if kind == "II":
        return T ** (2 * hurst + 1) / (2 * hurst * (2 * hurst + 1)) * jnp_.exp(-2.0 * gammaln(a))
    v_h = jnp_.exp(-gammaln(2 * hurst + 1.0)) / jnp_.sin(np.pi * hurst)
    return v_h * T ** (2 * hurst + 1) / (2 * hurst + 1)


def approximation_error(hurst: float, gamma, horizon: float, kind: str = "II", omega=None) -> float:
    """Relative L2 error sqrt(E int (B_hat - B)^2 / E int B^2) of MA-fBM with weights `omega`
    (the optimal ones by default), in closed form, in float64 on the host."""
    h = np.float64(hurst)
    A, b = omega_system(h, np.asarray(gamma, np.float64), horizon, kind, np)
    omega = _solve_scaled(A, b, np) if omega is None else np.asarray(omega, np.float64)
    second = float(fbm_second_moment(h, horizon, kind, np))
    cost = second - 2.0 * omega @ b + omega @ A @ omega
    return float(np.sqrt(max(cost, 0.0) / second))


def stationary_covariance(gamma: jax.Array) -> jax.Array:
    """Covariance 1/(gamma_i + gamma_j) of the stationary Y_k (one shared W), for type I."""
    return 1.0 / (gamma[:, None] + gamma[None, :])
