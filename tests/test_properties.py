"""Property tests (hypothesis) over random shapes: plate sizes, event sizes, nesting.

For a model with a global latent, a data plate of local latents and observations:
- `log_density(simulate(key).choices)` equals the trace's own log density, and both equal the
  same joint written directly with NumPyro (an independent oracle);
- estimates vmapped over keys equal estimates computed one key at a time;
- `jit` and eager evaluation agree.
Examples are derandomised, so CI sees the same cases every run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import genvi
from genvi import gen, sample
from genvi.objectives import elbo, iwae

SETTINGS = settings(max_examples=6, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
shapes = st.tuples(st.integers(1, 6), st.integers(1, 4))  # (plate size n, event size d)


@gen
def local(z, x):
    u = sample("u", dist.Normal(z, 1.0).to_event(1))
    sample("x", dist.Normal(u, 0.5).to_event(1), obs=x)


@gen
def model(scale, x):
    z = sample("z", dist.Normal(jnp.zeros(x.shape[-1]), scale).to_event(1))
    sample("obs", genvi.vmap(local, in_axes=(None, 0), plate="data")(z, x))


@gen
def local_guide(phi, x):
    sample("u", dist.Normal(phi * x, 0.7).to_event(1))


@gen
def guide(phi, x):
    sample("z", dist.Normal(jnp.mean(x, 0) * phi, 0.8).to_event(1))
    sample("obs", genvi.vmap(local_guide, in_axes=(None, 0), plate="data")(phi, x))


def _data(n: int, d: int) -> jax.Array:
    return jnp.asarray(np.random.default_rng(n * 10 + d).normal(size=(n, d)), jnp.float32)


def _oracle(choices, scale, x) -> jax.Array:
    z, u = choices["z"], choices["obs/u"]
    return (dist.Normal(jnp.zeros(x.shape[-1]), scale).to_event(1).log_prob(z)
            + dist.Normal(z, 1.0).to_event(1).log_prob(u).sum()
            + dist.Normal(u, 0.5).to_event(1).log_prob(x).sum())


@SETTINGS
@given(shapes, st.integers(0, 2**31 - 1))
def test_log_density_of_simulated_choices_is_the_traces_own(shape, seed):
    x = _data(*shape)
    tr = model.simulate(jax.random.PRNGKey(seed), 1.5, x)
    assert tr.choices["z"].shape == (shape[1],) and tr.choices["obs/u"].shape == shape
    again = model.log_density(tr.choices, 1.5, x)
    np.testing.assert_allclose(again, tr.log_density, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(again, _oracle(tr.choices, 1.5, x), rtol=1e-5, atol=1e-4)


@SETTINGS
@given(shapes, st.sampled_from(["elbo", "iwae"]))
def test_vmapped_estimates_equal_looped_ones(shape, name):
    x = _data(*shape)
    objective = elbo(model, guide) if name == "elbo" else iwae(model, guide, particles=3)
    keys = jax.random.split(jax.random.PRNGKey(shape[0]), 4)
    params = (jnp.array(1.5), jnp.array(0.3))
    batched = jax.vmap(lambda k: objective.estimate(k, params, x))(keys)
    looped = jnp.stack([objective.estimate(k, params, x) for k in keys])
    np.testing.assert_allclose(batched, looped, rtol=1e-5, atol=1e-4)
    assert len(set(np.asarray(looped).tolist())) == len(keys)  # different keys, different draws


@SETTINGS
@given(shapes)
def test_jit_and_eager_agree(shape):
    x = _data(*shape)
    objective = elbo(model, guide)
    params = (jnp.array(1.5), jnp.array(0.3))
    key = jax.random.PRNGKey(7)
    eager_value, eager_grad = objective.value_and_grad_estimate(key, params, x)
    jit_value, jit_grad = jax.jit(objective.value_and_grad_estimate)(key, params, x)
    np.testing.assert_allclose(jit_value, eager_value, rtol=1e-5, atol=1e-4)
    for a, b in zip(jax.tree.leaves(jit_grad), jax.tree.leaves(eager_grad)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
