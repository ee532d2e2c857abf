"""FunBaT (functional Bayesian Tucker decomposition): state-space priors, smoothing, both routes."""

from __future__ import annotations

import genvi.models.tucker_gp as tg
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from genvi.models.tucker_gp import _moments
from genvi.objectives import elbo

import genvi
from genvi import ConfigError, ShapeError



def _dense_gp(kernel, ell, var, x, y, noise, xs):
    """Exact GP regression posterior mean/variance at xs (float64 NumPy)."""
    k = lambda a, b: np.asarray(tg.matern_kernel(kernel, ell, var, jnp.asarray(a), jnp.asarray(b)), np.float64)  # noqa: E731
    Kxx = k(x, x) + noise * np.eye(len(x))
    Ksx = k(xs, x)
    mean = Ksx @ np.linalg.solve(Kxx, y)
    cov = k(xs, xs) - Ksx @ np.linalg.solve(Kxx, Ksx.T)
    return mean, np.diag(cov)


@pytest.mark.parametrize("kernel", [pytest.param("matern12", marks=pytest.mark.slow), "matern32",
                                    pytest.param("matern52", marks=pytest.mark.slow)])
def test_state_space_prior_covariance_is_the_matern_kernel(kernel):
    grid = np.sort(np.random.default_rng(0).uniform(0, 1, 12)).astype(np.float32)
    sde = tg.matern_sde(kernel, 0.3, 1.7)
    prior = tg.mode_prior(sde, jnp.asarray(grid), rank=2)
    A, Q, H = (np.asarray(a, np.float64) for a in (prior.A, prior.Q, prior.H))
    n = len(grid)
    marg, P = [], np.zeros_like(A[0])  # the chain's marginal covariances, from x_(-1) = 0
    for i in range(n):
        P = A[i] @ P @ A[i].T + Q[i]
        marg.append(P)
    cov = np.zeros((2, n, n))
    for i in range(n):  # Cov(x_j, x_i) = A_j … A_(i+1) P_i for j >= i
        c = marg[i]
        for j in range(i, n):
            c = c if j == i else A[j] @ c
            cov[:, j, i] = cov[:, i, j] = np.diag(H @ c @ H.T)
    K = tg.matern_kernel(kernel, 0.3, 1.7, jnp.asarray(grid), jnp.asarray(grid))
    for r in range(2):  # both functions of the mode follow the kernel
        np.testing.assert_allclose(cov[r], K, rtol=2e-4, atol=2e-4 * 1.7)
    # P∞ is stationary: F P + P Fᵀ + L Qc Lᵀ = 0, and Van Loan's Q equals P∞ − A P∞ Aᵀ
    F, Pinf, L, Qc = (np.asarray(a, np.float64) for a in (sde.F, sde.Pinf, sde.L, sde.Qc))
    lyap = F @ Pinf + Pinf @ F.T + L @ Qc @ L.T
    np.testing.assert_allclose(lyap, 0.0, atol=1e-4 * float(np.max(np.abs(L @ Qc @ L.T))))
    gaps = jnp.asarray([0.01, 0.05, 0.4, 2.0])

    @jax.jit
    def closed_and_direct(sde, gaps):
        A, Q = tg._ssm.discretise(sde, gaps)
        expm = jax.vmap(lambda t: jax.scipy.linalg.expm(sde.F * t))(gaps)
        return A, Q, expm, sde.Pinf - A @ sde.Pinf @ jnp.swapaxes(A, 1, 2)

    A, Q, expm, direct = closed_and_direct(sde, gaps)
    np.testing.assert_allclose(A, expm, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(Q, direct, atol=1e-4 * float(jnp.max(sde.Pinf)))


def _observations(seed=1, n=40):
    rng = np.random.default_rng(seed)
    x = rng.choice(np.linspace(0, 1, 25), n)  # duplicates on purpose: merged into one state
    y = np.sin(6 * x) + 0.1 * rng.normal(size=n)
    return x.astype(np.float32), y.astype(np.float32)


@pytest.mark.parametrize("kernel", ["matern12", pytest.param("matern32", marks=pytest.mark.slow)])
def test_kalman_smoother_and_interpolation_match_dense_gp_regression(kernel):
    x, y = _observations()
    noise = 0.05
    grid, inv = np.unique(x, return_inverse=True)
    prior = tg.mode_prior(tg.matern_sde(kernel, 0.2, 1.0), jnp.asarray(grid), rank=1)
    prec = np.bincount(inv, minlength=len(grid)) / noise  # merged Gaussian messages per coordinate
    shift = np.bincount(inv, weights=y, minlength=len(grid)) / noise
    path = tg.smooth(prior, jnp.asarray(prec, jnp.float32)[:, None, None], jnp.asarray(shift, jnp.float32)[:, None])
    mean, var = _dense_gp(kernel, 0.2, 1.0, x, y, noise, grid)
    np.testing.assert_allclose(path.mean[:, 0], mean, atol=2e-3)
    np.testing.assert_allclose(path.cov[:, 0, 0], var, atol=2e-3)
    # unseen coordinates: between grid points, before the first and after the last
    xs = np.array([-0.3, -0.01, 0.013, 0.51, 0.777, 1.0, 1.02, 1.5], np.float32)
    m, v = tg.interpolate(prior, tg.matern_sde(kernel, 0.2, 1.0), path, jnp.asarray(xs))
    mean, var = _dense_gp(kernel, 0.2, 1.0, x, y, noise, xs)
    np.testing.assert_allclose(m[:, 0], mean, atol=2e-3)
    np.testing.assert_allclose(v[:, 0, 0], var, atol=2e-3)
    # a grid with extra, unobserved points (tensor_data(..., grids=...)) gives the same posterior
    wide = np.unique(np.concatenate([grid, xs[1:5]]))
    data = tg.tensor_data(x[:, None], y, grids=[wide])
    np.testing.assert_array_equal(wide[data.index[:, 0]], x)
    on = np.searchsorted(wide, grid)
    prec_w = np.zeros(len(wide))
    shift_w = np.zeros(len(wide))
    prec_w[on], shift_w[on] = prec, shift
    prior_w = tg.mode_prior(tg.matern_sde(kernel, 0.2, 1.0), jnp.asarray(wide, jnp.float32), rank=1)
    path_w = tg.smooth(prior_w, jnp.asarray(prec_w, jnp.float32)[:, None, None],
                       jnp.asarray(shift_w, jnp.float32)[:, None])
    np.testing.assert_allclose(path_w.mean[on, 0], path.mean[:, 0], atol=1e-4)
    extra = np.searchsorted(wide, xs[1:5])
    np.testing.assert_allclose(path_w.mean[extra, 0], m[1:5, 0], atol=1e-4)
    np.testing.assert_allclose(path_w.cov[extra, 0, 0], v[1:5, 0, 0], atol=1e-4)
    with pytest.raises(ConfigError, match="not on grids"):
        tg.tensor_data(x[:, None], y, grids=[grid[1:]])


def test_kalman_update_stays_positive_definite_with_very_informative_coordinates():
    # thousands of entries per coordinate (US-TEMP's latitudes) make E[τ]·Λ H P Hᵀ ~ 10⁶: the
    # textbook P − KΛHP went indefinite in float32 (min eigenvalue −2e−4 here, variances off by
    # 19%), and the negative variances made the next EP messages indefinite
    rng = np.random.default_rng(0)
    n, R, ell, var = 40, 2, 0.1, 5.0
    grid = np.sort(rng.uniform(0, 1, n))
    prior = tg.mode_prior(tg.matern_sde("matern12", ell, var), jnp.asarray(grid, jnp.float32), rank=R)
    a = 30.0 + rng.normal(size=(n, 300, R))  # 300 entries per coordinate, large nearly collinear regressors
    lam = np.einsum("nea,neb->nab", a, a)
    eta = np.einsum("nea,ne->na", a, rng.normal(size=(n, 300)) + 50.0)
    path = tg.smooth(prior, jnp.asarray(lam, jnp.float32), jnp.asarray(eta, jnp.float32))
    K = np.kron(var * np.exp(-np.abs(grid[:, None] - grid[None]) / ell), np.eye(R))  # exact, float64
    prec = np.linalg.inv(K)
    for i in range(n):
        prec[i * R:(i + 1) * R, i * R:(i + 1) * R] += lam[i]
    C = np.linalg.inv(prec)
    cov = np.stack([C[i * R:(i + 1) * R, i * R:(i + 1) * R] for i in range(n)])
    H = np.asarray(prior.H)
    got = np.einsum("rd,nde,se->nrs", H, np.asarray(path.cov, np.float64), H)
    assert np.linalg.eigvalsh(got).min() > 0.5 * np.linalg.eigvalsh(cov).min() > 0
    np.testing.assert_allclose(np.diagonal(got, 0, 1, 2), np.diagonal(cov, 0, 1, 2), rtol=1e-2)
    np.testing.assert_allclose(np.asarray(path.mean) @ H.T, (C @ eta.reshape(-1)).reshape(n, R), atol=1e-3)


def test_gauss_markov_sample_and_marginals_follow_the_recursion():
    """`sample` and `marginals` equal the step-by-step recursion, written out in float64:
    `x_i = T_i x_(i-1) + b_i + L_i eps_i`, `P_i = T_i P_(i-1) T_iᵀ + L_i L_iᵀ`, and the
    lag-one cross-covariances `P_i T_(i+1)ᵀ`."""
    rng = np.random.default_rng(0)
    n, D = 9, 2
    T = 0.9 * rng.normal(size=(n, D, D)) / np.sqrt(D)
    b, L = rng.normal(size=(n, D)), np.tril(rng.normal(size=(n, D, D))) + 2 * np.eye(D)
    q = tg.GaussMarkov(*(jnp.asarray(a, jnp.float32) for a in (T, b, L)))
    key = jax.random.PRNGKey(3)
    draws = np.asarray(q.sample(key, (2,)))
    eps = np.asarray(jax.random.normal(key, (2, n, D)), np.float64)
    x, m, P = np.zeros((2, D)), np.zeros(D), np.zeros((D, D))
    means, covs, xs = [], [], []
    for i in range(n):
        x = x @ T[i].T + b[i] + eps[:, i] @ L[i].T
        m, P = T[i] @ m + b[i], T[i] @ P @ T[i].T + L[i] @ L[i].T
        xs.append(x), means.append(m), covs.append(P)
    marg = q.marginals()
    np.testing.assert_allclose(draws, np.stack(xs, 1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(marg.mean, np.stack(means), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(marg.cov, np.stack(covs), rtol=1e-4, atol=1e-4)
    cross = [covs[i] @ T[i + 1].T for i in range(n - 1)] + [np.zeros((D, D))]
    np.testing.assert_allclose(marg.cross, np.stack(cross), rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # (seconds of compilation; run with -m slow)
def test_gauss_markov_closed_form_kl_and_marginals_match_monte_carlo(key):
    grid = jnp.linspace(0.0, 1.0, 6)
    p = tg.GaussMarkov.from_prior(tg.mode_prior(tg.matern_sde("matern32", 0.3, 1.0), grid, rank=1))
    k1, k2 = jax.random.split(key)
    q = tg.GaussMarkov(p.trans * 0.9, 0.3 * jax.random.normal(k1, p.loc.shape), p.scale_tril * 0.7)


    @jax.jit  # one compilation for the sampling, densities, KL and marginals
    def run(q, p, k):
        xs = q.sample(k, (20_000,))
        return xs, q.log_prob(xs) - p.log_prob(xs), numpyro_kl(q, p), q.marginals()

    xs, log_ratio, kl, marg = run(q, p, k2)
    log_ratio, kl = np.asarray(log_ratio, np.float64), float(kl)
    se = log_ratio.std() / np.sqrt(len(log_ratio))
    assert abs(log_ratio.mean() - kl) < 5 * se
    emp = np.asarray(xs, np.float64)
    se_m = emp.std(0) / np.sqrt(len(emp))
    assert np.all(np.abs(emp.mean(0) - marg.mean) < 5 * se_m + 1e-6)
    cross = np.mean((emp[:, 2] - emp[:, 2].mean(0))[:, :, None] * (emp[:, 3] - emp[:, 3].mean(0))[:, None, :], 0)
    np.testing.assert_allclose(cross, marg.cross[2], atol=0.05 * float(jnp.max(jnp.abs(marg.cov[2]))))


def numpyro_kl(q, p):
    from numpyro.distributions.kl import kl_divergence

    return kl_divergence(q, p)


def test_tucker_moments_match_explicit_kronecker_products():
    rng = np.random.default_rng(3)
    ranks = (2, 3, 2)
    W = rng.normal(size=ranks)
    means = [rng.normal(size=r) for r in ranks]
    covs = [(lambda a: a @ a.T)(rng.normal(size=(r, r))) for r in ranks]
    seconds = [c + np.outer(m, m) for c, m in zip(covs, means)]
    S = (lambda a: a @ a.T)(rng.normal(size=(12, 12))) / 12
    j = lambda a: [jnp.asarray(v, jnp.float32) for v in a]  # noqa: E731
    z = np.kron(np.kron(means[0], means[1]), means[2])
    zz = np.kron(np.kron(seconds[0], seconds[1]), seconds[2])
    ef, ef2 = jax.jit(_moments.entry_moments)(jnp.asarray(W, jnp.float32), jnp.asarray(S, jnp.float32), j(means),
                                              j(seconds))
    w = W.reshape(-1)
    np.testing.assert_allclose(ef, w @ z, rtol=1e-4)
    np.testing.assert_allclose(ef2, w @ zz @ w + np.trace(S @ zz), rtol=1e-4)
    for k in range(3):  # a = W_(k) (⊗_(j≠k) u^j)
        Wk = np.moveaxis(W, k, 0).reshape(ranks[k], -1)
        o = [i for i in range(3) if i != k]
        ea, eaa = jax.jit(_moments.mode_moments, static_argnums=3)(jnp.asarray(W, jnp.float32), j(means),
                                                                   j(seconds), k)
        np.testing.assert_allclose(ea, Wk @ np.kron(means[o[0]], means[o[1]]), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(eaa, Wk @ np.kron(seconds[o[0]], seconds[o[1]]) @ Wk.T, rtol=1e-4, atol=1e-4)
    batch = [jnp.asarray(np.stack([s, 2 * s, s]), jnp.float32) for s in seconds]
    second_sum = jax.jit(_moments.kron_second_sum, static_argnames="chunk")(batch, chunk=2)
    np.testing.assert_allclose(second_sum, 10 * zz, rtol=1e-4, atol=1e-4)


def test_grouped_entry_statistics_equal_the_per_entry_sums():
    """EP's statistics summed once per distinct combination of the other modes' coordinates equal
    the plain sums over entries (duplicated combinations on purpose)."""
    from genvi.models.tucker_gp import _groups

    rng = np.random.default_rng(4)
    sizes, ranks = (3, 4, 5), (2, 3, 2)
    index = np.stack([rng.integers(0, n, 80) for n in sizes], 1).astype(np.int32)
    y = jnp.asarray(rng.normal(size=80), jnp.float32)
    means = [jnp.asarray(rng.normal(size=(n, r)), jnp.float32) for n, r in zip(sizes, ranks)]
    seconds = [jnp.asarray((lambda a: a @ np.swapaxes(a, 1, 2))(rng.normal(size=(n, r, r))), jnp.float32)
               for n, r in zip(sizes, ranks)]
    core = jnp.asarray(rng.normal(size=ranks), jnp.float32)
    groups = _groups.entry_groups(index, multiple=8)
    idx = jnp.asarray(index)

    @jax.jit
    def grouped_and_direct():
        ms = [m[idx[:, k]] for k, m in enumerate(means)]
        ss = [s[idx[:, k]] for k, s in enumerate(seconds)]
        out = []
        for k in range(3):
            ea, eaa = jax.vmap(lambda m, s: _moments.mode_moments(core, m, s, k))(ms, ss)
            direct = (jax.ops.segment_sum(eaa, idx[:, k], sizes[k]),
                      jax.ops.segment_sum(y[:, None] * ea, idx[:, k], sizes[k]))
            out.append((_groups.mode_stats(core, means, seconds, groups, idx, y, k), direct))
        z = _moments.kron_first(ms)
        out.append((_groups.core_stats(means, seconds, groups, idx, y), (_moments.kron_second_sum(ss), z.T @ y)))
        out.append(((_groups.core_fit(core, means, groups, idx),), (z @ core.reshape(-1),)))
        return out

    for grouped, direct in grouped_and_direct():
        for a, b in zip(grouped, direct):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))
    assert groups.combo[0].shape[0] % 8 == 0 and groups.combo[0].shape[0] >= len(np.unique(index[:, 1:], axis=0))


def test_core_update_in_float32_matches_float64_on_an_ill_conditioned_problem():
    # large, nearly collinear factor moments make Σₙ ⊗ Mₙ + I badly conditioned (~4e8 here; US-TEMP
    # Tucker R = 7 had ~8e6): solved directly in float32 the core mean is off by 100%+, in the
    # per-mode whitened basis it is within a few percent
    from genvi.models.tucker_gp import _core, _groups

    rng = np.random.default_rng(3)
    sizes, R = (6, 8, 10), 4
    index = np.stack(np.meshgrid(*[np.arange(n) for n in sizes], indexing="ij"), -1).reshape(-1, 3)
    means = [5.0 + rng.normal(size=(n, R)) * np.linspace(0.1, 1, R) for n in sizes]
    seconds = [np.einsum("na,nb->nab", m, m) + 0.01 * np.eye(R) for m in means]
    y = rng.normal(size=len(index)) + 5.0**3 * R
    P = R**3
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    out = jax.jit(_core.update_core, static_argnums=10)([f32(m) for m in means], [f32(s) for s in seconds], _groups.entry_groups(index),
                            jnp.asarray(index), f32(y), jnp.zeros((P, P), jnp.float32), jnp.zeros(P, jnp.float32),
                            tuple(jnp.eye(R) for _ in sizes), 1.0, 0.0, 1.0)
    kr = lambda v, i, j, k: np.kron(np.kron(v[0][i], v[1][j]), v[2][k])  # noqa: E731
    A = sum(kr(seconds, *ix) for ix in index) + np.eye(P)
    b = sum(yn * kr(means, *ix) for yn, ix in zip(y, index))
    w = np.linalg.solve(A, b)
    rel = lambda v: np.linalg.norm(np.asarray(v, np.float64) - w) / np.linalg.norm(w)  # noqa: E731
    assert rel(np.linalg.solve(A.astype(np.float32), b.astype(np.float32))) > 0.5  # the problem is hard
    assert rel(out[3]) < 0.05
    cov = np.linalg.inv(A)
    assert np.linalg.norm(np.asarray(out[4], np.float64) - cov) < 1e-3 * np.linalg.norm(cov)


def test_core_covariance_is_the_inverse_and_stays_positive_definite():
    from genvi.models.tucker_gp._core import core_cov

    _core_cov = lambda p, v: core_cov(p, jnp.eye(6, dtype=p.dtype) / v, 1.0 / v)  # noqa: E731

    rng = np.random.default_rng(5)
    a = rng.normal(size=(6, 4))
    prec = a @ a.T  # PSD of rank 4: singular, as a core precision from few distinct entries can be
    cov = np.asarray(_core_cov(jnp.asarray(prec, jnp.float32), 2.0), np.float64)
    np.testing.assert_allclose(cov, np.linalg.inv(prec + np.eye(6) / 2.0), rtol=1e-3, atol=1e-4)
    # round-off can make a summed precision slightly indefinite: the floor keeps cov ≤ core_var I
    bad = prec - 1e-2 * np.eye(6)  # two eigenvalues -0.01
    cov = np.asarray(_core_cov(jnp.asarray(bad, jnp.float32), 2.0), np.float64)
    lam = np.linalg.eigvalsh(0.5 * (cov + cov.T))
    assert np.all(np.isfinite(cov)) and lam.min() > 0 and lam.max() <= 2.0 * (1 + 1e-5)


def _small_synthetic():
    return tg.synthetic_surface(seed=1, size=8, num_grids=5)


SMALL_SPEC = tg.TuckerGP((1, 1), kernel="matern32", lengthscale=0.15, variance=0.5, cp=True, b0=1e-3)  # noise-free


@pytest.fixture(scope="module")
def small_ep():
    syn = _small_synthetic()
    return syn, tg.fit_ep(SMALL_SPEC, syn.train, num_iters=40, damping=0.1, damping_tau=0.2)


def test_ep_fits_the_synthetic_surface_and_predicts_unseen_coordinates_sensibly(small_ep):
    syn, res = small_ep
    assert res.train_rmse[-1] < 0.5 * res.train_rmse[0]
    scale = syn.test_y.std()
    m, v = res.posterior.predict(syn.test_coords)
    assert np.sqrt(np.mean((np.asarray(m) - syn.test_y) ** 2)) < 0.25 * scale
    mu, vu = res.posterior.predict(syn.unseen_coords)
    assert np.all(np.isfinite(mu)) and np.all(np.isfinite(vu)) and np.all(vu >= 0)
    assert np.sqrt(np.mean((np.asarray(mu) - syn.unseen_y) ** 2)) < 0.35 * scale
    # far outside the data the latent function returns to its prior: mean -> 0, variance -> σ²
    lm, lv = res.posterior.latent(0, jnp.asarray([0.5, 5.0]))
    assert abs(float(lm[1, 0])) < 1e-3 and abs(float(lv[1, 0, 0]) - 0.5) < 1e-2
    assert float(lv[1, 0, 0]) > float(lv[0, 0, 0])
    _, vn = res.posterior.predict(syn.test_coords, noise=True)
    np.testing.assert_allclose(vn - v, float(res.posterior.noise_var), rtol=1e-5)


def test_ep_and_vi_routes_agree_on_a_small_problem(small_ep):
    syn, ep = small_ep
    ep = ep.posterior
    vi = tg.fit_vi(SMALL_SPEC, syn.train, num_steps=1200, learning_rate=0.02, key=0).posterior
    m_ep, v_ep = ep.predict(syn.test_coords)
    m_vi, v_vi = vi.predict(syn.test_coords)
    scale = syn.test_y.std()
    rms = lambda a: float(np.sqrt(np.mean(np.square(a))))  # noqa: E731
    assert rms(m_vi - syn.test_y) < 0.35 * scale and rms(m_ep - syn.test_y) < 0.35 * scale
    assert rms(m_ep - m_vi) < 0.25 * scale
    # the sign of a rank-1 CP factor is not identified, but f is; both posteriors are sharp
    assert np.median(np.sqrt(v_vi)) < 0.5 * scale and np.median(np.sqrt(v_ep)) < 0.5 * scale


def _sited_chain(seed: int = 0, n: int = 30, site_scale: float = 3.0):
    """A Matérn-1/2 chain of two functions and its exact posterior under random Gaussian sites
    on each state (the Kalman smoother): the form of the mean-field optimum of every mode."""
    spec = tg.TuckerGP((2,), kernel="matern12", lengthscale=0.3, variance=1.5, cp=True)
    rng = np.random.default_rng(seed)
    prior = spec.priors([jnp.asarray(np.sort(rng.uniform(0, 1, n)), jnp.float32)])[0]
    X = rng.normal(size=(n, 2, 2))
    prec = jnp.asarray(site_scale * np.einsum("nij,nkj->nik", X, X), jnp.float32)
    shift = jnp.asarray(rng.normal(size=(n, 2)), jnp.float32)
    return prior, tg.smooth(prior, prec, shift)


def test_vi_family_holds_every_prior_times_sites_posterior():
    """The guide's transitions are the prior's after a Gaussian pseudo-observation of the new
    state: the smoother's exact posterior under random sites is in the family (its transitions
    recovered by `_site_of`, its step Choleskys as they are), and draws average to its means."""
    prior, post = _sited_chain()
    gm = tg.GaussMarkov.from_prior(prior)
    T, L = tg._vi._markov_params(post.mean, post.cov, post.cross, 1e-6)
    path = tg._vi._path(gm, post.mean, tg._vi._site_of(gm, T), tg._vi._untril(L))
    back = path.marginals()
    np.testing.assert_allclose(back.mean, post.mean, atol=1e-5)
    scale = float(jnp.max(post.cov))
    np.testing.assert_allclose(back.cov, post.cov, atol=5e-3 * scale)  # float32: 0.2% here
    np.testing.assert_allclose(back.cross[:-1], post.cross[:-1], atol=5e-3 * scale)
    draws = np.asarray(path.sample(jax.random.PRNGKey(0), (4000,)))
    se = draws.std(0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(0) - np.asarray(post.mean)) < 5 * se + 1e-6)


def test_vi_paths_never_grow_past_the_prior_whatever_the_parameters():
    """Free transitions drifted past |T| = 1.5 in long runs and sent paths (and the ELBO, to
    1e20) off. The pseudo-observation form contracts the prior's transitions for any parameter
    values, huge or tiny: with the prior's own step noise no marginal covariance exceeds the
    prior's stationary one (Matérn-1/2: P_i ⪯ s² I), and no transition the prior's norm."""
    prior, _ = _sited_chain()
    gm = tg.GaussMarkov.from_prior(prior)
    rng = np.random.default_rng(1)
    for spread in (1e-3, 1.0, 1e3):
        site = jnp.asarray(spread * rng.normal(size=(30, 2, 2)), jnp.float32)
        path = tg._vi._path(gm, jnp.zeros((30, 2)), site, tg._vi._untril(gm.scale_tril))
        assert float(jnp.max(jnp.linalg.eigvalsh(path.marginals().cov))) <= 1.5 * (1 + 1e-4)
        norms = jnp.linalg.norm(path.trans[1:], ord=2, axis=(-2, -1))
        assert bool(jnp.all(norms <= jnp.linalg.norm(gm.trans[1:], ord=2, axis=(-2, -1)) * (1 + 1e-5)))


def test_vi_guide_started_from_ep_predicts_as_ep(small_ep):
    """`init_guide(posterior=)` keeps EP's path means and step covariances exactly and projects
    its transitions (so the VI posterior predicts EP's means; variances close, not equal:
    Matérn-3/2's near-singular step noise is jittered in the guide's prior)."""
    syn, ep = small_ep
    post = ep.posterior
    priors = SMALL_SPEC.priors([jnp.asarray(g) for g in syn.train.grids])
    params = tg.init_guide(SMALL_SPEC, priors, posterior=post)
    back = tg.vi_posterior(SMALL_SPEC, priors, params)
    for a, b in zip(post.paths, back.paths):
        np.testing.assert_allclose(b.mean, a.mean, atol=1e-4)
    m_ep, v_ep = post.predict(syn.test_coords)
    m_vi, v_vi = back.predict(syn.test_coords)
    np.testing.assert_allclose(m_vi, m_ep, atol=1e-4)
    assert np.all(np.isfinite(v_vi)) and np.all(v_vi > 0)
    assert float(np.median(np.abs(v_vi - v_ep) / v_ep)) < 0.1


@pytest.mark.slow  # (seconds of compilation; run with -m slow)
def test_tucker_core_ep_reduces_error_on_a_three_mode_tensor():
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 1, (300, 3))
    y = np.sin(3 * coords[:, 0]) * np.cos(2 * coords[:, 1]) + coords[:, 2]
    data = tg.tensor_data(coords, y)
    spec = tg.TuckerGP((2, 2, 2), kernel="matern12", lengthscale=0.5, variance=1.0)
    res = tg.fit_ep(spec, data, num_iters=15)
    assert res.train_rmse[-1] < 0.5 * y.std()
    m, v = res.posterior.predict(rng.uniform(0, 1, (20, 3)))
    assert np.all(np.isfinite(m)) and np.all(np.isfinite(v))


def test_tucker_ep_with_heavy_core_damping_does_not_collapse_to_the_zero_solution():
    # Centred data and a heavily damped core (Beijing's rho_core = 0.9): damping the first sweep
    # towards the empty initial messages shrank the core to ~10% of its fit, and EP then sat at the
    # all-zero fixed point (train RMSE = y's std on every sweep). The first sweep is now undamped.
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 1, (400, 3))
    y = np.sin(2 * np.pi * coords[:, 0]) * np.cos(2 * np.pi * coords[:, 1]) * (1 + coords[:, 2])
    y = (y - y.mean()) / y.std()
    spec = tg.TuckerGP((2, 2, 2), kernel="matern12", lengthscale=0.5, variance=1.0)
    res = tg.fit_ep(spec, tg.tensor_data(coords, y), num_iters=20, damping=0.6, damping_core=0.9, damping_tau=0.6)
    assert res.train_rmse[-1] < 0.3, res.train_rmse
    assert float(jnp.linalg.norm(res.posterior.core_mean)) > 0.1


@pytest.mark.slow
def test_ep_with_a_callback_runs_the_same_sweeps_as_the_compiled_loop():
    syn = _small_synthetic()
    seen = []
    a = tg.fit_ep(SMALL_SPEC, syn.train, num_iters=4, damping=0.1, damping_tau=0.2)
    b = tg.fit_ep(SMALL_SPEC, syn.train, num_iters=4, damping=0.1, damping_tau=0.2,
                  callback=lambda it, post: seen.append(it))
    assert seen == [0, 1, 2, 3]
    np.testing.assert_allclose(a.train_rmse, b.train_rmse, rtol=1e-4)
    np.testing.assert_allclose(a.posterior.predict(syn.test_coords)[0], b.posterior.predict(syn.test_coords)[0],
                               rtol=1e-4, atol=1e-5)


def test_duplicates_are_merged_and_unsorted_input_is_sorted():
    syn = _small_synthetic()
    c, y = np.asarray(syn.train.coords), np.asarray(syn.train.y)
    perm = np.random.default_rng(0).permutation(len(y))
    shuffled = tg.tensor_data(c[perm], y[perm])
    assert all(np.array_equal(a, b) for a, b in zip(shuffled.grids, syn.train.grids))
    assert len(syn.train.grids[0]) < len(y)  # many entries share each coordinate: one state each
    np.testing.assert_array_equal(shuffled.grids[0][shuffled.index[:, 0]], c[perm, 0])
    with pytest.raises(ConfigError, match="unsorted"):
        tg.check_grid([0.0, 0.5, 0.2], "grid")
    with pytest.raises(ConfigError, match="duplicate"):
        tg.check_grid([0.0, 0.5, 0.5], "grid")


def test_bad_input_is_named():
    with pytest.raises(ConfigError, match="rank of mode 1"):
        tg.TuckerGP((2, 0))
    with pytest.raises(ConfigError, match="ranks"):
        tg.TuckerGP(0)
    with pytest.raises(ConfigError, match="one rank"):
        tg.TuckerGP((2, 3), cp=True)
    with pytest.raises(ConfigError, match="kernel"):
        tg.TuckerGP((2, 2), kernel="rbf")
    with pytest.raises(ConfigError, match="lengthscale"):
        tg.TuckerGP((2, 2), lengthscale=-1.0)
    with pytest.raises(ShapeError, match="variance has 3 entries"):
        tg.TuckerGP((2, 2), variance=(1.0, 1.0, 1.0))
    coords = np.array([[0.1, 0.2], [np.nan, 0.3]])
    with pytest.raises(ConfigError, match="NaN"):
        tg.tensor_data(coords, np.zeros(2))
    with pytest.raises(ShapeError, match="y must have shape"):
        tg.tensor_data(np.zeros((3, 2)), np.zeros(2))
    data = tg.tensor_data(np.random.default_rng(0).uniform(size=(10, 2)), np.zeros(10))
    with pytest.raises(ShapeError, match="2 modes"):
        tg.fit_ep(tg.TuckerGP((1, 1, 1)), data)
    with pytest.raises(ShapeError, match="2 modes"):
        tg.fit_vi(tg.TuckerGP((1, 1, 1)), data, num_steps=1)
    with pytest.raises(ConfigError, match="damping"):
        tg.fit_ep(tg.TuckerGP((1, 1)), data, damping=1.0)
    with pytest.raises(ShapeError, match="3 modes"):
        tg.tensor_data(np.zeros((4, 3)), np.zeros(4), num_modes=2)


@pytest.mark.slow  # (seconds of compilation; run with -m slow)
def test_factors_compose_with_another_likelihood_in_a_genvi_model():
    """The GP factors as a prior inside a user's own model: Poisson counts with f as log-rate."""
    rng = np.random.default_rng(0)
    data = tg.tensor_data(rng.uniform(size=(50, 2)), rng.poisson(3.0, 50).astype(np.float32))
    spec = tg.TuckerGP((2, 2), kernel="matern12", lengthscale=0.3, cp=True)
    priors = spec.priors([jnp.asarray(g) for g in data.grids])
    fac = tg.factors(spec, priors)
    import numpyro.distributions as dist

    @genvi.gen
    def counts(_, index, y):
        us, core = genvi.sample("f", fac())
        rate = jnp.exp(tg.entry_values(core, us, index))
        genvi.sample("y", dist.Poisson(rate).to_event(1), obs=y.astype(jnp.int32))  # counts are integers

    gfac = tg.guide_factors(spec, priors)

    @genvi.gen
    def counts_guide(params, index, y):
        genvi.sample("f", gfac(params))

    params = tg.init_guide(spec, priors, 0)
    obj = elbo(counts, counts_guide)
    value, grads = obj.value_and_grad_estimate(jax.random.PRNGKey(0), (None, params), jnp.asarray(data.index),
                                               jnp.asarray(data.y))
    assert np.isfinite(float(value))
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads[1]))


def test_funbat_data_loads_with_rescaled_coordinates():
    if tg._data.data_dir() is None:
        pytest.skip("FunBaT data not found: set GENVI_FUNBAT_DATA or place shared/data/funbat beside the repo")
    fold = tg.load_funbat("us_temp", 0)
    assert fold.ndims == (15, 95, 267)
    assert fold.train.coords.min() >= 0 and fold.train.coords.max() <= 1
    assert len(fold.train.y) + len(fold.test_y) == 55_944
