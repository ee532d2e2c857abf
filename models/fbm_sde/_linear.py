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
    `smooth=True` also the posterior mean and sd of X at every grid point. `obs` of shape
    (n_obs, paths) gives the summed log evidence of independent paths (smoothing: one path)."""
    n = F.shape[0]
    obs = np.asarray(obs, np.float64)
    m = np.zeros((n,) + obs.shape[1:])
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
            m, P = A @ m + (c if m.ndim == 1 else c[:, None]), A @ P @ A.T + Q
            transitions.append(A)
        predicted.append((m, P))
        if j in obs_index:
            y = obs[obs_index[j]]
            S = P[0, 0] + noise**2
            log_z += np.sum(-0.5 * (np.log(2 * np.pi * S) + (y - m[0]) ** 2 / S))
            gain = P[:, 0] / S
            m = m + (gain * (y - m[0]) if m.ndim == 1 else gain[:, None] * (y - m[0])[None, :])
            P = P - np.outer(gain, P[0, :])
        filtered.append((m, P))
    if not smooth:
        return log_z
    return (log_z, *_dense_posterior(obs, grid, obs_index, F, f, L, predicted[0], noise, method))


def _dense_posterior(obs, grid, obs_index, F, f, L, initial, noise, method):
    """Posterior mean and sd of X at every grid point by conditioning the joint prior Gaussian of
    X on the grid (Cov(X_j, X_i) = e_0^T A_j ... A_{i+1} P_i e_0) on the observations: exact and,
    unlike an RTS smoother, stable when the augmented covariance is nearly singular."""
    m, P = initial
    means, covs, steps = [m], [P], []
    for j in range(1, len(grid)):
        A, c, Q = _transition(F, f, L, grid[j] - grid[j - 1], method)
        m, P = A @ m + c, A @ P @ A.T + Q
        means.append(m)
        covs.append(P)
        steps.append(A)
    n = len(grid)
    C = np.zeros((n, n))
    for i in range(n):
        v = covs[i][:, 0]
        C[i, i] = v[0]
        for j in range(i + 1, n):
            v = steps[j - 1] @ v
            C[j, i] = C[i, j] = v[0]
    mu = np.array([mm[0] for mm in means])
    o = np.array(sorted(obs_index))
    y = np.array([obs[obs_index[k]] for k in o])
    S = C[np.ix_(o, o)] + noise**2 * np.eye(len(o))
    W = np.linalg.solve(S, C[o, :]).T  # (n, n_obs)
    post_mean = mu + W @ (y - mu[o])
    post_var = np.diag(C) - np.sum(W * C[:, o], axis=1)
    return post_mean, np.sqrt(np.maximum(post_var, 0.0))
