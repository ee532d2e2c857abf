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


def ard_bayesian_pca(x: np.ndarray, iterations: int = 2000, tol: float = 1e-2, seed: int = 0) -> int:
    """Bishop's Bayesian PCA: the number of columns whose |w_j|^2 stays above `tol` times the
    largest (pruned columns shrink towards zero geometrically)."""
    n, d = x.shape
    q = d - 1
    xc = x - x.mean(0)
    s = xc.T @ xc / n
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, q)) * np.sqrt(np.trace(s) / d / q)
    noise = np.trace(s) / d
    for _ in range(iterations):
        alpha = d / np.maximum((w ** 2).sum(0), 1e-12)
        m_inv = np.linalg.inv(w.T @ w + noise * np.eye(q))
        sw = s @ w
        ezz = noise * m_inv + m_inv @ w.T @ sw @ m_inv  # (1/n) sum_n E[z z^T]
        w_new = sw @ m_inv @ np.linalg.inv(ezz + noise * np.diag(alpha) / n)
        noise = (np.trace(s) - 2 * np.trace(w_new @ m_inv @ sw.T) + np.trace(ezz @ w_new.T @ w_new)) / d
        w = w_new
    norms = (w ** 2).sum(0)
    return int((norms > tol * norms.max()).sum())
