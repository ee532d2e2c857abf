"""Baselines for benchmarks/tucker_gp.py: masked CP / Tucker ALS on the discrete grid, product-kernel GP.

- `als`: masked alternating least squares over the observed entries only, in float64 NumPy
  (our own code; tensorly's masked solvers need the dense tensor, 313M cells for Beijing).
  Each factor row is a ridge regression (`ridge` × (mean diagonal + 1) × I added to its normal
  equations, a relative ridge), as is the Tucker core; Tucker's scale is free between factors
  and core, so each factor's columns are rescaled to unit RMS after its update and the scales
  moved into the core. Float32 normal
  equations overflowed/lost rank in the earlier JAX version (NaN for Tucker and CP R=5); float64
  with the ridge stays finite. Factors start from U(0, 1). A test index never seen in training
  takes the factor row of the nearest seen index of its mode.
- `gp_product`: exact GP regression with a product of Matérn-3/2 kernels over the K coordinates,
  conditioned on a random 2,000-entry subsample, hyperparameters by Adam on the marginal
  likelihood of 300 of them (100 steps), constant mean.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.sparse as sp

import genvi.models.tucker_gp as tg

def _nearest(seen: np.ndarray, x: np.ndarray) -> np.ndarray:
    pos = np.clip(np.searchsorted(seen, x), 0, len(seen) - 1)
    left = np.clip(pos - 1, 0, len(seen) - 1)
    return np.where(np.abs(seen[left] - x) < np.abs(seen[pos] - x), left, pos)


def _kron_rows(rows: list[np.ndarray]) -> np.ndarray:
    """Row-wise Kronecker product of (N, R_j) arrays, C order: (N, Π R_j)."""
    z = np.ones((rows[0].shape[0], 1)) if not rows else rows[0]
    for r in rows[1:]:
        z = (z[:, :, None] * r[:, None, :]).reshape(z.shape[0], -1)
    return z


def _design(U, core, index, k):
    """a_n (N, R_k) with f_n = U_k[i_k(n)] · a_n."""
    others = [U[j][index[:, j]] for j in range(len(U)) if j != k]
    if core is None:
        return np.prod(np.stack(others), axis=0)
    wk = np.moveaxis(core, k, 0).reshape(core.shape[k], -1)
    return _kron_rows(others) @ wk.T


def _core_solve(U, index, y, ridge, group):
    """Ridge LS for vec(W): zᵀz and zᵀy summed per combination of the first K − 1 modes."""
    L = len(U) - 1
    member, G = group
    onehot = sp.csr_matrix((np.ones(len(y)), (member, np.arange(len(y)))), shape=(G, len(y)))
    first = np.zeros((G, L), np.int64)
    first[member] = index[:, :L]
    v = _kron_rows([U[j][first[:, j]] for j in range(L)])  # (G, A)
    u = U[L][index[:, L]]
    S = onehot @ (u[:, :, None] * u[:, None, :]).reshape(len(y), -1)  # (G, R_L²)
    t = onehot @ (y[:, None] * u)  # (G, R_L)
    A, R = v.shape[1], u.shape[1]
    zz = ((v[:, :, None] * v[:, None, :]).reshape(G, -1).T @ S).reshape(A, A, R, R)
    zz = zz.transpose(0, 2, 1, 3).reshape(A * R, A * R)
    zy = (v.T @ t).reshape(-1)
    return np.linalg.solve(zz + ridge * (np.trace(zz) / (A * R) + 1.0) * np.eye(A * R), zy)


def als(train: tg.TensorData, test_coords: np.ndarray, ranks: tuple[int, ...], cp: bool, sweeps: int = 30,
        ridge: float = 1e-3, seed: int = 0) -> np.ndarray:
    """Masked CP / Tucker ALS (float64, ridge) on the grid of the training coordinates."""
    data = tg.tensor_data(train.coords, train.y)  # the observed coordinates only, as categories
    rng = np.random.default_rng(seed)
    index, y = data.index.astype(np.int64), data.y.astype(np.float64)
    N, K = index.shape
    U = [rng.uniform(0, 1, (len(g), r)) for g, r in zip(data.grids, ranks)]
    core = None if cp else rng.uniform(0, 1, ranks)
    onehots = [sp.csr_matrix((np.ones(N), (index[:, k], np.arange(N))), shape=(len(data.grids[k]), N))
               for k in range(K)]
    group = None
    if not cp:
        _, member = np.unique(index[:, :-1], axis=0, return_inverse=True)
        group = (member.reshape(-1), int(member.max()) + 1)
    for _ in range(sweeps):
        for k in range(K):
            a = _design(U, core, index, k)
            r = ranks[k]
            lhs = (onehots[k] @ (a[:, :, None] * a[:, None, :]).reshape(N, -1)).reshape(-1, r, r)
            rhs = onehots[k] @ (y[:, None] * a)
            scale = np.trace(lhs, axis1=1, axis2=2)[:, None, None] / r + 1.0  # ridge relative to each row
            U[k] = np.linalg.solve(lhs + ridge * scale * np.eye(r), rhs[..., None])[..., 0]
            if core is not None:
                norms = np.sqrt(np.mean(U[k] ** 2, axis=0)) + 1e-12  # unit RMS columns
                U[k] = U[k] / norms
                core = np.moveaxis(np.moveaxis(core, k, -1) * norms, -1, k)
        if core is not None:
            core = _core_solve(U, index, y, ridge, group).reshape(ranks)
    idx = np.stack([_nearest(g.astype(np.float64), test_coords[:, k]) for k, g in enumerate(data.grids)], 1)
    a = _design(U, core, idx, 0)
    return np.sum(U[0][idx[:, 0]] * a, axis=1)


def _kernel(p, A, B):
    k = jnp.exp(p["log_var"])
    for j in range(A.shape[1]):
        r = jnp.abs(A[:, j, None] - B[None, :, j]) * jnp.sqrt(3.0) / jnp.exp(p["log_ell"][j])
        k = k * (1 + r) * jnp.exp(-r)
    return k


def _gram(p, A):
    return _kernel(p, A, A) + (jnp.exp(p["log_noise"]) + 1e-5) * jnp.eye(A.shape[0])


@functools.partial(jax.jit, static_argnames=("fit_size", "steps"))
def _gp_fit(X, y, fit_size: int, steps: int):
    """Adam on the marginal likelihood of the first `fit_size` entries; weights on all of X."""
    mu = y.mean()
    Xf, yf = X[:fit_size], y[:fit_size]

    def nll(p):
        L = jnp.linalg.cholesky(_gram(p, Xf))
        a = jax.scipy.linalg.cho_solve((L, True), yf - mu)
        return 0.5 * (yf - mu) @ a + jnp.sum(jnp.log(jnp.diag(L)))

    span = X.max(0) - X.min(0) + 1e-6
    p = {"log_ell": jnp.log(0.2 * span), "log_var": jnp.log(jnp.var(y)), "log_noise": jnp.log(0.1 * jnp.var(y))}
    opt = optax.adam(0.05)

    def step(carry, _):
        p, state = carry
        upd, state = opt.update(jax.grad(nll)(p), state)
        return (optax.apply_updates(p, upd), state), None

    (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), None, length=steps)
    L = jnp.linalg.cholesky(_gram(p, X))
    return p, mu, jax.scipy.linalg.cho_solve((L, True), y - mu)


def gp_product(train: tg.TensorData, test_coords: np.ndarray, subsample: int = 2000, fit_subsample: int = 300,
               steps: int = 100, seed: int = 0) -> np.ndarray:
    """Exact GP regression, product Matérn-3/2 kernel: hyperparameters by `steps` Adam steps on the
    marginal likelihood of `fit_subsample` entries, prediction conditioned on `subsample` entries
    (the fit subset included)."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(train.y), min(subsample, len(train.y)), replace=False)
    X, y = jnp.asarray(train.coords[pick], jnp.float32), jnp.asarray(train.y[pick], jnp.float32)
    p, mu, alpha = _gp_fit(X, y, min(fit_subsample, len(pick)), steps)
    out = [mu + _kernel(p, jnp.asarray(test_coords[i:i + 4096]), X) @ alpha for i in range(0, len(test_coords), 4096)]
    return np.asarray(jnp.concatenate(out))
