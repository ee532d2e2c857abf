"""Entry values of the Tucker / CP model and their moments under independent Gaussian factors.

An entry at grid positions (i₁ … i_K) is `f = vec(W)ᵀ (u¹(i₁) ⊗ … ⊗ u^K(i_K))` (C-order vec, so
`W` is a tensor of shape (R₁, …, R_K) contracted with u^k along axis k). CP is `W` the
superdiagonal all-ones tensor, `f = Σ_r Π_k u^k_r`; it is computed with Hadamard products
instead (`core=None`). The moment functions take, per entry and mode, the mean `m^k` (R_k,) and
second moment `M^k = E[u uᵀ]` (R_k, R_k) of independent factors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _along(t: jax.Array, mat: jax.Array, axis: int) -> jax.Array:
    """Contract tensor `t`'s `axis` with the first axis of `mat` (a vector or a matrix)."""
    out = jnp.tensordot(t, mat, axes=([axis], [0]))
    return out if mat.ndim == 1 else jnp.moveaxis(out, -1, axis)


def entry_value(core: jax.Array | None, us: list[jax.Array]) -> jax.Array:
    """`f` for one entry, given the factor values `us[k]` (R_k,)."""
    if core is None:
        return jnp.sum(jnp.prod(jnp.stack(us), axis=0))
    t = core
    for u in reversed(us):
        t = _along(t, u, t.ndim - 1)
    return t


def mode_moments(core: jax.Array | None, means: list, seconds: list, k: int):
    """`E[a]` (R_k,) and `E[a aᵀ]` (R_k, R_k) of `a = W_(k) ⊗_(j≠k) u^j` for one entry, so that
    `f = u^kᵀ a`; `core` is the mean of W (its covariance is not propagated here)."""
    others = [j for j in range(len(means)) if j != k]
    if core is None:
        return (jnp.prod(jnp.stack([means[j] for j in others]), axis=0),
                jnp.prod(jnp.stack([seconds[j] for j in others]), axis=0))
    wk = jnp.moveaxis(core, k, 0)
    ea, y = wk, wk
    for pos, j in reversed(list(enumerate(others, start=1))):
        ea = _along(ea, means[j], ea.ndim - 1)
        y = _along(y, seconds[j], pos)
    rk = wk.shape[0]
    return ea, y.reshape(rk, -1) @ wk.reshape(rk, -1).T


def entry_moments(core_mean: jax.Array | None, core_cov: jax.Array | None, means: list, seconds: list):
    """`E[f]` and `E[f²]` for one entry; `core_cov` is vec(W)'s covariance (P, P) or None."""
    if core_mean is None:
        return (jnp.sum(jnp.prod(jnp.stack(means), axis=0)),
                jnp.sum(jnp.prod(jnp.stack(seconds), axis=0)))
    ef = entry_value(core_mean, means)
    y = core_mean
    for j, s in enumerate(seconds):
        y = _along(y, s, j)
    ef2 = jnp.sum(y * core_mean)
    if core_cov is not None:
        K = len(seconds)
        sc = core_cov.reshape(core_mean.shape * 2)
        for j, s in enumerate(seconds):  # tr(S (⊗ M^j)): contract axis pair (j, K + j) with M^j
            sc = jnp.tensordot(sc, s, axes=([0, K - j], [0, 1]))
        ef2 = ef2 + sc
    return ef, ef2


def kron_second_sum(seconds: list[jax.Array], chunk: int = 2048) -> jax.Array:
    """`Σ_n ⊗_k M^k_n` (P, P) over entries, `seconds[k]` (N, R_k, R_k), in chunks of entries.

    The first K − 1 Kronecker factors are formed per entry and the last is contracted with a
    matrix product over the entries, so memory is `chunk × Π_(k<K) R_k²` and time O(N P²).
    """
    n = seconds[0].shape[0]
    ranks = [s.shape[1] for s in seconds]
    pad = (-n) % chunk
    seconds = [jnp.pad(s, ((0, pad), (0, 0), (0, 0))) for s in seconds]  # zeros add nothing

    def block(ss):
        x = ss[0]
        for s in ss[1:-1]:  # per-entry Kronecker of all but the last: (c, A, A) row-major
            x = jnp.einsum("nab,ncd->nacbd", x, s).reshape(x.shape[0], x.shape[1] * s.shape[1], -1)
        last = ss[-1]
        return jnp.einsum("nab,ncd->acbd", x, last).reshape(x.shape[1] * last.shape[1], -1)

    if len(seconds) == 1:
        return jnp.sum(seconds[0], axis=0)
    chunks = [s.reshape(-1, chunk, *s.shape[1:]) for s in seconds]
    total = jax.lax.map(block, chunks)
    del ranks
    return jnp.sum(total, axis=0)


def kron_first(means: list[jax.Array]) -> jax.Array:
    """Per-entry `⊗_k m^k_n` (N, P), `means[k]` (N, R_k)."""
    z = means[0]
    for m in means[1:]:
        z = jnp.einsum("na,nb->nab", z, m).reshape(z.shape[0], -1)
    return z
