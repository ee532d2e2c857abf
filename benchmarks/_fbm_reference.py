"""Reference computations for benchmarks/fbm_sde.py, in float64 NumPy: brute-force least-squares
MA-fBM weights on a fine kernel grid, and the exact joint covariance of (B^H, Y_1..Y_K) on a time
grid for Cholesky sampling (type II: Riemann-Liouville, via 2F1; type I: Mandelbrot-van Ness)."""

from __future__ import annotations

import numpy as np
import scipy.special as sp

from genvi.models.fbm_sde import exp_gammaincc, stationary_covariance


def _cell_avg_power(t, lo, hi, a):
    """Average over s in [lo, hi] of (t - s)_+^(a-1) (cells past t contribute only up to t)."""
    hi_c = np.minimum(hi, t)
    val = np.where(hi_c > lo, ((t - lo) ** a - np.maximum(t - hi_c, 0.0) ** a) / a, 0.0)
    return val / (hi - lo)


def _cell_avg_exp(t, lo, hi, g):
    """Average over s in [lo, hi] of e^{-g (t - s)} 1{s < t}."""
    hi_c = np.minimum(hi, t)
    val = np.where(hi_c > lo, (np.exp(-g * (t - hi_c)) - np.exp(-g * (t - lo))) / g, 0.0)
    return val / (hi - lo)


def brute_force_omega(hurst: float, gamma, T: float, kind: str, n_t: int = 400, n_s: int = 1200):
    """omega minimising int_0^T int (sum omega_k k_k(t, s) - k_B(t, s))^2 ds dt, the same objective
    as E int (B_hat - B)^2 written with the Wiener-integral kernels, discretised with exact cell
    averages and solved by least squares (SVD). Returns (omega, relative L2 error of the fit)."""
    a = hurst + 0.5
    ga = sp.gamma(a)
    t = (np.arange(n_t) + 0.5) * T / n_t
    edges = np.linspace(0.0, T, n_s + 1)
    if kind == "I":
        neg = -np.geomspace(40.0 / np.min(gamma), 1e-5, 500)
        edges = np.concatenate([neg, [0.0], edges[1:]])
    lo, hi = edges[:-1][None, :], edges[1:][None, :]
    width = (hi - lo)
    tt = t[:, None]
    target = _cell_avg_power(tt, np.maximum(lo, 0.0), np.maximum(hi, 1e-300), a) * (lo >= 0)
    cols = [_cell_avg_exp(tt, np.maximum(lo, 0.0), np.maximum(hi, 1e-300), g) * (lo >= 0) for g in gamma]
    if kind == "I":
        past = hi <= 0
        # (t - s)^(a-1) - (-s)^(a-1) averaged over cells with s < 0
        avg = (((tt - lo) ** a - (tt - hi) ** a) - ((-lo) ** a - (-hi) ** a)) / (a * width)
        target = target + np.where(past, avg, 0.0)
        cols = [c + np.where(past, (np.exp(g * hi) - np.exp(g * lo)) / (g * width) * (np.exp(-g * tt) - 1.0), 0.0)
                for c, g in zip(cols, gamma)]
    w = np.sqrt(width * T / n_t)
    X = np.stack([c * w for c in cols], -1).reshape(-1, len(gamma))
    y = (target * w / ga).reshape(-1)
    omega, *_ = np.linalg.lstsq(X, y, rcond=None)
    return omega, float(np.linalg.norm(X @ omega - y) / np.linalg.norm(y))


def joint_covariance(hurst: float, gamma, times, kind: str):
    """Covariance of (B^H(t_j))_j followed by (Yhat_k(t_j))_{k, j}, Yhat = Y - Y(0), at `times` > 0."""
    a = hurst + 0.5
    t = np.asarray(times, np.float64)
    T1, T2 = np.meshgrid(t, t, indexing="ij")  # T1[j, l] = t_j, T2 = t_l
    if kind == "II":
        lo_, hi_ = np.minimum(T1, T2), np.maximum(T1, T2)
        cbb = lo_**a * hi_ ** (a - 1) / (a * sp.gamma(a) ** 2) * sp.hyp2f1(1 - a, 1.0, a + 1, lo_ / hi_)
    else:
        v = 1.0 / (sp.gamma(2 * hurst + 1) * np.sin(np.pi * hurst))
        cbb = 0.5 * v * (T1 ** (2 * hurst) + T2 ** (2 * hurst) - np.abs(T1 - T2) ** (2 * hurst))
    K, n = len(gamma), len(t)
    cov = np.zeros(((K + 1) * n, (K + 1) * n))
    cov[:n, :n] = cbb
    for i, gi in enumerate(gamma):
        cyb = _cov_y_b(gi, T1, T2, a, kind)  # E[Yhat_i(t_j) B(t_l)]
        cov[(i + 1) * n:(i + 2) * n, :n] = cyb
        cov[:n, (i + 1) * n:(i + 2) * n] = cyb.T
        for j, gj in enumerate(gamma):
            cov[(i + 1) * n:(i + 2) * n, (j + 1) * n:(j + 2) * n] = _cov_y_y(gi, gj, T1, T2, kind)
    return cov


def _eq(a, x):
    return np.asarray(exp_gammaincc(a, np.asarray(x, np.float64), np), np.float64)


def _cov_y_b(g, t, s, a, kind):
    ga = g**a
    if kind == "II":
        later = np.exp(-g * np.maximum(t - s, 0)) * sp.gammainc(a, g * s) / ga
        earlier = (_eq(a, g * np.maximum(s - t, 0)) - np.exp(-g * t) * _eq(a, g * s)) / ga
        return np.where(t >= s, later, earlier)
    y_t = np.where(t >= s, np.exp(-g * np.maximum(t - s, 0)) * (-np.expm1(-g * s)) / ga,
                   (_eq(a, g * np.maximum(s - t, 0)) - np.exp(-g * t)) / ga)
    y_0 = (_eq(a, g * s) - 1.0) / ga
    return y_t - y_0


def _cov_y_y(gi, gj, t, s, kind):
    g = gi + gj
    if kind == "II":
        return np.where(t >= s, np.exp(-gi * np.maximum(t - s, 0)) * (-np.expm1(-g * s)),
                        np.exp(-gj * np.maximum(s - t, 0)) * (-np.expm1(-g * t))) / g
    c = lambda u, v: np.where(u >= v, np.exp(-gi * np.maximum(u - v, 0)), np.exp(-gj * np.maximum(v - u, 0))) / g
    z = np.zeros_like(t)
    return c(t, s) - c(t, z) - c(z, s) + c(z, z)


def mc_relative_error(hurst, gamma, omega, kind, n_times=100, n_paths=2000, seed=0):
    """Relative L2 error of B_hat = sum omega_k Yhat_k against B^H, from exact joint Cholesky samples."""
    times = (np.arange(n_times) + 0.5) / n_times
    cov = joint_covariance(hurst, gamma, times, kind)
    chol = np.linalg.cholesky(cov + 1e-10 * np.max(np.diag(cov)) * np.eye(cov.shape[0]))
    z = chol @ np.random.default_rng(seed).standard_normal((cov.shape[0], n_paths))
    b = z[:n_times]
    b_hat = np.einsum("k,kjp->jp", np.asarray(omega, np.float64), z[n_times:].reshape(len(gamma), n_times, n_paths))
    return float(np.sqrt(np.sum((b_hat - b) ** 2) / np.sum(b**2)))


def rl_fbm_paths(hurst, times, n_paths, seed):
    """Exact Riemann-Liouville (type II) fBM at `times` by Cholesky."""
    cov = joint_covariance(hurst, [1.0], times, "II")[: len(times), : len(times)]
    chol = np.linalg.cholesky(cov + 1e-12 * np.eye(len(times)))
    return (chol @ np.random.default_rng(seed).standard_normal((len(times), n_paths))).T
