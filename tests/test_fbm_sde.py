"""Tests of the fractional-noise SDE family (models/fbm_sde): MA-fBM weights, the H = 1/2 limit,
the Girsanov KL, gradients in H, shapes, exact linear-Gaussian references and bad input."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.integrate
import scipy.special

import genvi
import genvi.models.fbm_sde as F
from genvi.objectives import elbo

# --- omega(H): closed form against quadrature ---------------------------------------------------


def _kernels(kind, a, gamma_i):
    """Wiener-integral kernels k(t, s) of Yhat_i(t) = Y_i(t) - Y_i(0) and of B^H(t)."""
    if kind == "II":
        k_y = lambda t, s: np.exp(-gamma_i * (t - s)) * (s < t)
        k_b = lambda t, s: (t - s) ** (a - 1) / scipy.special.gamma(a) * (s < t)
    else:
        k_y = lambda t, s: np.exp(-gamma_i * (t - s)) - (s < 0) * np.exp(gamma_i * s)
        k_b = lambda t, s: ((t - s) ** (a - 1) - (s < 0) * np.abs(s) ** (a - 1)) / scipy.special.gamma(a)
    return k_y, k_b


def _quad_b(kind, hurst, gamma_i, T=1.0):
    """b_i = int_0^T E[Yhat_i(t) B^H(t)] dt by nested quadrature over the kernels (u = t - s, with
    u = v^(1/a) taking out the singularity of (t - s)^(a - 1))."""
    a = hurst + 0.5
    k_y, k_b = _kernels(kind, a, gamma_i)

    def inner(t):
        recent = scipy.integrate.quad(lambda v: k_y(t, t - v ** (1 / a)) * k_b(t, t - v ** (1 / a))
                                      * v ** (1 / a - 1) / a, 0, t**a, limit=200)[0]
        if kind == "II":
            return recent
        past = scipy.integrate.quad(lambda s: k_y(t, s) * k_b(t, s), -np.inf, 0, limit=200)[0]
        return recent + past

    return scipy.integrate.quad(inner, 0, T, limit=100)[0]


@pytest.mark.parametrize("kind", ["II", "I"])
def test_omega_system_matches_quadrature(kind):
    gamma = F.gamma_grid(3, 20.0)
    for hurst in (0.2, 0.7):
        A, b = F.omega_system(hurst, gamma, 1.0, kind, xp=np)
        for i in (0, 2):
            assert b[i] == pytest.approx(_quad_b(kind, hurst, gamma[i]), rel=1e-5)
        # A_ij = int_0^T int k_i k_j ds dt; for i = j the inner integral is the OU variance
        g = 2 * gamma[1]
        var = (lambda t: -np.expm1(-g * t) / g) if kind == "II" else (lambda t: (2 - 2 * np.exp(-gamma[1] * t)) / g)
        assert A[1, 1] == pytest.approx(scipy.integrate.quad(var, 0, 1)[0], rel=1e-7)
        omega = np.asarray(F.optimal_omega(hurst, gamma, 1.0, kind))
        assert np.allclose(omega, np.linalg.solve(A, b), rtol=1e-5)


def test_exp_gammaincc_is_stable_and_continuous():
    a = jnp.array([0.6, 1.0, 1.4])
    for x in (0.5, 10.0, 24.0):
        exact = scipy.special.gammaincc(np.asarray(a, np.float64), x) * np.exp(x)
        assert np.allclose(F.exp_gammaincc(a, jnp.float32(x)), exact, rtol=1e-5)
    below, above = F.exp_gammaincc(a, jnp.float32(24.999)), F.exp_gammaincc(a, jnp.float32(25.001))
    assert np.allclose(below, above, rtol=1e-4)
    big = F.exp_gammaincc(a, jnp.float32(500.0))  # Q underflows and e^x overflows in float32
    assert np.all(np.isfinite(big)) and np.allclose(big[1], 1.0) and np.allclose(big, 500.0 ** (a - 1) / scipy.special.gamma(a), rtol=1e-2)


def test_omega_gradient_matches_finite_differences():
    gamma = F.gamma_grid(5, 20.0)
    for kind in ("I", "II"):
        f = lambda h: jnp.sum(F.optimal_omega(jax.nn.sigmoid(h), gamma, 1.0, kind) * jnp.arange(1.0, 6.0))
        h, eps = -0.4, 1e-3
        fd = (float(f(h + eps)) - float(f(h - eps))) / (2 * eps)
        assert float(jax.jit(jax.grad(f))(h)) == pytest.approx(fd, rel=2e-3)
        assert np.allclose(jax.vmap(f)(jnp.array([h, h])), float(f(h)))


# --- the H = 1/2 limit -----------------------------------------------------------------------


def test_half_reduces_to_brownian_motion():
    for K in (3, 5):
        gamma = F.gamma_grid(K, 20.0)
        omega = np.asarray(F.optimal_omega(0.5, gamma, 1.0, "II"), np.float64)
        assert abs(omega.sum() - 1.0) < 2e-3  # exact only as K grows: 1.0019 (K=3), 1.00001 (K=5)
        assert F.approximation_error(0.5, gamma, 1.0, "II") < 3e-3
        # type I at H = 1/2: B_hat(t) = sum_k omega_k (Y_k(t) - Y_k(0)) with sum omega = 1
        assert abs(float(F.optimal_omega(0.5, gamma, 1.0, "I").sum()) - 1.0) < 2e-2


@eqx.filter_jit
def _prior_paths(sde, config, keys):
    return jax.vmap(lambda k: F.solve(sde, None, jnp.zeros(1), 0, config, k))(keys)


def test_prior_paths_have_the_ma_fbm_variance_and_shapes():
    """Var X(t) of dX = dB_hat (zero drift) is omega^T C(t) omega, C_ij = (1 - e^{-g t})/g for
    type II; at H = 1/2 that is t (Brownian motion) to the approximation error."""
    K, n = 3, 4000
    times = np.array([0.25, 0.5, 1.0])
    config = F.PathConfig(times, dt=0.05, brownian="grid")
    for hurst in (0.5, 0.25):
        sde = F.FractionalSDE(F.LinearDrift(0.0), F.ConstantDiffusion(1.0), hurst, num_processes=K)
        paths = _prior_paths(sde, config, jax.random.split(jax.random.PRNGKey(1), n))
        assert paths.shape == (n, 3, 1 * (K + 1) + 2)
        omega, gamma = np.asarray(sde.omega(1.0), np.float64), sde.gamma
        g = gamma[:, None] + gamma[None, :]
        dt = 0.05  # the Euler chain's own covariance: Y_{n+1} = (1 - gamma dt) Y_n + dW_n
        for j, t in enumerate(times):
            steps = int(round(t / dt))
            decay = (1 - gamma[:, None] * dt) * (1 - gamma[None, :] * dt)
            C = dt * (1 - decay**steps) / (1 - decay)
            exact = omega @ C @ omega
            x = np.asarray(paths[:, j, 0], np.float64)
            se = np.sqrt(2.0 / n) * x.var()
            assert abs(x.var() - exact) < 5 * se, (hurst, t, x.var(), exact)
            if hurst == 0.5:
                assert abs(omega @ (-np.expm1(-g * t) / g) @ omega - t) < 0.01 * t


# --- the Girsanov KL against a closed form -------------------------------------------------------


def _linear_control_kl(sde, config, gain_x, x0):
    """E_Q int 1/2 u^2 dt for u = gain_x * X on the Euler chain, from its exact second moments."""
    F_, _, L = F.augmented_matrices(float(sde.hurst), -1.0, 0.0, 1.0, sde.num_processes, sde.gamma_max,
                                    config.horizon, sde.fbm_type)
    kappa = np.zeros(F_.shape[0])
    kappa[0] = gain_x
    M = np.zeros(F_.shape[0])
    M[0] = x0
    S = np.outer(M, M)
    kl = 0.0
    for t0, t1 in zip(config.grid[:-1], config.grid[1:]):
        dt = t1 - t0
        kl += 0.5 * gain_x**2 * S[0, 0] * dt
        A = np.eye(F_.shape[0]) + (F_ + np.outer(L, kappa)) * dt
        S = A @ S @ A.T + np.outer(L, L) * dt
    return kl


def test_girsanov_kl_matches_closed_form_on_an_ou_posterior():
    """Prior dX = -X dt + dB_hat^H, posterior control u = -2 X: KL = E_Q int 1/2 u^2 dt in closed
    form; the full log dQ/dP (with int u dW) has the same mean."""
    K, n, gain = 3, 4000, -2.0
    config = F.PathConfig([0.5, 1.0], dt=0.05, brownian="grid", girsanov="full")
    sde = F.FractionalSDE(F.LinearDrift(-1.0), F.ConstantDiffusion(1.0), 0.3, num_processes=K)
    control = F.AffineControl(config.grid, 1, K)
    control = eqx.tree_at(lambda c: c.gain, control, control.gain.at[:, 0, 0].set(gain))
    path = F.PosteriorPath(sde, control, jnp.ones(1), 0, config)
    values = jax.jit(jax.vmap(path.rsample))(jax.random.split(jax.random.PRNGKey(2), n))
    exact = _linear_control_kl(sde, config, gain, 1.0)
    expected = np.asarray(values[:, -1, -2], np.float64)
    full = np.asarray(path.log_prob(values), np.float64)
    for est in (expected, full):
        assert abs(est.mean() - exact) < 5 * est.std() / np.sqrt(n), (est.mean(), exact)
    assert full.std() > expected.std()  # the martingale term adds variance, not bias


# --- the family inside genvi: shapes, ELBO against the Kalman filter, gradient in H ------------


def _problem(hurst=0.3, girsanov="expected"):
    K, paths = 3, 2
    times = np.array([0.3, 0.6, 1.0])
    config = F.PathConfig(times, dt=0.1, brownian="grid", x0=[0.0], girsanov=girsanov)
    sde = F.FractionalSDE(F.LinearDrift(-1.0), F.ConstantDiffusion(1.0), hurst, num_processes=K)
    posterior = F.Posterior(sde, F.AffineControl(config.grid, 1, K, num_paths=paths), num_paths=paths)
    obs = jnp.array([[0.2, -0.1, 0.4], [-0.3, 0.1, 0.0]])[..., None]
    return config, posterior, F.ObsModel(0.3), obs, jnp.arange(paths), F.model(config, 1, K), F.guide(config)


def _prior_marginals(config, Fm, f, L):
    """Mean and sd of X on the grid under the Euler chain (x0 = 0, type II)."""
    m, P, means, sds = np.zeros(Fm.shape[0]), np.zeros(Fm.shape), [0.0], [0.0]
    for t0, t1 in zip(config.grid[:-1], config.grid[1:]):
        A = np.eye(Fm.shape[0]) + Fm * (t1 - t0)
        m, P = A @ m + f * (t1 - t0), A @ P @ A.T + np.outer(L, L) * (t1 - t0)
        means.append(m[0])
        sds.append(np.sqrt(P[0, 0]))
    return np.array(means), np.array(sds)


def test_shapes_and_prior_elbo_against_kalman():
    config, posterior, obs_model, obs, index, model, guide = _problem()
    trace = guide.simulate(jax.random.PRNGKey(0), posterior, obs, index)
    assert trace.choices["path"].shape == (2, 3, 1 * 4 + 2)
    assert model.log_density(trace.choices, obs_model, obs, index).shape == ()
    # with u = 0 the ELBO is E_prior log p(o | X) <= log Z; the Kalman filter gives log Z
    objective = elbo(model, guide, particles=1)
    n = 2000
    values = jax.jit(jax.vmap(lambda k: objective.estimate(k, (obs_model, posterior), obs, index)))(
        jax.random.split(jax.random.PRNGKey(3), n))
    values = np.asarray(values, np.float64)
    sde = posterior.sde
    Fm, f, L = F.augmented_matrices(0.3, -1.0, 0.0, 1.0, 3, 20.0, config.horizon)
    log_z = sum(F.kalman(np.asarray(obs[p, :, 0]), config.grid, config.obs_times, Fm, f, L, 0.3, 0.0, 0.0,
                         "II", sde.gamma) for p in range(2))
    # E_prior log p(o|X) in closed form from the prior marginals (Kalman with no observations)
    prior_ll = 0.0
    for p in range(2):
        mean, sd = _prior_marginals(config, Fm, f, L)
        at = [int(np.argmin(np.abs(np.asarray(config.grid) - t))) for t in config.obs_times]
        o = np.asarray(obs[p, :, 0])
        prior_ll += np.sum(-0.5 * np.log(2 * np.pi * 0.09) - ((o - mean[at]) ** 2 + sd[at] ** 2) / (2 * 0.09))
    assert abs(values.mean() - prior_ll) < 5 * values.std() / np.sqrt(n)
    assert prior_ll < log_z


def test_elbo_gradient_in_hurst_matches_finite_differences():
    """With fixed noise (same key) the ELBO estimate is a smooth function of h = logit H."""
    config, posterior, obs_model, obs, index, model, guide = _problem()
    objective = elbo(model, guide, particles=8)
    key = jax.random.PRNGKey(4)

    @jax.jit
    def value(h):
        p = eqx.tree_at(lambda q: q.sde.hurst_logit, posterior, h)
        return objective.estimate(key, (obs_model, p), obs, index)

    grads = objective.grad_estimate(key, (obs_model, posterior), obs, index)
    h, eps = float(posterior.sde.hurst_logit), 1e-2
    fd = (float(value(jnp.float32(h + eps))) - float(value(jnp.float32(h - eps)))) / (2 * eps)
    assert float(grads[1].sde.hurst_logit) == pytest.approx(fd, rel=2e-2, abs=1e-2)


def test_kalman_matches_dense_gaussian():
    """The Kalman log evidence equals the dense Gaussian marginal of the same Euler chain."""
    K, grid, obs_times = 2, np.linspace(0, 1, 6), [0.4, 1.0]
    Fm, f, L = F.augmented_matrices(0.7, -0.5, 0.1, 0.8, K, 10.0, 1.0, "I")
    gamma = F.gamma_grid(K, 10.0)
    obs, noise = np.array([0.3, -0.4]), 0.2
    # dense: Z_n = A Z_{n-1} + c + L dW; stack the means and covariances
    A, c, Q = np.eye(K + 1) + Fm * 0.2, f * 0.2, np.outer(L, L) * 0.2
    m, P = np.zeros(K + 1), np.zeros((K + 1, K + 1))
    m[0], P[0, 0] = 0.5, 0.3
    P[1:, 1:] = F.stationary_covariance(gamma)
    states = [(m, P)]
    cross = {0: P}
    for _ in range(5):
        m, P = A @ m + c, A @ P @ A.T + Q
        states.append((m, P))
    i, j = 2, 5  # grid indices of 0.4 and 1.0
    cov_ij = (np.linalg.matrix_power(A, j - i) @ states[i][1])[0, 0]
    mean = np.array([states[i][0][0], states[j][0][0]])
    cov = np.array([[states[i][1][0, 0], cov_ij], [cov_ij, states[j][1][0, 0]]]) + noise**2 * np.eye(2)
    dense = -0.5 * (np.log(np.linalg.det(2 * np.pi * cov)) + (obs - mean) @ np.linalg.solve(cov, obs - mean))
    del cross
    assert F.kalman(obs, grid, obs_times, Fm, f, L, noise, 0.5, 0.3, "I", gamma) == pytest.approx(dense, rel=1e-10)


# --- graded grids and the family's exact optimum (LQR) ------------------------------------------


def test_graded_grid_refines_before_each_observation():
    times, dt, ratio, floor = np.array([0.3, 0.6, 1.0]), 0.05, 0.1, 1e-3
    grid = F.solver_grid(times, dt, grading=(ratio, floor))
    assert grid[0] == 0.0 and set(times) <= set(grid.tolist()) and np.all(np.diff(grid) > 0)
    steps = np.diff(grid)
    nxt = times[np.searchsorted(times, grid[1:] - 1e-12)]  # the observation each step runs towards
    tau_end = nxt - grid[1:]  # the step ends tau before it
    assert np.all(steps <= np.minimum(dt, ratio * (tau_end + floor)) * (1 + 1e-9) + 1e-12)
    assert steps[-1] == pytest.approx(ratio * floor)  # the last step before an observation is ratio * floor
    assert F.PathConfig(times, dt=dt, grading=(ratio, floor)).grid == tuple(grid.tolist())
    with pytest.raises(genvi.ConfigError, match="grading"):
        F.PathConfig(times, dt=dt, grading=(0.0, 1e-3))


def _optimal_bridge(grading):
    K, H, noise = 3, 0.3, 0.1
    config = F.PathConfig([0.5, 1.0], dt=0.05, brownian="grid", x0=[0.0], grading=grading)
    Fm, f, L = F.augmented_matrices(H, -1.0, 0.0, 1.0, K, 20.0, 1.0)
    obs = np.array([0.5, 1.0])
    args = (obs, config.grid, config.obs_times, Fm, f, L, noise)
    log_z = F.kalman(*args, 0.0, 0.0, "II", F.gamma_grid(K, 20.0))
    return config, obs, log_z, F.family_optimum(*args, 0.0, "II", F.gamma_grid(K, 20.0))


def test_family_optimum_is_attained_by_affine_control():
    """The Riccati solution, written into a preconditioned AffineControl, gives a Monte Carlo ELBO
    equal to the claimed best ELBO; that is below log Z and closes on it as the grid is graded."""
    K, n = 3, 2000
    config, obs, log_z, (best, offsets, gains) = _optimal_bridge((0.05, 0.003))
    _, _, log_z_flat, (best_flat, _, _) = _optimal_bridge(None)
    assert best < log_z and best_flat < log_z_flat
    assert log_z - best < 0.1 < log_z_flat - best_flat
    sde = F.FractionalSDE(F.LinearDrift(-1.0), F.ConstantDiffusion(1.0), 0.3, num_processes=K)
    control = F.optimal_control(sde, config, obs[None, :, None], 0.1, floor=0.003)
    assert np.allclose(control.effective()[1][:, 0, :], gains, rtol=1e-5, atol=1e-5)
    assert np.allclose(control.effective()[0][0, :, 0], offsets, rtol=1e-5, atol=1e-5)
    params = (F.ObsModel(0.1), F.Posterior(sde, control))
    data = jnp.asarray(obs, jnp.float32)[None, :, None]
    for girsanov in ("full", "expected"):
        objective = elbo(F.model(config, 1, K), F.guide(config.with_girsanov(girsanov)))
        values = jax.jit(jax.vmap(lambda k: objective.estimate(k, params, data, jnp.arange(1))))(
            jax.random.split(jax.random.PRNGKey(5), n))
        values = np.asarray(values, np.float64)
        assert abs(values.mean() - best) < 5 * values.std() / np.sqrt(n), (girsanov, values.mean(), best)


def test_elbo_gradient_in_hurst_at_the_optimal_control_is_the_family_optimum_derivative():
    """Envelope theorem, the basis of variational EM over H: at the exact optimal control (held
    fixed), genvi's stochastic ELBO gradient in h = logit H is unbiased for d/dh of the family's
    best ELBO (finite differences of `family_optimum`), for two paths with their own offsets."""
    K, H, noise, n = 3, 0.3, 0.1, 1000
    config = F.PathConfig([0.5, 1.0], dt=0.05, brownian="grid", x0=[0.0], grading=(0.2, 0.003))
    obs = np.array([[0.5, 1.0], [-0.3, 0.2]])

    def best(h):
        Fm, f, L = F.augmented_matrices(1 / (1 + np.exp(-h)), -1.0, 0.0, 1.0, K, 20.0, 1.0)
        return F.family_optimum(obs.T, config.grid, config.obs_times, Fm, f, L, noise, 0.0, "II", F.gamma_grid(K, 20.0))[0]

    h, eps = float(np.log(H / (1 - H))), 1e-4
    exact = (best(h + eps) - best(h - eps)) / (2 * eps)
    sde = F.FractionalSDE(F.LinearDrift(-1.0, trainable=False), F.ConstantDiffusion(1.0, trainable=False), H,
                          num_processes=K)
    control = F.optimal_control(sde, config, obs[..., None], noise, floor=0.003)
    params = (F.ObsModel(noise), F.Posterior(sde, control, num_paths=2))
    objective = elbo(F.model(config, 1, K), F.guide(config))
    data = jnp.asarray(obs, jnp.float32)[..., None]
    grads = jax.jit(jax.vmap(lambda k: objective.grad_estimate(k, params, data, jnp.arange(2))[1].sde.hurst_logit))(
        jax.random.split(jax.random.PRNGKey(3), n))
    grads = np.asarray(grads, np.float64)
    assert abs(grads.mean() - exact) < 5 * grads.std() / np.sqrt(n), (grads.mean(), grads.std() / np.sqrt(n), exact)
    assert abs(exact) > 5 * grads.std() / np.sqrt(n)  # the check can fail: the derivative is well resolved
    with pytest.raises(genvi.ConfigError, match="linear prior"):
        F.optimal_control(F.FractionalSDE(lambda t, x: -x, F.ConstantDiffusion(1.0), H, num_processes=K), config,
                          obs[..., None], noise)
    with pytest.raises(genvi.ShapeError, match="paths, n_obs, 1"):
        F.optimal_control(sde, config, obs, noise)


def test_exact_control_strategy_makes_fit_climb_to_the_best_family_hurst():
    """`fit` with the `ExactControl` strategy (variational EM) moves H most of the way to the
    exact argmax over H of the family's best ELBO."""
    import scipy.optimize

    K, noise, paths = 3, 0.1, 8
    times = np.arange(1, 11) / 10
    config = F.PathConfig(times, dt=0.05, brownian="grid", x0=[0.0])
    rng = np.random.default_rng(0)
    obs = (np.cumsum(0.3 * rng.standard_normal((paths, 10)), axis=1) + noise * rng.standard_normal((paths, 10)))[..., None]

    def best(hurst):
        Fm, f, L = F.augmented_matrices(hurst, 0.0, 0.0, 1.0, K, 20.0, 1.0)
        return F.family_optimum(obs[..., 0].T, config.grid, times, Fm, f, L, noise, 0.0, "II", F.gamma_grid(K, 20.0))[0]

    target = scipy.optimize.minimize_scalar(lambda h: -best(h), bounds=(0.05, 0.95), method="bounded").x
    objective = elbo(F.model(config, 1, K), F.guide(config), particles=4)
    data = jnp.asarray(obs, jnp.float32)
    start = 0.15
    sde = F.FractionalSDE(F.LinearDrift(0.0, trainable=False), F.ConstantDiffusion(1.0, trainable=False), start,
                          num_processes=K)
    params = (F.ObsModel(noise), F.Posterior(sde, F.optimal_control(sde, config, obs, noise), num_paths=paths))
    res = genvi.vi.fit(objective, params, data, jnp.arange(paths), optimizer=optax.adam(0.1), num_steps=80,
                       key=1, progress=False, strategy=F.ExactControl(config=config))
    learned = float(res.params[1].sde.hurst)
    assert abs(learned - target) < abs(start - target) / 4, (start, learned, target)
    with pytest.raises(genvi.ConfigError, match="every"):
        F.ExactControl(config=config, every=0)


def test_milstein_and_virtual_tree():
    """With a virtual Brownian tree, Ito-Milstein and Euler give the same X and Y (their noise
    coefficients do not depend on the state) and differ only in int u dW, whose coefficient u(z)
    does; the tree's E X(1)^2 matches the controlled Euler chain's."""
    K, n = 3, 2000
    times = np.array([0.5, 1.0])
    sde = F.FractionalSDE(F.LinearDrift(-1.0), F.ConstantDiffusion(1.0), 0.3, num_processes=K)
    control = F.AffineControl(F.PathConfig(times, dt=0.1).grid, 1, K)
    control = eqx.tree_at(lambda c: c.gain, control, control.gain.at[:, 0, 0].set(-2.0))
    keys = jax.random.split(jax.random.PRNGKey(6), n)
    paths = {}
    for solver in ("euler", "milstein"):
        config = F.PathConfig(times, dt=0.1, solver=solver, brownian="virtual", girsanov="full")
        paths[solver] = np.asarray(jax.jit(jax.vmap(lambda k: F.solve(sde, control, jnp.ones(1), 0, config, k)))(keys))
    assert np.allclose(paths["euler"][..., :-1], paths["milstein"][..., :-1], atol=1e-5)
    assert not np.allclose(paths["euler"][..., -1], paths["milstein"][..., -1], atol=1e-3)
    # E X(1)^2 of the controlled Euler chain Z_{n+1} = (I + (F + L kappa^T) dt) Z_n + L dW_n, Z_0 = (1, 0..0)
    F_, _, L = F.augmented_matrices(0.3, -1.0, 0.0, 1.0, K, 20.0, 1.0)
    kappa, S = np.eye(K + 1)[0] * -2.0, np.outer(np.eye(K + 1)[0], np.eye(K + 1)[0])
    for _ in range(10):
        A = np.eye(K + 1) + (F_ + np.outer(L, kappa)) * 0.1
        S = A @ S @ A.T + np.outer(L, L) * 0.1
    x2 = paths["euler"][:, -1, 0].astype(np.float64) ** 2
    assert abs(x2.mean() - S[0, 0]) < 5 * x2.std() / np.sqrt(n), (x2.mean(), S[0, 0])


def test_per_path_control_uses_its_own_offsets():
    """solve() selects path `index`'s offsets before the time loop (select_path): the same path as
    a one-path control holding only those offsets, under jit and vmap over paths."""
    K = 2
    config = F.PathConfig([0.5, 1.0], dt=0.1, brownian="grid", x0=[0.0])
    sde = F.FractionalSDE(F.LinearDrift(-1.0), F.ConstantDiffusion(1.0), 0.3, num_processes=K)
    two = F.AffineControl(config.grid, 1, K, num_paths=2)
    two = eqx.tree_at(lambda c: c.offset, two, jnp.stack([jnp.full((10, 1), -3.0), jnp.full((10, 1), 2.0)]))
    one = eqx.tree_at(lambda c: c.offset, F.AffineControl(config.grid, 1, K), jnp.full((1, 10, 1), 2.0))
    key = jax.random.PRNGKey(7)
    both = jax.jit(jax.vmap(lambda i: F.solve(sde, two, jnp.zeros(1), i, config, key)))(jnp.arange(2))
    alone = F.solve(sde, one, jnp.zeros(1), 0, config, key)
    assert np.allclose(both[1], alone, atol=1e-5) and not np.allclose(both[0], alone, atol=1e-2)


# --- bad input --------------------------------------------------------------------------------


def test_bad_input_is_refused_with_named_errors():
    drift, diff = F.LinearDrift(-1.0), F.ConstantDiffusion(1.0)
    for hurst in (0.0, 1.0, 1.3, -0.2):
        with pytest.raises(genvi.ConfigError, match="hurst"):
            F.FractionalSDE(drift, diff, hurst)
    with pytest.raises(genvi.ConfigError, match="hurst"):
        F.optimal_omega(1.5, F.gamma_grid(3, 20.0), 1.0)
    for K in (1, 0, 2.5):
        with pytest.raises(genvi.ConfigError, match="num_processes"):
            F.FractionalSDE(drift, diff, 0.3, num_processes=K)
    with pytest.raises(genvi.ConfigError, match="fbm_type"):
        F.FractionalSDE(drift, diff, 0.3, fbm_type="III")
    for times in ([0.1, 0.1, 0.5], [0.5, 0.2]):
        with pytest.raises(genvi.ShapeError, match="obs_times must be strictly increasing"):
            F.PathConfig(times, dt=0.1)
    for scale in (0.0, -1.0):
        with pytest.raises(genvi.ConfigError, match="positive"):
            F.ConstantDiffusion(scale)
    with pytest.raises(genvi.ConfigError, match="diffusion.*positive"):
        F.FractionalSDE(drift, lambda t, x: -jnp.ones_like(x), 0.3)
    with pytest.raises(genvi.ConfigError, match="solver"):
        F.PathConfig([0.5, 1.0], dt=0.1, solver="rk4")
    config, posterior, obs_model, obs, index, model, guide = _problem()
    with pytest.raises(genvi.ShapeError, match="site 'obs'"):
        model.simulate(jax.random.PRNGKey(0), obs_model, obs[:, :2], index)


def test_kalman_posterior_marginals_match_brute_force():
    """Posterior sd of X on the grid from the Kalman module equals direct Gaussian conditioning
    of Monte Carlo-free prior moments (one observation: closed-form update)."""
    K, grid = 2, np.linspace(0, 1, 11)
    Fm, f, L = F.augmented_matrices(0.4, -1.0, 0.0, 1.0, K, 10.0, 1.0, "II")
    config = F.PathConfig([1.0], dt=0.1)
    mean0, sd0 = _prior_marginals(config, Fm, f, L)
    log_z, mean, sd = F.kalman(np.array([0.8]), grid, [1.0], Fm, f, L, 0.1, 0.0, 0.0, "II", F.gamma_grid(K, 10.0), smooth=True)
    s2 = sd0[-1] ** 2 + 0.01
    assert log_z == pytest.approx(-0.5 * np.log(2 * np.pi * s2) - 0.8**2 / (2 * s2), rel=1e-10)
    assert sd[-1] ** 2 == pytest.approx(sd0[-1] ** 2 * 0.01 / s2, rel=1e-8)
    assert mean[-1] == pytest.approx(sd0[-1] ** 2 / s2 * 0.8, rel=1e-8)
    assert np.all(sd <= sd0 + 1e-12) and sd[0] == 0.0
