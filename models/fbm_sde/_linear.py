"""Exact inference when the drift is linear: the augmented model is linear-Gaussian.

With b(x) = a x + c, constant sigma = s and D = 1, Z = (X, Y_1..Y_K) solves
dZ = (F Z + f) dt + L dW with

    F = [[a, -s (omega * gamma)^T], [0, -diag(gamma)]],  f = (c, 0),  L = (s sum(omega), 1, ..., 1),

so a Kalman filter gives the exact log evidence log p(o_1..o_n) (the ELBO's optimum) and an RTS
smoother the exact posterior marginals. Two discretisations of the same grid as the solver:
`"euler"` (Z_{n+1} = (I + F dt) Z_n + f dt + L dW_n: exactly the chain the Euler solver
simulates, for which the Girsanov term is the exact KL) and `"exact"` (matrix exponentials,
Van Loan's method: the continuous-time model). NumPy, float64.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from ._mafbm import gamma_grid, optimal_omega, stationary_covariance


def augmented_matrices(hurst: float, slope: float, offset: float, scale: float, num_processes: int,
                       gamma_max: float, horizon: float, kind: str = "II"):
    """(F, f, L) of the augmented linear SDE (module docstring)."""
    gamma = gamma_grid(num_processes, gamma_max)
    omega = np.asarray(optimal_omega(hurst, gamma, horizon, kind), np.float64)
    K = num_processes
    F = np.zeros((K + 1, K + 1))
    F[0, 0] = slope
    F[0, 1:] = -scale * omega * gamma
    F[1:, 1:] = -np.diag(gamma)
    f = np.zeros(K + 1)
    f[0] = offset
    L = np.concatenate([[scale * omega.sum()], np.ones(K)])
    return F, f, L


def _transition(F, f, L, dt: float, method: str):
    n = F.shape[0]
    if method == "euler":
        return np.eye(n) + F * dt, f * dt, np.outer(L, L) * dt
    Ft = np.zeros((n + 1, n + 1))
    Ft[:n, :n], Ft[:n, n] = F, f
    E = scipy.linalg.expm(Ft * dt)
    M = np.zeros((2 * n, 2 * n))
    M[:n, :n], M[:n, n:], M[n:, n:] = -F, np.outer(L, L), F.T
    V = scipy.linalg.expm(M * dt)
    Q = V[n:, n:].T @ V[:n, n:]
    return E[:n, :n], E[:n, n], 0.5 * (Q + Q.T)


def kalman(obs, grid, obs_times, F, f, L, noise: float, x0_mean: float, x0_var: float, kind: str,
           gamma, method: str = "euler", smooth: bool = False):
    """Log evidence of 1-D observations `obs` (n_obs,) of X at `obs_times` (on `grid`), and with
    `smooth=True` also the posterior mean and sd of X at every grid point."""
    n = F.shape[0]
    m = np.zeros(n)
    m[0] = x0_mean
    P = np.zeros((n, n))
    P[0, 0] = x0_var
    if kind == "I":
        P[1:, 1:] = stationary_covariance(gamma)
    grid = np.asarray(grid, np.float64)
    obs_index = {int(np.argmin(np.abs(grid - t))): i for i, t in enumerate(obs_times)}
    log_z, filtered, predicted, transitions = 0.0, [], [], []
    for j in range(len(grid)):
        if j > 0:
            A, c, Q = _transition(F, f, L, grid[j] - grid[j - 1], method)
            m, P = A @ m + c, A @ P @ A.T + Q
            transitions.append(A)
        predicted.append((m, P))
        if j in obs_index:
            y = obs[obs_index[j]]
            S = P[0, 0] + noise**2
            log_z += -0.5 * (np.log(2 * np.pi * S) + (y - m[0]) ** 2 / S)
            gain = P[:, 0] / S
            m, P = m + gain * (y - m[0]), P - np.outer(gain, P[0, :])
        filtered.append((m, P))
    if not smooth:
        return log_z
    ms, Ps = filtered[-1]
    means, sds = [ms[0]], [np.sqrt(max(Ps[0, 0], 0.0))]
    for j in range(len(grid) - 2, -1, -1):
        mf, Pf = filtered[j]
        mp, Pp = predicted[j + 1]
        G = Pf @ transitions[j].T @ np.linalg.pinv(Pp)
        ms, Ps = mf + G @ (ms - mp), Pf + G @ (Ps - Pp) @ G.T
        means.append(ms[0])
        sds.append(np.sqrt(max(Ps[0, 0], 0.0)))
    return log_z, np.array(means[::-1]), np.array(sds[::-1])
