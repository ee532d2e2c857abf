"""Route (b), genvi's: the model and a structured variational family as generative functions.

Model: each mode's state path `"f/u{k}" ~ GaussMarkov` (its Matérn state-space prior), the core
`"f/W" ~ N(0, v I)` (Tucker only), `"tau" ~ Gamma(a₀, b₀)`, and the entries `"obs"` in a
`"data"` plate, `y_n ~ N(f_n, τ⁻¹)`. Guide: a `GaussMarkov` per mode (coupling a mode's R
functions) with free step Choleskys and transitions that are the prior's after a free Gaussian
pseudo-observation of the new state (the form of every prior × sites posterior, and never
expanding; see `_transitions`), a diagonal Gaussian core and a log-normal τ. The guide stores
each path's *marginal* means (the step offsets `b_i = m_i − T_i m_(i−1)` are derived), so a
change to one state's mean does not shift every later state: with raw offsets Adam crawled at
rank ≥ 5. `fit_vi` maximises
`genvi.objectives.elbo` (closed-form KLs where registered) with `genvi.vi.fit` on minibatches
of entries, scaled by N/B. `factors(spec, priors)` is the prior on (paths, core) alone, a
generative function other genvi models can `sample` under any address and combine with their
own likelihood (`entry_values` evaluates f at entries).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax

import genvi
import genvi.vi as vi
from genvi import ConfigError, ShapeError, gen, sample
from genvi.objectives import elbo

from ._markov import GaussMarkov
from ._moments import entry_value
from ._posterior import TuckerPosterior
from ._spec import TensorData, TuckerGP
from ._ssm import ModePrior


def entry_values(core: jax.Array | None, us: list[jax.Array], index: jax.Array) -> jax.Array:
    """f at entries: `us[k]` (n_k, R_k) function values on mode k's grid, `index` (N, K)."""
    return jax.vmap(lambda i: entry_value(core, [u[i[k]] for k, u in enumerate(us)]))(index)


def _values(prior: ModePrior, path: jax.Array) -> jax.Array:
    return path @ prior.H.T  # (n, D) states -> (n, R) function values


def factors(spec: TuckerGP, priors: list[ModePrior]) -> genvi.GenerativeFunction:
    """The prior over every mode's paths (`"u{k}"`) and the core (`"W"`); returns `(us, core)`."""
    paths = [GaussMarkov.from_prior(p) for p in priors]

    @gen
    def tucker_factors():
        us = [_values(p, sample(f"u{k}", d)) for k, (p, d) in enumerate(zip(priors, paths))]
        core = None
        if not spec.cp:
            sd = jnp.sqrt(spec.core_var) * jnp.ones(spec.ranks, priors[0].A.dtype)
            core = sample("W", dist.Normal(jnp.zeros_like(sd), sd).to_event(spec.num_modes))
        return us, core

    return tucker_factors


def model(spec: TuckerGP, priors: list[ModePrior]) -> genvi.GenerativeFunction:
    """`model(None, index, y)`: FunBaT's joint density over factors, core, τ and the entries."""
    fac = factors(spec, priors)

    @gen
    def entry(us, core, tau, idx, y):
        f = entry_value(core, [u[idx[k]] for k, u in enumerate(us)])
        sample("y", dist.Normal(f, jax.lax.rsqrt(tau)), obs=y)

    entries = genvi.vmap(entry, in_axes=(None, None, None, 0, 0), plate="data")

    @gen
    def tucker_model(_params, index, y):
        us, core = sample("f", fac())
        tau = sample("tau", dist.Gamma(spec.a0, spec.b0))
        sample("obs", entries(us, core, tau, index, y))

    return tucker_model


def _tril(raw: jax.Array) -> jax.Array:
    diag = jax.nn.softplus(jnp.diagonal(raw, axis1=-2, axis2=-1))
    eye = jnp.eye(raw.shape[-1], dtype=raw.dtype)
    return jnp.tril(raw, -1) + diag[..., None] * eye


def _untril(L: jax.Array) -> jax.Array:
    d = jnp.diagonal(L, axis1=-2, axis2=-1)
    raw_diag = d + jnp.log(-jnp.expm1(-d))  # inverse softplus
    eye = jnp.eye(L.shape[-1], dtype=L.dtype)
    return jnp.tril(L, -1) + raw_diag[..., None] * eye


def _transitions(prior: GaussMarkov, site: jax.Array) -> jax.Array:
    """`T = (I + QΛ)⁻¹ A`: the prior's transition after a Gaussian pseudo-observation of the new
    state, with `Λ = L_Q^−ᵀ G Gᵀ L_Q^−1` whitened by the prior's step Cholesky (`site` is G,
    (n, D, D)), i.e. `T = L_Q (I + G Gᵀ)⁻¹ L_Q^−1 A`. Every "prior × Gaussian sites" posterior
    (the mean-field optimum among them) has transitions of this form, and they never expand the
    prior's (`T A⁻¹` is similar to `(I + G Gᵀ)⁻¹`, eigenvalues in (0, 1]): free transitions drifted
    past |T| = 1.5 and sent long runs to RMSE 55 (US-TEMP R = 7, 10,000 steps), a path's
    deviations growing geometrically along the chain."""
    A, LQ = prior.trans, prior.scale_tril
    eye = jnp.eye(A.shape[-1], dtype=A.dtype)
    W = jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(eye + site @ site.swapaxes(-1, -2)), True),
                                   jnp.broadcast_to(eye, A.shape))
    return LQ @ W @ jax.scipy.linalg.solve_triangular(LQ, A, lower=True)


def _site_of(prior: GaussMarkov, trans: jax.Array) -> jax.Array:
    """The `site` whose transitions are closest to `trans` (exact for a prior × sites posterior):
    `W = L_Q^−1 T A^−1 L_Q`, symmetrised, its eigenvalues clipped to (0, 1]."""
    A, LQ = prior.trans, prior.scale_tril
    W = jax.scipy.linalg.solve_triangular(LQ, trans @ jnp.linalg.inv(A) @ LQ, lower=True)
    lam, V = jnp.linalg.eigh(0.5 * (W + W.swapaxes(-1, -2)))
    lam = jnp.clip(lam, 1e-6, 1.0)
    return V * jnp.sqrt(1.0 / lam - 1.0)[..., None, :]


def _path(prior: GaussMarkov, mean: jax.Array, site: jax.Array, raw_tril: jax.Array) -> GaussMarkov:
    """The Gauss-Markov path with transitions from `site` (`_transitions`), marginal means `mean`
    (offsets `b_i = m_i − T_i m_(i−1)` derived) and free step Choleskys."""
    T = _transitions(prior, site)
    prev = jnp.concatenate([jnp.zeros_like(mean[:1]), mean[:-1]])
    return GaussMarkov(T, mean - jnp.einsum("nij,nj->ni", T, prev), _tril(raw_tril))


def guide_factors(spec: TuckerGP, priors: list[ModePrior]) -> genvi.GenerativeFunction:
    """The structured family over `factors`' sites (`"u{k}"`, `"W"`): `guide_factors(spec, priors)(params)`."""
    paths = [GaussMarkov.from_prior(p) for p in priors]

    @gen
    def tucker_guide_factors(params):
        for k, prior in enumerate(paths):
            sample(f"u{k}", _path(prior, params["mean"][k], params["site"][k], params["tril"][k]))
        if not spec.cp:
            sample("W", dist.Normal(params["core_loc"], jax.nn.softplus(params["core_raw"])).to_event(spec.num_modes))

    return tucker_guide_factors


def guide(spec: TuckerGP, priors: list[ModePrior]) -> genvi.GenerativeFunction:
    """`guide(params, index, y)`: the structured family; `params` from `init_guide`."""
    fac = guide_factors(spec, priors)

    @gen
    def tucker_guide(params, index, y):
        sample("f", fac(params))
        sample("tau", dist.LogNormal(params["tau_loc"], jax.nn.softplus(params["tau_raw"])))

    return tucker_guide


def _markov_params(path_mean, path_cov, cross, jitter: float):
    """The exact Markov (T, L) of a Gaussian path with given marginals and cross-covariances."""
    D = path_mean.shape[-1]
    eye = jnp.eye(D, dtype=path_mean.dtype)
    Pprev = path_cov[:-1] + jitter * eye
    T = jnp.linalg.solve(Pprev, cross[:-1]).swapaxes(-1, -2)  # Cov(x_i, x_(i-1)) P_(i-1)^-1
    T = jnp.concatenate([eye[None], T])
    Pp = jnp.concatenate([jnp.zeros((1, D, D), path_mean.dtype), path_cov[:-1]])
    S = path_cov - T @ Pp @ T.swapaxes(-1, -2)
    return T, jnp.linalg.cholesky(0.5 * (S + S.swapaxes(-1, -2)) + jitter * eye)


def data_scale(spec: TuckerGP, y) -> tuple[float, float]:
    """A factor scale c and noise precision that put the initial model on the data's scale:
    `U(0, 2c)` factor means make `E[f]` ≈ mean(y) (CP: R c^K; Tucker with a U(0, 1) core:
    ½ R^K c^K); τ starts at 1 / var(y)."""
    y = np.asarray(y, np.float64)
    K, P = spec.num_modes, float(np.prod(spec.ranks))
    per = abs(y.mean()) / (spec.ranks[0] if spec.cp else 0.5 * P)
    return 2.0 * max(per, 1e-3) ** (1.0 / K), 1.0 / max(y.var(), 1e-12)


def init_guide(spec: TuckerGP, priors: list[ModePrior], key: jax.Array | int = 0, *, init_scale: float = 1.0,
               scale: float = 0.1, posterior: TuckerPosterior | None = None, tau: float = 1.0) -> dict[str, Any]:
    """Guide parameters: random means `U(0, init_scale)` (as EP's start), transitions 0.99 × the
    prior's, `scale` × the prior's step Choleskys and τ near `tau`; or the Markov form of
    `posterior`'s paths (means and step covariances exactly, transitions projected)."""
    key = jax.random.PRNGKey(key) if isinstance(key, int) else key
    keys = jax.random.split(key, spec.num_modes + 1)
    dtype = priors[0].A.dtype
    params: dict[str, Any] = {"mean": [], "site": [], "tril": []}
    for k, p in enumerate(priors):
        prior = GaussMarkov.from_prior(p)
        if posterior is not None:
            path = posterior.paths[k]
            m = path.mean
            T, L = _markov_params(path.mean, path.cov, path.cross, 1e-6)
            site = _site_of(prior, T)
        else:
            n, D = p.A.shape[0], p.A.shape[-1]
            m = init_scale * jax.random.uniform(keys[k], (n, spec.ranks[k]), dtype) @ p.H
            site = jnp.broadcast_to(0.1 * jnp.eye(D, dtype=dtype), p.A.shape)  # (I + G Gᵀ)⁻¹ = 0.99 I
            L = scale * prior.scale_tril
        params["mean"].append(m)
        params["site"].append(site)
        params["tril"].append(_untril(L))
    if not spec.cp:
        if posterior is not None:
            params["core_loc"] = posterior.core_mean
            sd = jnp.sqrt(jnp.diagonal(posterior.core_cov)).reshape(spec.ranks)
        else:
            params["core_loc"] = jax.random.uniform(keys[-1], spec.ranks, dtype)
            sd = jnp.full(spec.ranks, 0.1, dtype)
        params["core_raw"] = sd + jnp.log(-jnp.expm1(-sd))
    params["tau_loc"] = jnp.asarray(np.log(tau), dtype)
    params["tau_raw"] = jnp.asarray(-2.0, dtype)
    return params


def vi_posterior(spec: TuckerGP, priors: list[ModePrior], params: dict[str, Any]) -> TuckerPosterior:
    """The `TuckerPosterior` of trained guide parameters (paths' marginals, core, E[1/τ])."""
    paths = tuple(_path(GaussMarkov.from_prior(p), params["mean"][k], params["site"][k], params["tril"][k]).marginals()
                  for k, p in enumerate(priors))
    core_mean = core_cov = None
    if not spec.cp:
        core_mean = params["core_loc"]
        core_cov = jnp.diag(jax.nn.softplus(params["core_raw"]).reshape(-1) ** 2)
    s = jax.nn.softplus(params["tau_raw"])
    noise_var = jnp.exp(-params["tau_loc"] + 0.5 * s**2)
    return TuckerPosterior(spec, tuple(priors), paths, core_mean, core_cov, noise_var)


class VIResult(NamedTuple):
    """`posterior`, the trained guide `params` and `fit`'s `FitResult` (losses per step)."""

    posterior: TuckerPosterior
    params: dict[str, Any]
    fit: vi.FitResult


def fit_vi(spec: TuckerGP, data: TensorData, *, num_steps: int, batch_size: int | None = None,
           learning_rate: float | optax.Schedule = 1e-2, key: int = 0, analytic_kl: bool = True,
           init: dict | None = None, init_scale: float | None = None, progress: bool = False,
           **fit_kwargs) -> VIResult:
    """Train the structured family on the ELBO with `genvi.vi.fit` (Adam), minibatching entries.

    `learning_rate`: Adam's rate, a float or an optax schedule.
    `init`: guide parameters to start from (default `init_guide(spec, priors, key)` with
    `init_scale` and τ from `data_scale` unless `init_scale` is given: small Adam steps need a
    start on the data's scale, where EP's large steps do not); other keyword arguments go to
    `genvi.vi.fit` (checkpoints, callbacks, mesh, ...).
    """
    if len(data.grids) != spec.num_modes:
        raise ShapeError(f"fit_vi: data has {len(data.grids)} modes but the model has {spec.num_modes} (len(ranks))")
    if batch_size is not None and not 1 <= batch_size <= data.y.shape[0]:
        raise ConfigError(f"fit_vi: batch_size must be in 1..{data.y.shape[0]} (the entries), got {batch_size}")
    dtype = jnp.asarray(data.y).dtype
    priors = spec.priors([jnp.asarray(g) for g in data.grids], dtype)
    c, tau = data_scale(spec, data.y)
    if init is None:
        init = init_guide(spec, priors, key, init_scale=c if init_scale is None else init_scale,
                          tau=tau if init_scale is None else 1.0)
    params = init
    objective = elbo(model(spec, priors), guide(spec, priors), analytic_kl=analytic_kl)
    res = vi.fit(objective, (None, params), jnp.asarray(data.index), jnp.asarray(data.y), num_steps=num_steps,
                 batch_size=batch_size, optimizer=optax.adam(learning_rate), key=key, progress=progress,
                 **fit_kwargs)
    gparams = res.params[1]
    return VIResult(vi_posterior(spec, priors, gparams), gparams, res)

