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

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from genvi import ConfigError, ShapeError

from ._mafbm import gamma_grid, optimal_omega, stationary_covariance
from ._networks import AffineControl, ConstantDiffusion, LinearDrift


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


def _step_transitions(F, f, L, grid, method: str) -> list:
    """(A, c, Q) for every step of `grid`, each distinct step length computed once: uniform and
    graded grids repeat a few lengths, and the exact method's matrix exponentials dominate."""
    cache: dict = {}
    out = []
    for dt in np.diff(np.asarray(grid, np.float64)):
        key = round(float(dt), 12)
        if key not in cache:
            cache[key] = _transition(F, f, L, dt, method)
        out.append(cache[key])
    return out


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
    steps = _step_transitions(F, f, L, grid, method)
    for j in range(len(grid)):
        if j > 0:
            A, c, Q = steps[j - 1]
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
    for A, c, Q in _step_transitions(F, f, L, grid, method):
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


def family_optimum(obs, grid, obs_times, F, f, L, noise: float, x0: float, kind: str, gamma):
    """The best ELBO over per-step affine controls (`AffineControl`) on the Euler chain, exactly.

    -ELBO = E_Q[-sum_i log p(o_i | X(t_i))] + E_Q sum_n 1/2 u_n^2 dt_n is a linear-quadratic
    control problem on Z_{n+1} = A_n Z_n + c_n + L (u_n dt_n + dW_n), so a backward Riccati
    recursion solves it, and the optimal u_n is affine in Z_n. It is below the chain's log Z
    (`kalman`) because a shift cannot shrink a step's noise as the chain's posterior does; the
    difference vanishes as the steps before each observation shrink (`PathConfig(grading=...)`).
    `x0` is the fixed initial X (Y(0) = 0 for type II, stationary for type I). `obs` of shape
    (n_obs, paths) gives the summed best ELBO of independent paths (each with its own offsets).

    Returns (best ELBO, offsets (steps,) or (steps, paths), gains (steps, K + 1)) of the optimal
    control u_n = offset_n + gain_n . Z_n.
    """
    n = F.shape[0]
    obs = np.asarray(obs, np.float64)
    extra = obs.shape[1:]
    grid = np.asarray(grid, np.float64)
    obs_index = {int(np.argmin(np.abs(grid - t))): i for i, t in enumerate(obs_times)}
    e0 = np.eye(n)[0]
    # V(z) = 1/2 z'Pz - q'z + kappa: the optimal expected cost to go (per path: q, kappa)
    P, q, kappa = np.zeros((n, n)), np.zeros((n,) + extra), np.zeros(extra)

    def observe(P, q, kappa, j):
        if j not in obs_index:
            return P, q, kappa
        y = obs[obs_index[j]]
        return (P + np.outer(e0, e0) / noise**2, q + np.multiply.outer(e0, y) / noise**2,
                kappa + 0.5 * y**2 / noise**2 + 0.5 * np.log(2 * np.pi * noise**2))

    P, q, kappa = observe(P, q, kappa, len(grid) - 1)
    offsets, gains = [], []
    for j in range(len(grid) - 2, -1, -1):
        dt = grid[j + 1] - grid[j]
        A, c, _ = _transition(F, f, L, dt, "euler")
        Pv = P @ L
        s = 1.0 + dt * L @ Pv  # u* = -L'(P m - q) / s at the mean m = A z + c
        Lq = np.tensordot(L, q, axes=1)
        gains.append(-(Pv @ A) / s)
        offsets.append(-(Pv @ c - Lq) / s)
        P_min = P - dt * np.outer(Pv, Pv) / s
        q_min = q - dt * np.multiply.outer(Pv, Lq) / s
        kappa_min = kappa - 0.5 * dt * Lq**2 / s + 0.5 * dt * L @ Pv
        Pc = P_min @ c
        kappa = kappa_min + 0.5 * c @ Pc - np.tensordot(c, q_min, axes=1)
        q = A.T @ (q_min - (Pc if q_min.ndim == 1 else Pc[:, None]))
        P = A.T @ P_min @ A
        P, q, kappa = observe(P, q, kappa, j)
    m0 = np.zeros(n)
    m0[0] = x0
    cov0 = np.zeros((n, n))
    if kind == "I":
        cov0[1:, 1:] = stationary_covariance(gamma)
    value = 0.5 * m0 @ P @ m0 + 0.5 * np.trace(P @ cov0) - np.tensordot(m0, q, axes=1) + kappa
    return -np.sum(value), np.asarray(offsets[::-1]), np.asarray(gains[::-1])


def optimal_control(sde, config, obs, noise: float, floor: float | None = None):
    """The `AffineControl` at the exact optimum of the ELBO for a linear prior (`family_optimum`).

    For `LinearDrift` + `ConstantDiffusion`, D = 1, fixed x0 (`config.x0`) and observations `obs`
    of shape (paths, n_obs, 1), the best control of the family solves a Riccati recursion: this
    writes it into an `AffineControl(config.grid, ..., floor=floor)`. Why: it is the exact E-step
    of variational EM over the prior's parameters (H, slope, scale): by the envelope theorem the
    ELBO's gradient in those at the optimal control is the gradient of the family's best ELBO.
    It is also a warm start for a trained control. NumPy, float64; not differentiable.
    """
    if not (isinstance(sde.drift, LinearDrift) and isinstance(sde.diffusion, ConstantDiffusion) and sde.dim == 1):
        raise ConfigError("optimal_control needs a linear prior: FractionalSDE(LinearDrift, ConstantDiffusion, dim=1); "
                          f"got drift {type(sde.drift).__name__}, diffusion {type(sde.diffusion).__name__}, dim {sde.dim}")
    if config.x0 is None:
        raise ConfigError("optimal_control needs a fixed initial state: PathConfig(..., x0=[value])")
    obs = np.asarray(obs, np.float64)
    if obs.ndim != 3 or obs.shape[1:] != (len(config.obs_times), 1):
        raise ShapeError(f"optimal_control: obs must have shape (paths, n_obs, 1) = (paths, {len(config.obs_times)}, 1), "
                         f"got {obs.shape}")
    F, f, L = augmented_matrices(float(sde.hurst), float(sde.drift.slope), float(sde.drift.offset),
                                 float(np.exp(sde.diffusion.log_scale)), sde.num_processes, sde.gamma_max,
                                 config.horizon, sde.fbm_type)
    _, offsets, gains = family_optimum(obs[..., 0].T, config.grid, config.obs_times, F, f, L, noise,
                                       config.x0[0], sde.fbm_type, sde.gamma)
    control = AffineControl(config.grid, 1, sde.num_processes, num_paths=obs.shape[0], obs_times=config.obs_times,
                            floor=floor)
    scale = np.asarray(control.scale)
    return eqx.tree_at(lambda c: (c.offset, c.gain), control,
                       (jnp.asarray(offsets.reshape(len(scale), -1).T / scale, jnp.float32)[..., None],
                        jnp.asarray(gains / scale[:, None], jnp.float32)[:, None, :]))
