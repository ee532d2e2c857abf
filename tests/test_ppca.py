"""PPCA family: the collapsed likelihood is the closed form, selection finds the rank, the loading
prior scale is the type-II optimum."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

import genvi
import genvi.models.ppca as ppca
import genvi.vi as vi
from genvi.objectives import elbo

matplotlib.use("Agg")
analytic = functools.partial(elbo, analytic_kl=True)


@pytest.fixture(scope="module")
def easy():
    """Rank-2 PPCA data with a clear signal, d=6, n=150: candidates k = 1, 2, 3."""
    rng = np.random.default_rng(1)
    loadings = 3.0 * np.linalg.qr(rng.normal(size=(6, 6)))[0][:, :2]
    x = jnp.asarray(rng.normal(size=(150, 2)) @ loadings.T + rng.normal(size=(150, 6)), jnp.float32)
    cands = {f"k={k}": ppca.candidate(k, x, width=3) for k in (1, 2, 3)}  # one compiled batch
    return x, vi.select(cands, x, objective=analytic, criterion=analytic, restarts=2, num_steps=400, key=0,
                        progress=False, eval_particles=64, evidence_particles=0)


def test_select_picks_the_true_rank_on_an_easy_case(easy):
    _, res = easy
    assert res.winner == "k=2"
    best = res.best
    assert best[1] - best[0] > 20 * res["k=1"].se  # k=1 misses a strong component by far
    assert best[1] > best[2]  # the extra component costs evidence (an Occam penalty)
    assert "k=1" not in res.ties


def test_table_and_plot_show_every_candidate(easy):
    _, res = easy
    table = res.table()
    assert table.count("\n") == 4 and "winner" in table and "k=3" in table
    fig = res.plot()
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["k=1", "k=2", "k=3"]
    matplotlib.pyplot.close(fig)


def test_final_elbo_is_many_particle_estimate_not_last_training_loss(easy):
    c = easy[1]["k=2"]
    assert c.elbos.shape == (2,) and np.all(c.elbo_ses > 0)
    # the 64-particle evaluation error is far below the step-to-step training noise
    assert np.all(c.elbo_ses < np.nanstd(c.losses[-50:], axis=0))


def test_learned_prior_scale_is_the_type_two_optimum(easy):
    """d/ds KL(q(W) || N(0, s^2)) = 0 at s^2 = mean(loc^2 + scale^2): the ELBO's argmax in s."""
    model_params, guide_params = easy[1]["k=2"].params
    s = float(jnp.exp(model_params.log_prior_scale))
    on = guide_params.active > 0
    second = guide_params.w_loc ** 2 + jnp.exp(2 * guide_params.w_log_scale)
    optimum = float(jnp.sqrt(jnp.mean(second[:, on])))
    assert abs(s - optimum) < 0.05 * optimum


def test_collapsed_likelihood_is_the_closed_form_marginal():
    rng = np.random.default_rng(0)
    w, mean = jnp.asarray(rng.normal(size=(5, 2)), jnp.float32), jnp.asarray(rng.normal(size=5), jnp.float32)
    x = jnp.asarray(rng.normal(size=(7, 5)), jnp.float32)
    params = ppca.ModelParams(mean, jnp.zeros(()), jnp.ones(()), jnp.ones(2))
    score = jax.jit(lambda c, p, x: ppca.model.score(c, p, x).site_log_densities.flat()["rows/x"])
    rows = score({"W": w, "noise": jnp.array(0.7)}, params, x)
    assert rows.shape == (7,)
    np.testing.assert_allclose(rows.sum(), ppca.marginal_log_likelihood(x, w, mean, 0.7), rtol=1e-5)


def test_padded_columns_add_nothing():
    """k = 2 padded to width 4 has the log density of k = 2: padding is N(0, 1) under both."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(9, 5)), jnp.float32)
    (mp2, gp2), (mp4, gp4) = (ppca.init(2, x, width=w)(jax.random.PRNGKey(0)) for w in (2, 4))
    w4 = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
    p_of, q_of = jax.jit(ppca.model.log_density), jax.jit(ppca.guide.log_density)
    p2 = p_of({"W": w4[:, :2], "noise": jnp.array(0.8)}, mp2, x)
    p4 = p_of({"W": w4, "noise": jnp.array(0.8)}, mp4, x)
    n01 = jnp.sum(jax.scipy.stats.norm.logpdf(w4[:, 2:]))
    np.testing.assert_allclose(p4, p2 + n01, rtol=1e-5)
    q4 = q_of({"W": w4, "noise": jnp.array(0.8)}, gp4, x)
    gp2 = ppca.GuideParams(gp4.w_loc[:, :2], gp4.w_log_scale[:, :2], gp4.noise_loc, gp4.noise_log_scale,
                           gp4.active[:2])
    q2 = q_of({"W": w4[:, :2], "noise": jnp.array(0.8)}, gp2, x)
    np.testing.assert_allclose(q4, q2 + n01, rtol=1e-5)  # so log p - log q is the k = 2 value
    assert mp4.k == 2


def test_fixed_prior_scale_gets_no_gradient():
    x = jnp.asarray(np.random.default_rng(4).normal(size=(20, 4)), jnp.float32)
    grads, objective = [], analytic(ppca.model, ppca.guide)
    for scale in (0.1, "learned"):  # same shapes: one compile
        params = ppca.init(2, x, prior_scale=scale)(jax.random.PRNGKey(0))
        grads.append(objective.grad_estimate(jax.random.PRNGKey(1), params, x)[0])
    assert float(grads[0].log_prior_scale) == 0.0 and float(grads[1].log_prior_scale) != 0.0
    assert float(jnp.abs(grads[1].active).sum()) == 0.0 and float(jnp.abs(grads[1].learn_scale)) == 0.0


@pytest.mark.parametrize("call,match", [
    (lambda: ppca.init(0, jnp.zeros((4, 3))), r"k=0"),
    (lambda: ppca.init(2, jnp.zeros((4, 3)), prior_scale=-1.0), r"prior_scale=-1.0"),
    (lambda: ppca.init(2, jnp.zeros(4)), r"shape \(4,\)"),
    (lambda: ppca.init(3, jnp.zeros((4, 3)), width=2), r"width=2"),
    (lambda: ppca.fixed_init(jnp.zeros((4, 2)), jnp.zeros(3), 1.0, 10), r"\(4, 2\) and \(3,\)"),
])
def test_bad_configuration_is_named(call, match):
    with pytest.raises(genvi.GenviError, match=match):
        call()
