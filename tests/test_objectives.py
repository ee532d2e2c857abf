"""The objective library against exact values: bounds, their orderings and limits, gradients."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from conftest import assert_same_mean, assert_unbiased, draws
from exact import BERN_PARAMS, bern_guide, bern_iwae_exact, bern_log_joint, bern_model

import genvi
from genvi import ConfigError, EstimatorError, AddressError, expectation, gen, sample
from genvi import _plates
from genvi.estimators import REINFORCE, REPARAM
from genvi.objectives import elbo, iwae, p_wake, q_wake, renyi, rws, vimco

N = 20_000
SIGMA = 0.5
X = jnp.array(1.3)


# --- a conjugate Gaussian model: z ~ N(0, 1), x ~ N(z, SIGMA) --------------------------------
@gen
def gauss_model(_, x):
    z = sample("z", dist.Normal(0.0, 1.0))
    sample("x", dist.Normal(z, SIGMA), obs=x)


@gen
def gauss_guide(phi, x):
    sample("z", dist.Normal(phi[0], jnp.exp(phi[1])))


PHI = jnp.array([0.2, -0.2])  # a poor guide, so the bounds differ visibly
LOG_EVIDENCE = dist.Normal(0.0, jnp.sqrt(1 + SIGMA ** 2)).log_prob(X)


def gauss_elbo_exact(phi):
    m, s2 = phi[0], jnp.exp(2 * phi[1])
    return (-0.5 * (m ** 2 + s2) - 0.5 * ((X - m) ** 2 + s2) / SIGMA ** 2 - jnp.log(SIGMA) - jnp.log(2 * jnp.pi)
            + 0.5 * (jnp.log(2 * jnp.pi) + 1) + phi[1])


def values(objective, params, *data, n=N, seed=0):
    v = draws(lambda k: objective.estimate(k, params, *data), jax.random.PRNGKey(seed), n)
    return float(v.mean()), float(v.std() / np.sqrt(n))


def test_bounds_are_ordered_and_below_the_evidence():
    params = (None, PHI)
    e, e_se = values(elbo(gauss_model, gauss_guide), params, X)
    k4, k4_se = values(iwae(gauss_model, gauss_guide, particles=4), params, X, seed=1)
    k8, k8_se = values(iwae(gauss_model, gauss_guide, particles=8), params, X, seed=2)
    assert abs(e - gauss_elbo_exact(PHI)) < 5 * e_se  # the ELBO matches its closed form
    assert e + 5 * e_se < k4, (e, k4)
    assert k4 < k8 + 5 * (k4_se + k8_se)
    assert k8 < LOG_EVIDENCE + 5 * k8_se
    assert LOG_EVIDENCE - k8 < LOG_EVIDENCE - e  # the gap closes with more particles


def test_analytic_kl_and_stl_elbo_are_unbiased_with_less_variance():
    params = (None, PHI)
    base = elbo(gauss_model, gauss_guide)
    for variant in (elbo(gauss_model, gauss_guide, analytic_kl=True), elbo(gauss_model, gauss_guide, stl=True)):
        assert_unbiased(draws(lambda k: variant.estimate(k, params, X), jax.random.PRNGKey(0), N), gauss_elbo_exact(PHI))
        grads = draws(lambda k: variant.grad_estimate(k, params, X)[1], jax.random.PRNGKey(1), N)
        assert_unbiased(grads, jax.grad(gauss_elbo_exact)(PHI))
    # with nothing observed the analytic-KL ELBO is exactly -KL(q || p): no Monte Carlo left
    prior_only = genvi.gen(lambda _, x: sample("z", dist.Normal(0.0, 1.0)))
    kl_values = draws(lambda k: elbo(prior_only, gauss_guide, analytic_kl=True).estimate(k, params, X),
                      jax.random.PRNGKey(2), 100)
    exact_kl = dist.kl_divergence(dist.Normal(PHI[0], jnp.exp(PHI[1])), dist.Normal(0.0, 1.0))
    np.testing.assert_allclose(kl_values, -exact_kl, rtol=1e-5)
    assert np.var(draws(lambda k: base.estimate(k, params, X), jax.random.PRNGKey(2), 100)) > 0.1


def test_stl_gradient_vanishes_at_the_exact_posterior():
    post_var = 1 / (1 + 1 / SIGMA ** 2)
    exact_phi = jnp.array([post_var * X / SIGMA ** 2, 0.5 * jnp.log(post_var)])
    g = draws(lambda k: elbo(gauss_model, gauss_guide, stl=True).grad_estimate(k, (None, exact_phi), X)[1],
              jax.random.PRNGKey(0), 100)
    np.testing.assert_allclose(g, 0.0, atol=1e-4)


# --- discrete latent: IWAE and VIMCO against exhaustive enumeration --------------------------
def test_iwae_and_vimco_on_a_discrete_latent_against_enumeration():
    x = jnp.array(1.3)
    exact_value, exact_grad = jax.value_and_grad(lambda p: bern_iwae_exact(p, x, 4))(BERN_PARAMS)
    for objective in (iwae(bern_model, bern_guide, particles=4), vimco(bern_model, bern_guide, particles=4)):
        assert_unbiased(draws(lambda k: objective.estimate(k, BERN_PARAMS, x), jax.random.PRNGKey(0), N), exact_value)
        assert_unbiased(draws(lambda k: objective.grad_estimate(k, BERN_PARAMS, x), jax.random.PRNGKey(1), 40_000),
                        exact_grad)


def test_vimco_has_lower_variance_than_plain_reinforce_iwae():
    x = jnp.array(1.3)
    plain = iwae(bern_model, bern_guide, particles=8).with_estimators({"z": REINFORCE})
    g_plain = draws(lambda k: plain.grad_estimate(k, BERN_PARAMS, x)[1], jax.random.PRNGKey(0), 5000)
    g_vimco = draws(lambda k: vimco(bern_model, bern_guide, particles=8).grad_estimate(k, BERN_PARAMS, x)[1],
                    jax.random.PRNGKey(0), 5000)
    assert np.var(g_vimco) < 0.5 * np.var(g_plain), (np.var(g_vimco), np.var(g_plain))


def test_dreg_is_unbiased_with_lower_variance_than_iwae():
    params = (None, PHI)
    plain = iwae(gauss_model, gauss_guide, particles=16)
    dreg = iwae(gauss_model, gauss_guide, particles=16, dreg=True)
    g_plain = draws(lambda k: plain.grad_estimate(k, params, X)[1], jax.random.PRNGKey(0), N)
    g_dreg = draws(lambda k: dreg.grad_estimate(k, params, X)[1], jax.random.PRNGKey(1), N)
    assert_same_mean(g_dreg, g_plain)  # the plain IWAE gradient is unbiased (tested above)
    assert np.all(np.var(g_dreg, 0) < np.var(g_plain, 0)), (np.var(g_dreg, 0), np.var(g_plain, 0))
    value_plain, _ = values(plain, params, X, seed=3)
    value_dreg, se = values(dreg, params, X, seed=4)
    assert abs(value_plain - value_dreg) < 5 * se * np.sqrt(2)


def test_renyi_limits():
    params = (None, PHI)
    key = jax.random.PRNGKey(3)
    np.testing.assert_allclose(renyi(gauss_model, gauss_guide, alpha=0.0, particles=5).estimate(key, params, X),
                               iwae(gauss_model, gauss_guide, particles=5).estimate(key, params, X), rtol=1e-6)
    at_one = renyi(gauss_model, gauss_guide, alpha=1.0, particles=5).estimate(key, params, X)
    # R_{1-eps} - R_1 = eps/2 Var_k(log w) + O(eps^2) shrinks to 0 as eps -> 0 (float32 leaves ~1e-3
    # of cancellation noise at eps = 1e-4)
    gap = [renyi(gauss_model, gauss_guide, alpha=1.0 - eps, particles=5).estimate(key, params, X) - at_one
           for eps in (1e-2, 1e-3, 1e-4)]
    assert gap[0] > gap[1] > gap[2] > 0 and gap[2] < 5e-3, gap
    np.testing.assert_allclose(at_one, elbo(gauss_model, gauss_guide, particles=5).estimate(key, params, X), rtol=1e-6)
    # alpha in (0, 1) lies between the ELBO and the IWAE bound, in expectation
    r, r_se = values(renyi(gauss_model, gauss_guide, alpha=0.5, particles=5), params, X, seed=5)
    i, i_se = values(iwae(gauss_model, gauss_guide, particles=5), params, X, seed=6)
    e, e_se = values(elbo(gauss_model, gauss_guide), params, X, seed=7)
    assert e - 5 * e_se < r < i + 5 * i_se


# --- wake-sleep ------------------------------------------------------------------------------
def iwae_weights_exact(params, x, particles):
    """E[sum_k w~_k grad log p] and E[sum_k w~_k grad log q] by enumeration (fixed samples)."""
    theta, phi = params
    q = dist.Bernoulli(logits=phi)
    grad_p, grad_q = 0.0, 0.0
    for zs in itertools.product((0.0, 1.0), repeat=particles):
        zs = jnp.array(zs)
        prob = jnp.exp(jnp.sum(q.log_prob(zs)))
        norm = jax.nn.softmax(bern_log_joint(theta, zs, x) - q.log_prob(zs))
        grad_p += prob * jnp.sum(norm * jax.vmap(jax.grad(bern_log_joint), (None, 0, None))(theta, zs, x))
        grad_q += prob * jnp.sum(norm * jax.vmap(jax.grad(lambda p, z: dist.Bernoulli(logits=p).log_prob(z)), (None, 0))(phi, zs))
    return grad_p, grad_q


def test_reweighted_wake_sleep_gradients():
    x = jnp.array(1.3)
    grad_p, grad_q = iwae_weights_exact(BERN_PARAMS, x, 3)
    gp = draws(lambda k: p_wake(bern_model, bern_guide, particles=3).grad_estimate(k, BERN_PARAMS, x), jax.random.PRNGKey(0), N)
    gq = draws(lambda k: q_wake(bern_model, bern_guide, particles=3).grad_estimate(k, BERN_PARAMS, x), jax.random.PRNGKey(1), N)
    both = draws(lambda k: rws(bern_model, bern_guide, particles=3).grad_estimate(k, BERN_PARAMS, x), jax.random.PRNGKey(2), N)
    assert_unbiased(gp[0], grad_p)
    assert np.all(np.asarray(gp[1]) == 0) and np.all(np.asarray(gq[0]) == 0)
    assert_unbiased(gq[1], grad_q)
    assert_unbiased(both, (grad_p, grad_q))
    # the p-wake gradient is the IWAE gradient with respect to the model
    assert_unbiased(gp[0], jax.grad(lambda p: bern_iwae_exact(p, x, 3))(BERN_PARAMS)[0])


# --- approximate marginals: HVI, IWHVI, DIWHVI; normalize ---------------------------------------
@gen
def hier(phi):
    psi = sample("psi", dist.Normal(phi[0], jnp.exp(phi[1])))
    return sample("z", dist.Normal(psi, 0.5))


@gen
def reverse(kept, phi):
    sample("psi", dist.Normal(phi[2] * kept["z"] + phi[3], jnp.exp(phi[4])))


HPHI = jnp.array([0.3, -0.5, 0.5, 0.1, -0.6])


def test_marginal_importance_density_is_unbiased():
    m = genvi.marginal(hier, ["z"], reverse, particles=3)

    @expectation
    def density(phi, z):
        return jnp.exp(m.log_density({"z": z}, phi))

    z = jnp.array(0.9)
    exact = jnp.exp(dist.Normal(HPHI[0], jnp.sqrt(jnp.exp(2 * HPHI[1]) + 0.25)).log_prob(z))
    assert_unbiased(draws(lambda k: density.estimate(k, HPHI, z), jax.random.PRNGKey(0), N), exact)


def hvi_guide(particles):
    def wrapped_guide(phi, x):
        return genvi.marginal(hier, ["z"], reverse, particles=particles)(phi)

    @gen
    def guide(phi, x):
        return sample("q", wrapped_guide(phi, x))

    return guide


@gen
def gauss_model_nested(_, x):
    z = sample("q", gauss_point())
    sample("x", dist.Normal(z, SIGMA), obs=x)


@gen
def gauss_point():
    return sample("z", dist.Normal(0.0, 1.0))


def test_hierarchical_bounds_are_ordered_below_the_evidence():
    params = (None, HPHI)
    hvi, hvi_se = values(elbo(gauss_model_nested, hvi_guide(1)), params, X, seed=0)
    iwhvi, iwhvi_se = values(elbo(gauss_model_nested, hvi_guide(5)), params, X, seed=1)
    diwhvi, diwhvi_se = values(iwae(gauss_model_nested, hvi_guide(5), particles=5), params, X, seed=2)
    assert hvi < LOG_EVIDENCE and hvi + 5 * hvi_se < LOG_EVIDENCE
    assert hvi < iwhvi + 5 * (hvi_se + iwhvi_se)
    assert iwhvi + 5 * iwhvi_se < diwhvi
    assert diwhvi < LOG_EVIDENCE + 5 * diwhvi_se


def test_elbo_of_the_sir_approximation_is_the_iwae_bound():
    params = (None, PHI)

    @expectation
    def sir_elbo(params, x):
        _, phi = params
        q = genvi.normalize(gauss_model, gauss_guide, particles=6).sim((None, x), (phi, x))
        return gauss_model.log_density(q.choices, None, x) - q.log_density

    s, s_se = values(sir_elbo, params, X, seed=0)
    i, i_se = values(iwae(gauss_model, gauss_guide, particles=6), params, X, seed=1)
    assert abs(s - i) < 5 * np.hypot(s_se, i_se)
    tr = genvi.normalize(gauss_model, gauss_guide, particles=6).simulate(0, (None, X), (PHI, X))
    assert set(tr.choices.addresses()) == {"z"}


# --- local and global latents ----------------------------------------------------------------
XS = jnp.array([0.4, -0.3, 1.1])


@gen
def local_point(theta, x):
    z = sample("z", dist.Bernoulli(probs=0.4))
    sample("x", dist.Normal(2.0 * z + theta, 1.0), obs=x)


@gen
def local_point_guide(phi, x):
    sample("z", dist.Bernoulli(logits=phi))


local_model = genvi.vmap(local_point, in_axes=(None, 0), plate="data")
local_guide = genvi.vmap(local_point_guide, in_axes=(0, 0), plate="data")


@gen
def global_model(theta, xs):
    g = sample("g", dist.Bernoulli(probs=0.3))
    return sample("points", genvi.vmap(local_global_point, in_axes=(None, None, 0), plate="data")(theta, g, xs))


@gen
def local_global_point(theta, g, x):
    z = sample("z", dist.Bernoulli(probs=jax.nn.sigmoid(-0.5 + 1.5 * g)))
    sample("x", dist.Normal(z + g + theta, 1.0), obs=x)


@gen
def global_guide(phi, xs):
    sample("g", dist.Bernoulli(logits=phi[0]))
    sample("points", genvi.vmap(lambda_point_guide, in_axes=(0, 0), plate="data")(phi[1:], xs))


@gen
def lambda_point_guide(phi, x):
    sample("z", dist.Bernoulli(logits=phi))


def local_iwae_exact(params, xs, particles):
    theta, phis = params
    return sum(bern_iwae_exact((theta, phis[i]), xs[i], particles) for i in range(len(xs)))


def global_iwae_exact(params, xs, particles):
    theta, phi = params
    q_g, q_z = dist.Bernoulli(logits=phi[0]), dist.Bernoulli(logits=phi[1:])
    total = 0.0
    for bits in itertools.product((0.0, 1.0), repeat=particles * (1 + len(xs))):
        bits = jnp.array(bits).reshape(particles, 1 + len(xs))
        g, z = bits[:, 0], bits[:, 1:]
        log_q = q_g.log_prob(g) + jnp.sum(q_z.log_prob(z), -1)
        log_p = (dist.Bernoulli(probs=0.3).log_prob(g)
                 + jax.vmap(lambda gg, zz: dist.Bernoulli(probs=jax.nn.sigmoid(-0.5 + 1.5 * gg)).log_prob(zz).sum())(g, z)
                 + jax.vmap(lambda gg, zz: dist.Normal(zz + gg + theta, 1.0).log_prob(xs).sum())(g, z))
        total += jnp.exp(jnp.sum(log_q)) * (jax.scipy.special.logsumexp(log_p - log_q) - jnp.log(particles))
    return total


def test_multi_sample_bounds_are_per_element_for_local_latents():
    params = (jnp.array(0.2), jnp.array([0.3, -0.4, 0.8]))
    objective = iwae(local_model, local_guide, particles=2)
    exact_value, exact_grad = jax.value_and_grad(lambda p: local_iwae_exact(p, XS, 2))(params)
    assert_unbiased(draws(lambda k: objective.estimate(k, params, XS), jax.random.PRNGKey(0), N), exact_value)
    assert_unbiased(draws(lambda k: objective.grad_estimate(k, params, XS), jax.random.PRNGKey(1), 40_000), exact_grad)


def test_multi_sample_bounds_use_joint_particles_for_global_latents():
    params = (jnp.array(0.2), jnp.array([0.1, 0.3, -0.4, 0.8]))
    objective = iwae(global_model, global_guide, particles=2)
    exact_value, exact_grad = jax.value_and_grad(lambda p: global_iwae_exact(p, XS, 2))(params)
    assert_unbiased(draws(lambda k: objective.estimate(k, params, XS), jax.random.PRNGKey(0), N), exact_value)
    assert_unbiased(draws(lambda k: objective.grad_estimate(k, params, XS), jax.random.PRNGKey(1), 40_000), exact_grad)


def test_local_bound_is_unbiased_under_minibatching_and_global_one_is_refused():
    params = (jnp.array(0.2), jnp.array([0.3, -0.4, 0.8]))
    objective = iwae(local_model, local_guide, particles=2)
    exact_value = local_iwae_exact(params, XS, 2)

    def minibatch(key):
        k1, k2 = jax.random.split(key)
        index = jax.random.permutation(k1, 3)[:2]
        with _plates.subsampling(3, 2):
            return objective.estimate(k2, (params[0], params[1][index]), XS[index])

    assert_unbiased(jax.vmap(minibatch)(jax.random.split(jax.random.PRNGKey(0), N)), exact_value)
    with pytest.raises(ConfigError, match=r"iwae: the multi-sample bound over latents .*'g'.* minibatching would bias it"):
        with _plates.subsampling(3, 2):
            iwae(global_model, global_guide, particles=2).estimate(0, (jnp.array(0.2), jnp.zeros(3)), XS[:2])


# --- bad input ---------------------------------------------------------------------------------
def test_bad_objective_options():
    with pytest.raises(ConfigError, match=r"renyi\(particles=0\)"):
        renyi(gauss_model, gauss_guide, alpha=0.5, particles=0)
    with pytest.raises(ConfigError, match=r"vimco\(particles=1\)"):
        vimco(bern_model, bern_guide, particles=1)
    with pytest.raises(ConfigError, match=r"renyi\(alpha=nan\)"):
        renyi(gauss_model, gauss_guide, alpha=float("nan"), particles=2)
    with pytest.raises(ConfigError, match=r"marginal\(particles=0\)"):
        genvi.marginal(hier, ["z"], reverse, particles=0)


def test_keep_must_be_a_subset_of_the_addresses():
    m = genvi.marginal(hier, ["zz"], reverse, particles=2)
    with pytest.raises(AddressError, match=r"keep names addresses the program does not sample: \['zz'\]"):
        m.simulate(0, HPHI)


def test_objectives_refuse_estimators_they_cannot_use():
    with pytest.raises(EstimatorError, match=r"site 'z': iwae\(dreg=True\) differentiates through reparameterised"):
        iwae(gauss_model, gauss_guide, particles=2, dreg=True).with_estimators({"z": REINFORCE}).estimate(0, (None, PHI), X)
    with pytest.raises(EstimatorError, match=r"site 'z': REPARAM needs a reparameterisable distribution"):
        iwae(bern_model, bern_guide, particles=2, dreg=True).estimate(0, BERN_PARAMS, X)
    with pytest.raises(EstimatorError, match=r"site 'z': vimco supplies its own score-function gradient"):
        vimco(gauss_model, gauss_guide, particles=2).with_estimators({"z": REPARAM}).estimate(0, (None, PHI), X)
