"""The generative-function language: traces, choice maps, nested calls, plates and scans."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import genvi
from genvi import ChoiceMap, gen, sample


@gen
def inner(mu):
    return sample("w", dist.Normal(mu, 1.0))


@gen
def outer(mu, x):
    w = sample("sub", inner(mu))
    z = sample("z", dist.Normal(w, 0.5))
    sample("x", dist.Normal(z, 0.1), obs=x)
    return z


def test_simulate_records_hierarchical_choices_and_density():
    tr = outer.simulate(jax.random.PRNGKey(0), 0.3, 1.0)
    assert set(tr.choices.addresses()) == {"sub/w", "z"}
    assert tr.choices["sub"]["w"] == tr.choices["sub/w"]
    expected = (dist.Normal(0.3, 1.0).log_prob(tr["sub/w"]) + dist.Normal(tr["sub/w"], 0.5).log_prob(tr["z"])
                + dist.Normal(tr["z"], 0.1).log_prob(1.0))
    np.testing.assert_allclose(tr.log_density, expected, rtol=1e-6)
    assert tr.retval == tr["z"]


def test_log_density_assess_and_simulate_agree():
    tr = outer.simulate(1, 0.3, 1.0)
    np.testing.assert_allclose(outer.log_density(tr.choices, 0.3, 1.0), tr.log_density, rtol=1e-6)
    value, retval = outer.assess({"sub": {"w": tr["sub/w"]}, "z": tr["z"]}, 0.3, 1.0)
    np.testing.assert_allclose(value, tr.log_density, rtol=1e-6)
    assert retval == tr["z"]


def test_log_density_is_differentiable_in_choices_and_params():
    choices = ChoiceMap({"sub/w": 0.2, "z": 0.4})
    g_params = jax.grad(lambda mu: outer.log_density(choices, mu, 1.0))(0.3)
    np.testing.assert_allclose(g_params, 0.2 - 0.3, rtol=1e-6)
    g_choices = jax.grad(lambda c: outer.log_density(c, 0.3, 1.0))(choices)
    np.testing.assert_allclose(g_choices["z"], -(0.4 - 0.2) / 0.25 + (1.0 - 0.4) / 0.01, rtol=1e-5)


def test_importance_weight_is_density_of_constraints():
    tr, w = outer.importance(jax.random.PRNGKey(2), {"z": 0.7}, 0.3, 1.0)
    assert tr["z"] == 0.7
    expected = dist.Normal(tr["sub/w"], 0.5).log_prob(0.7) + dist.Normal(0.7, 0.1).log_prob(1.0)
    np.testing.assert_allclose(w, expected, rtol=1e-6)


def test_simulate_is_deterministic_given_key_and_jittable():
    a = outer.simulate(jax.random.PRNGKey(3), 0.3, 1.0)
    b = jax.jit(outer.simulate)(jax.random.PRNGKey(3), 0.3, 1.0)
    np.testing.assert_allclose(a["z"], b["z"], rtol=1e-6)


def test_vmap_plate_stacks_sites_and_sums_density():
    plate = genvi.vmap(outer, in_axes=(None, 0), plate="data")
    xs = jnp.linspace(-1, 1, 5)
    tr = plate.simulate(0, 0.3, xs)
    assert tr["z"].shape == (5,) and tr["sub/w"].shape == (5,)
    assert dict(tr.plates)["z"] == ("data",)
    per_point = jax.vmap(lambda w, z, x: outer.log_density({"sub/w": w, "z": z}, 0.3, x))(tr["sub/w"], tr["z"], xs)
    np.testing.assert_allclose(tr.log_density, per_point.sum(), rtol=1e-5)
    np.testing.assert_allclose(plate.log_density(tr.choices, 0.3, xs), tr.log_density, rtol=1e-5)
    # every element draws independently even though no parameter varies along the plate
    assert len(np.unique(np.asarray(tr["sub/w"]))) == 5


def test_plate_declared_size_scales_by_n_over_b():
    plate = genvi.vmap(outer, in_axes=(None, 0), plate="data", size=20)
    full = genvi.vmap(outer, in_axes=(None, 0), plate="data")
    xs = jnp.linspace(-1, 1, 5)
    choices = {"sub/w": jnp.zeros(5), "z": jnp.ones(5)}
    np.testing.assert_allclose(plate.log_density(choices, 0.3, xs), 4 * full.log_density(choices, 0.3, xs), rtol=1e-6)


def test_nested_plates_have_two_axes():
    @gen
    def cell(mu):
        sample("v", dist.Normal(mu, 1.0))

    rows = genvi.vmap(genvi.vmap(cell, in_axes=0, plate="cols"), in_axes=0, plate="rows")
    tr = rows.simulate(0, jnp.zeros((3, 4)))
    assert tr["v"].shape == (3, 4)
    assert dict(tr.plates)["v"] == ("rows", "cols")
    np.testing.assert_allclose(tr.log_density, dist.Normal(0.0, 1.0).log_prob(tr["v"]).sum(), rtol=1e-5)


def test_scan_stacks_per_step_sites():
    @gen
    def step(carry, x):
        z = sample("z", dist.Normal(carry, 1.0))
        sample("y", dist.Normal(z, 0.5), obs=x)
        return z, z

    walk = genvi.scan(step)
    ys = jnp.array([0.1, 0.5, 0.2, -0.3])
    tr = walk.simulate(0, 0.0, ys)
    assert tr["z"].shape == (4,)
    zs = tr["z"]
    prev = jnp.concatenate([jnp.zeros(1), zs[:-1]])
    expected = dist.Normal(prev, 1.0).log_prob(zs).sum() + dist.Normal(zs, 0.5).log_prob(ys).sum()
    np.testing.assert_allclose(tr.log_density, expected, rtol=1e-5)
    np.testing.assert_allclose(walk.log_density(tr.choices, 0.0, ys), expected, rtol=1e-5)
    carry, out = tr.retval
    np.testing.assert_allclose(carry, zs[-1])


def test_choicemap_is_a_pytree_and_immutable():
    cm = ChoiceMap({"a": 1.0, "b/c": jnp.ones(2)})
    doubled = jax.tree.map(lambda v: v * 2, cm)
    assert isinstance(doubled, ChoiceMap) and doubled["b/c"][0] == 2.0
    with pytest.raises(AttributeError):
        cm.x = 1
    assert "b/c" in cm and "b/d" not in cm


def test_genvi_vmap_of_function_draws_independent_particles():
    @genvi.expectation
    def program(mu):
        draws = genvi.vmap(lambda: inner.sim(mu).retval, axis_size=64)()
        return jnp.var(draws)

    values = jax.vmap(lambda k: program.estimate(k, 0.0))(jax.random.split(jax.random.PRNGKey(0), 200))
    np.testing.assert_allclose(values.mean(), 63 / 64, rtol=0.05)
