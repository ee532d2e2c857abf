"""Normalizing flows (genvi.models.flows): exact inverses and log-determinants for every layer,
the paper's invertibility constraints, flows as genvi sites (REPARAM, exact scores, amortised
plates), a fit to a correlated Gaussian, and clear errors."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest
from conftest import assert_same_mean, draws

import genvi
import genvi.models.flows as flows
import genvi.vi as vi
from genvi import gen, sample
from genvi.objectives import elbo

D, C = 3, 2  # dimension, context dimension


def _perturb(layer, key, scale=0.5):
    """Random floating-point parameters (layers start at or near the identity)."""
    dyn, static = eqx.partition(layer, eqx.is_inexact_array)
    leaves, treedef = jax.tree.flatten(dyn)
    keys = jax.random.split(key, max(1, len(leaves)))
    leaves = [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
    return eqx.combine(jax.tree.unflatten(treedef, leaves), static)


def _layers(key):
    k = jax.random.split(key, 12)
    return {
        "planar_tanh": flows.Planar(D, key=k[0], init_scale=1.0),
        "planar_leaky": flows.Planar(D, key=k[1], activation="leaky_relu", negative_slope=0.2, init_scale=1.0),
        "planar_amortised": flows.Planar(D, key=k[2], cond_dim=C, init_scale=1.0),
        "radial": flows.Radial(D, key=k[3]),
        "radial_amortised": flows.Radial(D, key=k[4], cond_dim=C),
        "iaf": flows.IAF(D, key=k[5], hidden=8),
        "iaf_amortised": flows.IAF(D, key=k[6], hidden=8, cond_dim=C),
        "maf": flows.MAF(D, key=k[7], hidden=8),
        "affine_coupling": flows.AffineCoupling(D, key=k[8], hidden=8),
        "spline_coupling": flows.SplineCoupling(D, key=k[9], hidden=8, knots=5, interval=3.0),
        "spline_amortised": flows.SplineCoupling(D, key=k[10], hidden=8, knots=5, cond_dim=C),
        "permute": flows.Permute((2, 0, 1)),
        "stack_planar": flows.stack(lambda kk: flows.Planar(D, key=kk, init_scale=1.0), jax.random.split(k[11], 3)),
    }


LAYERS = list(_layers(jax.random.PRNGKey(0)))


@eqx.filter_jit
def _round_trip(layer, zs, context):
    """Per point: the inverse of the forward map, both log-determinants, and both by slogdet of
    the autodiff Jacobian (one compiled call instead of dozens of eager ones)."""

    def one(z):
        y, log_det = layer.forward_and_log_det(z, context)
        back, inv_log_det = layer.inverse_and_log_det(y, context)
        sign, expected = jnp.linalg.slogdet(jax.jacobian(lambda v: layer.forward(v, context))(z))
        _, expected_inv = jnp.linalg.slogdet(jax.jacobian(lambda v: layer.inverse(v, context))(y))
        return back, log_det, sign, expected, inv_log_det, expected_inv

    return jax.vmap(one)(zs)


@pytest.mark.parametrize("name", LAYERS)
def test_inverse_and_log_det_exact(name):
    layer = _perturb(_layers(jax.random.PRNGKey(0))[name], jax.random.PRNGKey(1))
    kz, kc = jax.random.split(jax.random.PRNGKey(2))
    context = jax.random.normal(kc, (C,)) if layer.cond_dim is not None else None
    zs = 1.5 * jax.random.normal(kz, (4, D))
    back, log_det, sign, expected, inv_log_det, expected_inv = _round_trip(layer, zs, context)
    np.testing.assert_allclose(back, zs, rtol=1e-4, atol=1e-4)
    assert bool(jnp.all(sign > 0))
    np.testing.assert_allclose(log_det, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(inv_log_det, expected_inv, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("activation", ["tanh", "leaky_relu"])
def test_planar_inverse_on_both_branches(activation):
    w, u = jnp.array([1.5, -0.5, 0.3]), jnp.array([-2.0, 1.0, 0.5])  # w^T u = -3.35 < -1: u_hat needed
    layer = flows.Planar.from_params(w, u, 0.4, activation=activation, negative_slope=0.1)
    _, u_hat, b, m = layer.wub()
    assert float(m) > -1.0
    np.testing.assert_allclose(w @ u_hat, m, rtol=1e-5)
    base = jnp.array([0.2, 0.7, -0.4])
    pre = []
    for t in (-3.0, -0.5, 0.5, 3.0):  # pre-activations on both sides of zero
        z = base + t * w / (w @ w)
        pre.append(float(w @ z + b))
        y, log_det = layer.forward_and_log_det(z)
        back, inv_log_det = layer.inverse_and_log_det(y)
        np.testing.assert_allclose(back, z, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(log_det, jnp.linalg.slogdet(jax.jacobian(layer.forward)(z))[1], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(inv_log_det, -log_det, rtol=1e-5, atol=1e-6)
    assert min(pre) < 0 < max(pre)


def test_planar_constraint_keeps_adversarial_maps_invertible():
    """Random w, u with w^T u far below -1: the constrained map stays monotone along w (so
    invertible), has a positive Jacobian determinant, and inverts exactly."""
    key = jax.random.PRNGKey(3)
    for i, k in enumerate(jax.random.split(key, 6)):
        kw, ku, kz = jax.random.split(k, 3)
        w = 3.0 * jax.random.normal(kw, (2,))
        u = -(5.0 + 10 * i) * w / (w @ w) + jax.random.normal(ku, (2,))  # w^T u in about [-55, -4]
        assert float(w @ u) < -1.0
        layer = flows.Planar.from_params(w, u, 0.3)
        along = jnp.linspace(-6, 6, 2001)[:, None] * w / (w @ w)  # a line across the hyperplane
        proj = jax.vmap(layer.forward)(along) @ w
        assert bool(jnp.all(jnp.diff(proj) >= 0)), "w^T f(z) must be non-decreasing in w^T z"
        zs = 2.0 * jax.random.normal(kz, (50, 2))
        signs, _ = jax.vmap(lambda z: jnp.linalg.slogdet(jax.jacobian(layer.forward)(z)))(zs)
        assert bool(jnp.all(signs > 0))
        ys = jax.vmap(layer.forward)(zs)
        back = jax.vmap(layer.inverse)(ys)
        # backward-stable: f(f^{-1}(y)) = y. (z itself is recovered only as well as the map is
        # conditioned: with w^T u_hat rounded to -1, w^T f is cubic-flat at one point.)
        np.testing.assert_allclose(jax.vmap(layer.forward)(back), ys, rtol=1e-5, atol=1e-5)
        far = jnp.abs(zs @ w + layer.wub()[2]) > 0.5
        np.testing.assert_allclose(back[far], zs[far], rtol=1e-4, atol=1e-4)
    with pytest.raises(genvi.ConfigError, match="non-invertible"):
        flows.Planar.from_params(w, u, 0.3, constrain=False)


def test_non_invertible_configurations_are_refused():
    key = jax.random.PRNGKey(0)
    with pytest.raises(genvi.ConfigError, match="beta >= -alpha"):
        flows.Radial.from_params(jnp.zeros(2), 1.0, -1.5)
    with pytest.raises(genvi.ConfigError, match="alpha > 0"):
        flows.Radial.from_params(jnp.zeros(2), -0.1, 0.0)
    with pytest.raises(genvi.ConfigError, match="negative_slope"):
        flows.Planar(2, key=key, activation="leaky_relu", negative_slope=0.0)
    with pytest.raises(genvi.ConfigError, match="activation"):
        flows.Planar(2, key=key, activation="relu")
    with pytest.raises(genvi.ConfigError, match="dim must be"):
        flows.AffineCoupling(1, key=key)
    with pytest.raises(genvi.ConfigError, match="split"):
        flows.SplineCoupling(3, key=key, split=3)
    with pytest.raises(genvi.ConfigError, match="permutation"):
        flows.Permute((0, 0, 1))
    with pytest.raises(genvi.ConfigError, match="one structure"):
        flows.Stack([flows.Planar(2, key=key), flows.Radial(2, key=key)])
    flows.Radial.from_params(jnp.zeros(2), 1.0, -1.0)  # the boundary beta = -alpha is invertible


def test_dimension_and_context_mismatches_are_shape_errors():
    key = jax.random.PRNGKey(0)
    with pytest.raises(genvi.ShapeError, match="layer 1 .* dim 3 but the base has dimension 2"):
        flows.Flow(2, [flows.Planar(2, key=key), flows.Planar(3, key=key)])
    with pytest.raises(genvi.ShapeError, match="event shape"):
        flows.Flow(dist.Normal(0.0, 1.0), [flows.Planar(2, key=key)])
    with pytest.raises(genvi.ShapeError, match="cond_dim"):
        flows.Flow(2, [flows.Planar(2, key=key, cond_dim=3), flows.IAF(2, key=key, cond_dim=4)])
    amortised = flows.Flow(2, [flows.IAF(2, key=key, cond_dim=3)])
    with pytest.raises(genvi.ShapeError, match="context of shape"):
        amortised()
    with pytest.raises(genvi.ShapeError, match="context of shape"):
        amortised(jnp.zeros(4))
    with pytest.raises(genvi.ShapeError, match="no layer is conditional"):
        flows.Flow(2, [flows.Planar(2, key=key)])(jnp.zeros(3))
    with pytest.raises(genvi.ShapeError, match="event shape"):
        flows.Flow(2, [flows.Planar(2, key=key)])(base=dist.Normal(jnp.zeros(3), 1.0).to_event(1))
    with pytest.raises(genvi.ShapeError, match=r"shape \(\.\.\., 2\)"):
        flows.Flow(2, [flows.Planar(2, key=key)])().log_prob(jnp.zeros(3))


def _composite(key):
    k = jax.random.split(key, 4)
    return flows.Flow(D, [flows.Planar(D, key=k[0], init_scale=0.5), flows.Radial(D, key=k[1]),
                          flows.IAF(D, key=k[2], hidden=8), flows.Reverse(D),
                          flows.SplineCoupling(D, key=k[3], hidden=8, knots=4)])


def test_flow_density_is_exact_and_normalised():
    flow = _perturb(_composite(jax.random.PRNGKey(0)), jax.random.PRNGKey(1), 0.3)
    q = flow()
    y, log_q = jax.jit(lambda k: q.sample_and_log_prob(k, (256,)))(jax.random.PRNGKey(2))
    log_prob = jax.jit(q.log_prob)
    np.testing.assert_allclose(log_prob(y), log_q, rtol=1e-4, atol=1e-4)
    # importance check of normalisation: E_{N(0, 3^2 I)}[q(y) / N(y)] = 1
    wide = dist.Normal(jnp.zeros(D), 3.0).to_event(1)
    x = wide.sample(jax.random.PRNGKey(3), (20_000,))
    ratio = np.asarray(jnp.exp(log_prob(x) - wide.log_prob(x)), np.float64)
    assert abs(ratio.mean() - 1.0) < 5 * ratio.std() / np.sqrt(ratio.size)


def test_shapes_and_dtypes_through_vmap():
    key = jax.random.PRNGKey(0)
    flow = flows.Flow(D, [flows.IAF(D, key=key, hidden=8, cond_dim=C), flows.Planar(D, key=key, cond_dim=C)])
    contexts = jax.random.normal(key, (5, C))
    q = flow(contexts)  # a batch of 5 conditional distributions
    assert q.batch_shape == (5,) and q.event_shape == (D,)
    y = q.rsample(key, (7,))
    assert y.shape == (7, 5, D) and y.dtype == jnp.float32
    log_q = q.log_prob(y)
    assert log_q.shape == (7, 5) and log_q.dtype == jnp.float32
    per_context = jax.vmap(lambda c, v: flow(c).log_prob(v), in_axes=(0, 1), out_axes=1)(contexts, y)
    np.testing.assert_allclose(per_context, log_q, rtol=1e-5, atol=1e-5)
    draws = jax.vmap(lambda k, c: flow(c).sample(k))(jax.random.split(key, 5), contexts)
    assert draws.shape == (5, D) and draws.dtype == jnp.float32


def test_flow_site_in_a_genvi_plate_reparameterised_and_scored():
    key = jax.random.PRNGKey(0)
    flow = flows.Flow(D, [flows.Planar(D, key=key, cond_dim=C, init_scale=0.5), flows.Radial(D, key=key)])

    @gen
    def point_guide(params, x):
        loc, flow = params
        sample("z", flow(x, base=dist.Normal(loc, 1.0).to_event(1)))

    guide = genvi.vmap(point_guide, in_axes=(None, 0), plate="data")
    x = jax.random.normal(key, (4, C))
    params = (jnp.full(D, 0.5), flow)
    tr = guide.simulate(key, params, x)
    z = tr.choices["z"]
    assert z.shape == (4, D)
    expected = sum(flow(x[n], base=dist.Normal(params[0], 1.0).to_event(1)).log_prob(z[n]) for n in range(4))
    np.testing.assert_allclose(tr.log_density, expected, rtol=1e-5, atol=1e-5)

    @genvi.expectation
    def mean_sum(params, x):
        return jnp.sum(guide.sim(params, x).choices["z"])

    # REPARAM: the gradient is pathwise through the flow, so it matches direct rsample gradients
    genvi_grads = draws(lambda k: mean_sum.grad_estimate(k, params, x)[0], jax.random.PRNGKey(1), 500)

    def direct(k):
        def total(loc):
            one = lambda c, kk: flow(c, base=dist.Normal(loc, 1.0).to_event(1)).rsample(kk)  # noqa: E731
            return jnp.sum(jax.vmap(one)(x, jax.random.split(k, 4)))
        return jax.grad(total)(params[0])

    assert_same_mean(genvi_grads, draws(direct, jax.random.PRNGKey(2), 500))
    assert float(jnp.std(genvi_grads[:, 0])) > 0  # a real pathwise gradient, not a constant


def test_flow_guide_fits_a_correlated_gaussian():
    mu = jnp.array([1.0, -1.0])
    cov = jnp.array([[1.0, 0.9], [0.9, 1.0]])

    @gen
    def target(_):
        sample("z", dist.MultivariateNormal(mu, cov))

    @gen
    def guide(flow):
        sample("z", flow())

    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    flow = flows.Flow(2, [flows.IAF(2, key=keys[0], hidden=16), flows.Reverse(2), flows.IAF(2, key=keys[1], hidden=16)])
    objective = elbo(target, guide, particles=32, stl=True)
    result = vi.fit(objective, (None, flow), optimizer=optax.adam(optax.cosine_decay_schedule(2e-2, 1200)),
                    num_steps=1200, key=0, progress=False)
    x, log_q = result.params[1]().sample_and_log_prob(jax.random.PRNGKey(1), (20_000,))
    kl = np.asarray(log_q - dist.MultivariateNormal(mu, cov).log_prob(x), np.float64)
    assert kl.mean() + 4 * kl.std() / np.sqrt(kl.size) < 0.01, (kl.mean(), kl.std())


def test_energies_quadrature_and_annealed_elbo():
    gauss = lambda z: 0.5 * jnp.sum(z ** 2, -1)  # noqa: E731  log Z = log(2 pi)
    np.testing.assert_allclose(flows.log_normaliser(gauss, half_width=8.0, n=801), np.log(2 * np.pi), rtol=1e-5)
    u1 = flows.energy("U1")
    assert u1(jnp.zeros((5, 2))).shape == (5,)
    confined = flows.energy("U2", confined=True)
    np.testing.assert_allclose(confined(jnp.array([2.0, 0.0])) - flows.energy("U2")(jnp.array([2.0, 0.0])), 0.5)

    @gen
    def guide(flow):
        sample("z", flow())

    identity = flows.Flow(2, [])  # q = N(0, I): E_q[-U - log q] = log 2 pi exactly, per draw
    objective = elbo(flows.energy_model(gauss), guide)
    np.testing.assert_allclose(objective.estimate(jax.random.PRNGKey(0), (1.0, identity)), np.log(2 * np.pi), rtol=1e-5)
    planar = flows.Flow(2, [flows.Planar(2, key=jax.random.PRNGKey(0))])
    fitted, losses = flows.fit_annealed(objective, planar, num_steps=20, key=0, chunk=10)
    assert losses.shape == (20,) and np.all(np.isfinite(losses))
    assert jax.tree.structure(fitted) == jax.tree.structure(planar)
    with pytest.raises(genvi.ConfigError, match="U1"):
        flows.energy("U5")
