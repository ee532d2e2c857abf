"""NumPyro models and guides under genvi, TFP distributions at sites, posterior predictive."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.distributions import constraints
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.util import log_density

import genvi
import genvi.vi as vi
from genvi import gen, sample
from genvi.estimators import ENUM
from genvi.objectives import elbo

J = 8
Y = jnp.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
SIGMA = jnp.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


def eight_schools(sigma, y=None):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", J):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def eight_schools_guide(sigma, y=None):
    numpyro.sample("mu", dist.Normal(numpyro.param("mu_loc", 0.0),
                                     numpyro.param("mu_scale", 1.0, constraint=constraints.positive)))
    numpyro.sample("tau", dist.LogNormal(numpyro.param("tau_loc", 1.0),
                                         numpyro.param("tau_scale", 0.5, constraint=constraints.positive)))
    with numpyro.plate("J", J):
        numpyro.sample("theta", dist.Normal(numpyro.param("theta_loc", jnp.zeros(J)),
                                            numpyro.param("theta_scale", jnp.ones(J), constraint=constraints.positive)))


def constrained(params):
    return {k: biject(k, v) for k, v in params.items()}


def biject(name, value):
    return dist.transforms.biject_to(constraints.positive)(value) if "scale" in name else value


def test_eight_schools_elbo_equals_numpyro_for_the_same_values():
    model, guide = genvi.from_numpyro(eight_schools), genvi.from_numpyro(eight_schools_guide)
    params = guide.init_params(0, SIGMA, Y)
    for seed in range(3):
        tr = guide.simulate(seed, params, SIGMA, Y)
        ours = model.log_density(tr.choices, {}, SIGMA, Y) - tr.log_density
        values = dict(tr.choices.flat())
        lp_model, _ = log_density(eight_schools, (SIGMA, Y), {}, values)
        lp_guide, _ = log_density(eight_schools_guide, (SIGMA, Y), {}, {**constrained(params), **values})
        np.testing.assert_allclose(ours, lp_model - lp_guide, rtol=1e-5)


def test_eight_schools_fit_matches_numpyro_svi():
    model, guide = genvi.from_numpyro(eight_schools), genvi.from_numpyro(eight_schools_guide)
    schedule = optax.exponential_decay(0.05, 4000, 0.02)
    res = vi.fit(elbo(model, guide), ({}, guide.init_params(0, SIGMA, Y)), SIGMA, Y,
                 optimizer=optax.adam(schedule), num_steps=4000, key=0, progress=False)
    svi = SVI(eight_schools, eight_schools_guide, optax.adam(schedule), Trace_ELBO(num_particles=4))
    ref = svi.run(jax.random.PRNGKey(0), 4000, SIGMA, Y, progress_bar=False).params
    ours = constrained(res.params[1])
    np.testing.assert_allclose(ours["mu_loc"], ref["mu_loc"], atol=1.0)
    np.testing.assert_allclose(ours["theta_loc"], ref["theta_loc"], atol=1.5)
    np.testing.assert_allclose(ours["mu_scale"], ref["mu_scale"], rtol=0.35)


# --- a discrete latent in a subsampled NumPyro plate ---------------------------------------------
LOCS = jnp.array([-2.0, 0.0, 3.0])
X = jnp.array([-2.2, -1.5, 0.3, 2.9, 3.4, 0.1, -0.2, 2.5, 3.1, -1.9])


def mixture(x):
    weights = numpyro.param("weights", jnp.ones(3) / 3, constraint=constraints.simplex)
    with numpyro.plate("data", len(X), subsample_size=x.shape[0] if x.shape[0] < len(X) else None) as idx:
        z = numpyro.sample("z", dist.Categorical(weights))
        numpyro.sample("x", dist.Normal(LOCS[z], 1.0), obs=X[idx])


def mixture_guide(x):
    logits = numpyro.param("logits", jnp.zeros((len(X), 3)))
    with numpyro.plate("data", len(X), subsample_size=x.shape[0] if x.shape[0] < len(X) else None) as idx:
        numpyro.sample("z", dist.Categorical(logits=logits[idx]), infer={"genvi_estimator": ENUM})


def mixture_elbo_exact(model_params, guide_params):
    w = dist.transforms.biject_to(constraints.simplex)(model_params["weights"])
    q = jax.nn.softmax(guide_params["logits"], -1)
    log_joint = jnp.log(w) + dist.Normal(LOCS, 1.0).log_prob(X[:, None])
    return jnp.sum(q * (log_joint - jnp.log(q)))


def test_discrete_latent_numpyro_model_enumerated_exactly():
    model, guide = genvi.from_numpyro(mixture), genvi.from_numpyro(mixture_guide)
    mp, gp = model.init_params(0, X), guide.init_params(0, X)
    gp = {"logits": jax.random.normal(jax.random.PRNGKey(1), (len(X), 3))}
    value, grads = elbo(model, guide).value_and_grad_estimate(0, (mp, gp), X)
    exact_value, exact_grads = jax.value_and_grad(mixture_elbo_exact, argnums=(0, 1))(mp, gp)
    np.testing.assert_allclose(value, exact_value, rtol=1e-5)
    np.testing.assert_allclose(grads[1]["logits"], exact_grads[1]["logits"], rtol=1e-4, atol=1e-6)
    # NumPyro's Trace_ELBO integrand for the same sampled assignments agrees with genvi's
    tr = guide.simulate(2, gp, X)
    ours = model.log_density(tr.choices, mp, X) - tr.log_density
    lp_model, _ = log_density(mixture, (X,), {}, {"weights": dist.transforms.biject_to(constraints.simplex)(mp["weights"]),
                                                  "z": tr["z"]})
    lp_guide, _ = log_density(mixture_guide, (X,), {}, {**gp, "z": tr["z"]})
    np.testing.assert_allclose(ours, lp_model - lp_guide, rtol=1e-5)


def test_subsampled_numpyro_plate_reuses_guide_indices_and_is_unbiased():
    model, guide = genvi.from_numpyro(mixture), genvi.from_numpyro(mixture_guide)
    mp = model.init_params(0, X)
    gp = {"logits": jax.random.normal(jax.random.PRNGKey(1), (len(X), 3))}
    objective = elbo(model, guide)
    tr = guide.simulate(0, gp, X[:4])
    assert tr["data_subsample"].shape == (4,) and len(set(np.asarray(tr["data_subsample"]))) == 4
    values = jax.vmap(lambda k: objective.estimate(k, (mp, gp), X[:4]))(jax.random.split(jax.random.PRNGKey(0), 20_000))
    se = values.std() / np.sqrt(values.size)
    assert abs(values.mean() - mixture_elbo_exact(mp, gp)) < 5 * se


def test_posterior_predictive_draws_every_site():
    @gen
    def model(w, x):
        z = sample("z", dist.Normal(0.0, 1.0))
        sample("y", dist.Normal(w * z, 0.1).expand([3]).to_event(1), obs=x)

    @gen
    def guide(loc, x):
        sample("z", dist.Normal(loc, 0.01))

    out = genvi.predictive(model, guide, (2.0, 5.0), jnp.zeros(3), num_samples=500, key=0)
    assert out["z"].shape == (500,) and out["y"].shape == (500, 3)
    np.testing.assert_allclose(out["z"].mean(), 5.0, atol=0.01)
    np.testing.assert_allclose(out["y"].mean(), 10.0, atol=0.05)  # replicates, not the observed zeros


def test_tfp_distribution_at_a_site():
    tfp = pytest.importorskip("tensorflow_probability.substrates.jax")
    tfd = tfp.distributions

    @gen
    def model(mu):
        z = sample("z", tfd.Normal(mu, 1.0))
        sample("x", tfd.Normal(z, 1.0), obs=jnp.array(1.0))

    @gen
    def guide(phi):
        m, log_s = phi
        sample("z", tfd.Normal(m, jnp.exp(log_s)))

    objective = elbo(model, guide)
    params = (jnp.array(0.3), (jnp.array(0.5), jnp.array(-0.2)))
    grads = jax.vmap(lambda k: objective.grad_estimate(k, params))(jax.random.split(jax.random.PRNGKey(0), 20_000))

    def exact(params):
        mu, (m, log_s) = params
        s2 = jnp.exp(2 * log_s)
        return -0.5 * ((m - mu) ** 2 + s2) - 0.5 * ((1 - m) ** 2 + s2) + log_s

    for g, e in zip(jax.tree.leaves(grads), jax.tree.leaves(jax.grad(exact)(params))):
        assert abs(g.mean() - e) < 5 * g.std() / np.sqrt(g.size)
    tr = model.simulate(0, 0.0)
    np.testing.assert_allclose(tr.log_density, dist.Normal(0.0, 1.0).log_prob(tr["z"]) +
                               dist.Normal(tr["z"], 1.0).log_prob(1.0), rtol=1e-5)
