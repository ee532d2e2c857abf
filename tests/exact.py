"""Small models with exactly computable objectives and gradients, shared by the tests."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

import genvi
from genvi import gen, sample

LOG2PI = jnp.log(2 * jnp.pi)


# --- Normal-Normal: z ~ N(mu, 1), x ~ N(z, 1); guide N(m, exp(s)) -------------------------------
@gen
def normal_model(mu, x):
    z = sample("z", dist.Normal(mu, 1.0))
    sample("x", dist.Normal(z, 1.0), obs=x)


@gen
def normal_guide(phi, x):
    m, log_s = phi
    sample("z", dist.Normal(m, jnp.exp(log_s)))


def normal_elbo_exact(params, x):
    mu, (m, log_s) = params
    s2 = jnp.exp(2 * log_s)
    prior = -0.5 * ((m - mu) ** 2 + s2) - 0.5 * LOG2PI
    lik = -0.5 * ((x - m) ** 2 + s2) - 0.5 * LOG2PI
    entropy = 0.5 * (LOG2PI + 1.0) + log_s
    return prior + lik + entropy


NORMAL_PARAMS = (jnp.array(0.3), (jnp.array(0.5), jnp.array(-0.2)))


# --- Bernoulli latent: z ~ Bern(0.4), x ~ N(2 z + theta, 1); guide Bern(sigmoid(phi)) -----------
@gen
def bern_model(theta, x):
    z = sample("z", dist.Bernoulli(probs=0.4))
    sample("x", dist.Normal(2.0 * z + theta, 1.0), obs=x)


@gen
def bern_guide(phi, x):
    sample("z", dist.Bernoulli(logits=phi))


def bern_log_joint(theta, z, x):
    return dist.Bernoulli(probs=0.4).log_prob(z) + dist.Normal(2.0 * z + theta, 1.0).log_prob(x)


def bern_elbo_exact(params, x):
    theta, phi = params
    q1 = jax.nn.sigmoid(phi)
    total = 0.0
    for z, qz in ((0.0, 1 - q1), (1.0, q1)):
        total = total + qz * (bern_log_joint(theta, z, x) - jnp.log(qz))
    return total


def bern_iwae_exact(params, x, particles: int):
    """IWAE_K by enumerating all 2^K particle tuples."""
    theta, phi = params
    q = dist.Bernoulli(logits=phi)
    total = 0.0
    for zs in itertools.product((0.0, 1.0), repeat=particles):
        zs = jnp.array(zs)
        logq = q.log_prob(zs)
        logw = bern_log_joint(theta, zs, x) - logq
        total = total + jnp.exp(jnp.sum(logq)) * (jax.scipy.special.logsumexp(logw) - jnp.log(particles))
    return total


BERN_PARAMS = (jnp.array(0.2), jnp.array(0.3))


# --- Categorical then a reparameterised Normal whose parameters depend on it ------------------
LOCS = jnp.array([-1.0, 0.5, 2.0])


@gen
def mix_model(_, x):
    c = sample("c", dist.Categorical(probs=jnp.array([0.2, 0.5, 0.3])))
    y = sample("y", dist.Normal(LOCS[c], 1.0))
    sample("x", dist.Normal(y, 0.5), obs=x)


@gen
def mix_guide(phi, x):
    logits, locs, log_scales = phi
    c = sample("c", dist.Categorical(logits=logits))
    sample("y", dist.Normal(locs[c], jnp.exp(log_scales[c])))


def mix_elbo_exact(params, x):
    _, (logits, locs, log_scales) = params
    qc = jax.nn.softmax(logits)
    prior_c = jnp.log(jnp.array([0.2, 0.5, 0.3]))
    total = 0.0
    for c in range(3):
        m, s2 = locs[c], jnp.exp(2 * log_scales[c])
        e_prior_y = -0.5 * ((m - LOCS[c]) ** 2 + s2) - 0.5 * LOG2PI
        e_lik = -0.5 * ((x - m) ** 2 + s2) / 0.25 - 0.5 * LOG2PI - jnp.log(0.5)
        entropy_y = 0.5 * (LOG2PI + 1.0) + log_scales[c]
        total = total + qc[c] * (prior_c[c] + e_prior_y + e_lik + entropy_y - jnp.log(qc[c]))
    return total


MIX_PARAMS = (jnp.array(0.0), (jnp.array([0.1, -0.3, 0.4]), jnp.array([-0.5, 0.2, 1.5]),
                               jnp.array([-0.3, 0.0, -0.5])))


# --- a plate of Bernoulli latents -------------------------------------------------------------
plate_model = genvi.vmap(bern_model, in_axes=(None, 0), plate="data")
plate_guide = genvi.vmap(bern_guide, in_axes=(0, 0), plate="data")


def plate_elbo_exact(params, xs):
    theta, phis = params
    return jnp.sum(jax.vmap(lambda p, x: bern_elbo_exact((theta, p), x))(phis, xs))


# --- regression without latents: y ~ N(w x, 1) for rows (x, y), over a "data" plate ------------
@gen
def reg_model(w, row):
    sample("y", dist.Normal(w * row[0], 1.0), obs=row[1])


@gen
def reg_guide(_, row):
    return None


def plated(point: genvi.GenerativeFunction) -> genvi.GenerativeFunction:
    """`point` mapped over the rows of the data, as the plate named "data"."""
    return genvi.vmap(point, in_axes=(None, 0), plate="data")
