"""Classical choices of the PPCA dimension, for comparison with ELBO selection.

- `minka_mle`: scikit-learn's `PCA(n_components="mle")` (Minka 2000, Laplace evidence).
- `bic_ml_ppca`: BIC of the maximum-likelihood PPCA fit (Tipping & Bishop 1999, closed form
  from the sample covariance's eigenvalues).
- `ard_bayesian_pca`: Bayesian PCA (Bishop 1999): EM for PPCA with one ARD precision
  `alpha_j = d / |w_j|^2` per column, started with `d - 1` columns; the columns it keeps are
  its choice.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA


def minka_mle(x: np.ndarray) -> int:
    return int(PCA(n_components="mle", svd_solver="full").fit(x).n_components_)


def _eigenvalues(x: np.ndarray) -> np.ndarray:
    xc = x - x.mean(0)
    return np.sort(np.linalg.eigvalsh(xc.T @ xc / len(x)))[::-1]


def ml_ppca_log_likelihood(x: np.ndarray, k: int) -> float:
    """The maximised PPCA log likelihood with k components (noise = mean discarded eigenvalue)."""
    n, d = x.shape
    lam = np.maximum(_eigenvalues(x), 1e-12)
    noise = lam[k:].mean()
    return -0.5 * n * (d * np.log(2 * np.pi) + np.log(lam[:k]).sum() + (d - k) * np.log(noise) + d)


def bic_ml_ppca(x: np.ndarray, kmax: int) -> int:
    """argmin over k = 1..kmax of -2 log L + p log n, p = d + d k - k (k - 1) / 2 + 1."""
    n, d = x.shape
    bic = [-2 * ml_ppca_log_likelihood(x, k) + (d + d * k - k * (k - 1) / 2 + 1) * np.log(n)
           for k in range(1, kmax + 1)]
    return int(np.argmin(bic)) + 1


def ard_bayesian_pca(x: np.ndarray, iterations: int = 500, tol: float = 1e-2, seed: int = 0) -> np.ndarray | int:
    """Bishop's Bayesian PCA: the number of columns whose |w_j|^2 stays above `tol` times the
    largest (pruned columns shrink towards zero geometrically). `x` is `[n, d]` or a stack
    `[S, n, d]` of data sets (then one choice per data set, computed in one batched loop)."""
    single = x.ndim == 2
    x = x[None] if single else x
    _, n, d = x.shape
    q = d - 1
    xc = x - x.mean(1, keepdims=True)
    s = np.einsum("snd,sne->sde", xc, xc) / n
    var = np.trace(s, axis1=1, axis2=2) / d  # [S]
    w = np.random.default_rng(seed).normal(size=(len(x), d, q)) * np.sqrt(var / q)[:, None, None]
    noise, eye = var.copy(), np.eye(q)
    for _ in range(iterations):
        alpha = d / np.maximum((w ** 2).sum(1), 1e-12)  # [S, q]
        m_inv = np.linalg.inv(np.swapaxes(w, 1, 2) @ w + noise[:, None, None] * eye)
        sw = s @ w
        ezz = noise[:, None, None] * m_inv + m_inv @ np.swapaxes(w, 1, 2) @ sw @ m_inv  # (1/n) sum E[z z^T]
        reg = noise[:, None, None] * alpha[:, :, None] * eye / n
        w_new = sw @ m_inv @ np.linalg.inv(ezz + reg)
        noise = (np.trace(s, axis1=1, axis2=2) - 2 * np.trace(w_new @ m_inv @ np.swapaxes(sw, 1, 2), axis1=1, axis2=2)
                 + np.trace(ezz @ np.swapaxes(w_new, 1, 2) @ w_new, axis1=1, axis2=2)) / d
        w = w_new
    norms = (w ** 2).sum(1)
    ks = (norms > tol * norms.max(1, keepdims=True)).sum(1)
    return int(ks[0]) if single else ks
