"""`vi.fit`: training loop, minibatches, non-finite values, checkpoints, resume."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest
from conftest import assert_unbiased
from exact import plate_elbo_exact, plate_guide, plate_model, plated, reg_guide, reg_model

import genvi.vi as vi
from genvi import ConfigError, FitError, ShapeError, gen, sample
from genvi import _plates
from genvi.estimators import ENUM
from genvi.objectives import elbo



DATA = jnp.stack([jnp.linspace(-1, 1, 40), 2.0 * jnp.linspace(-1, 1, 40) + 0.1], axis=1)
regression = elbo(plated(reg_model), plated(reg_guide))


def test_fit_maximises_and_returns_numpy_losses():
    res = vi.fit(regression, (jnp.array(0.0), None), DATA, optimizer=optax.adam(0.1), num_steps=300, key=0,
                 progress=False)
    assert isinstance(res.losses, np.ndarray) and res.losses.shape == (300,) and res.steps == 300
    assert res.losses[-1] < res.losses[0]
    np.testing.assert_allclose(res.params[0], 2.0, atol=0.05)


def test_minibatch_gradient_is_unbiased_for_the_full_batch_gradient():
    """Mean over random minibatches of the N/B-scaled gradient equals the full-data gradient."""
    n, b = 30, 7
    xs = jax.random.normal(jax.random.PRNGKey(0), (n,))
    params = (jnp.array(0.2), jax.random.normal(jax.random.PRNGKey(1), (n,)))
    objective = elbo(plate_model, plate_guide).with_estimators({"z": ENUM})
    exact = jax.grad(plate_elbo_exact)(params, xs)

    def minibatch_grad(key):
        index = jax.random.permutation(key, n)[:b]
        with _plates.subsampling(n, b) as ctx:
            g = objective.grad_estimate(0, (params[0], params[1][index]), xs[index])
        assert ctx.used
        return g[0]  # the global parameter's gradient

    grads = jax.vmap(minibatch_grad)(jax.random.split(jax.random.PRNGKey(2), 20_000))
    assert_unbiased(grads, exact[0])


def test_fit_refuses_minibatches_without_a_data_plate():
    @gen
    def flat(w, x):
        sample("y", dist.Normal(w * x[:, 0], 1.0).to_event(1), obs=x[:, 1])

    objective = elbo(flat, reg_guide)
    with pytest.raises(ConfigError, match=r"batch_size=8\) .* no named plate of that size"):
        vi.fit(objective, (jnp.array(0.0), None), DATA, num_steps=5, key=0, batch_size=8, progress=False)


def test_same_key_same_result_and_chunking_does_not_matter():
    a = vi.fit(regression, (jnp.array(0.0), None), DATA, num_steps=50, key=3, batch_size=8, progress=False)
    b = vi.fit(regression, (jnp.array(0.0), None), DATA, num_steps=50, key=3, batch_size=8, progress=False,
               chunk_size=7)
    np.testing.assert_array_equal(a.losses, b.losses)
    np.testing.assert_array_equal(a.params[0], b.params[0])


def test_resume_is_bit_identical(tmp_path):
    net = jnp.array(0.0), None
    straight = vi.fit(regression, net, DATA, num_steps=1000, key=1, batch_size=8, progress=False)
    path = tmp_path / "ckpt.npz"
    first = vi.fit(regression, net, DATA, num_steps=500, key=1, batch_size=8, progress=False, checkpoint=path)
    assert first.steps == 500 and path.exists()
    resumed = vi.fit(regression, net, DATA, num_steps=1000, key=1, batch_size=8, progress=False,
                     checkpoint=path, resume=True)
    np.testing.assert_array_equal(resumed.losses, straight.losses)
    np.testing.assert_array_equal(resumed.params[0], straight.params[0])


def test_existing_checkpoint_is_not_overwritten(tmp_path):
    path = tmp_path / "ckpt.npz"
    vi.fit(regression, (jnp.array(0.0), None), DATA, num_steps=10, key=1, progress=False, checkpoint=path)
    before = path.read_bytes()
    with pytest.raises(FitError, match=r"already exists; pass resume=True"):
        vi.fit(regression, (jnp.array(0.0), None), DATA, num_steps=10, key=1, progress=False, checkpoint=path)
    assert path.read_bytes() == before


def test_corrupted_checkpoint_gives_a_clear_error_and_is_kept(tmp_path):
    path = tmp_path / "ckpt.npz"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(FitError, match=r"cannot read checkpoint .* left untouched"):
        vi.fit(regression, (jnp.array(0.0), None), DATA, num_steps=10, key=1, progress=False,
               checkpoint=path, resume=True)
    assert path.read_bytes() == b"not a checkpoint"


def test_checkpoint_from_a_different_model(tmp_path):
    path = tmp_path / "ckpt.npz"
    vi.fit(regression, (jnp.array(0.0), None), DATA, num_steps=10, key=1, progress=False, checkpoint=path)
    with pytest.raises(FitError, match=r"written for a different model"):
        vi.fit(regression, (jnp.array(0.0), jnp.zeros(2)), DATA, num_steps=20, key=1, progress=False,
               checkpoint=path, resume=True)


def test_nonfinite_log_density_names_step_and_site():
    @gen
    def model(w, x):
        scale = jnp.where(w > 1.0, -1.0, 1.0)  # invalid scale once w passes 1
        sample("y", dist.Normal(w * x[0], scale), obs=x[1])

    objective = elbo(plated(model),
                     plated(reg_guide))
    with pytest.raises(FitError, match=r"fit stopped at step (\d+): the log density of site 'y' is not finite") as info:
        vi.fit(objective, (jnp.array(0.0), None), DATA, optimizer=optax.sgd(0.01), num_steps=400, key=0,
               progress=False)
    err = info.value
    assert err.site == "y" and err.step > 0
    # err.params are the parameters the failing step started from: finite, and just past w = 1
    assert np.isfinite(err.params[0]) and 1.0 < float(err.params[0]) < 1.2


def test_nonfinite_skip_mode_counts_skipped_steps():
    @gen
    def model(w, x):
        bad = jnp.where(x[0] > 0.9, jnp.nan, 0.0)
        sample("y", dist.Normal(w * x[0] + bad, 1.0), obs=x[1])

    objective = elbo(plated(model),
                     plated(reg_guide))
    res = vi.fit(objective, (jnp.array(0.0), None), DATA, num_steps=200, key=0, batch_size=4,
                 on_nonfinite="skip", progress=False)
    assert 0 < res.skipped < 200 and np.isfinite(res.params[0])


def test_bad_arguments():
    with pytest.raises(ConfigError, match=r"num_steps=0"):
        vi.fit(regression, (jnp.array(0.0), None), DATA, num_steps=0, key=0)
    with pytest.raises(ConfigError, match=r"batch_size=41"):
        vi.fit(regression, (jnp.array(0.0), None), DATA, num_steps=5, key=0, batch_size=41)
    with pytest.raises(ConfigError, match=r"batch_size=0"):
        vi.fit(regression, (jnp.array(0.0), None), DATA, num_steps=5, key=0, batch_size=0)
    with pytest.raises(FitError, match=r"not finite at the start"):
        vi.fit(regression, (jnp.array(jnp.nan), None), DATA, num_steps=5, key=0)
    with pytest.raises(ShapeError, match=r"disagree on their leading"):
        vi.fit(regression, (jnp.array(0.0), None), DATA, DATA[:3], num_steps=5, key=0)
    with pytest.raises(ConfigError, match=r"on_nonfinite='ignore'"):
        vi.fit(regression, (jnp.array(0.0), None), DATA, num_steps=5, key=0, on_nonfinite="ignore")


def test_callback_can_stop_and_result_stays_usable():
    seen = []

    def stop_after_two_chunks(step, params, losses):
        seen.append(step)
        return len(seen) == 2

    res = vi.fit(regression, (jnp.array(0.0), None), DATA, num_steps=500, key=0, chunk_size=50,
                 callbacks=[stop_after_two_chunks], progress=False)
    assert res.interrupted and res.steps == 100 and len(res.losses) == 100 and seen == [50, 100]


def test_steps_compile_once(monkeypatch):
    """Every chunk reuses one compiled function, whatever the number of chunks."""
    from genvi import _step

    traces = []
    original = _step.step_fn

    def counting(*args, **kwargs):
        step = original(*args, **kwargs)

        def wrapped(*a, **k):
            traces.append(1)
            return step(*a, **k)

        return wrapped

    monkeypatch.setattr(_step, "step_fn", counting)
    vi.fit(regression, (jnp.array(0.0), None), DATA, num_steps=1000, key=0, chunk_size=100, progress=False)
    assert len(traces) == 1


def test_progress_log_lines_without_a_terminal(capsys):
    vi.fit(regression, (jnp.array(0.0), None), DATA, num_steps=100, key=0, chunk_size=10)
    err = capsys.readouterr().err
    assert "genvi.fit: step 100/100" in err and err.count("genvi.fit: step") <= 11


def test_strategy_runs_between_chunks_and_may_replace_params():
    class Reset(vi.Strategy):
        every: int = 50

        def update(self, step, params, opt_state, context):
            grads = context.grad(params)
            assert np.isfinite(grads[0])
            return (params[0] * 0.0, params[1]), opt_state

    calls = []
    res = vi.fit(regression, (jnp.array(0.0), None), DATA, optimizer=optax.adam(0.1), num_steps=120, key=0,
                 strategy=Reset(), progress=False, callbacks=[lambda s, p, l: calls.append((s, float(p[0])))])
    # chunks of gcd(100, 50) = 50 steps; the strategy zeroes w at steps 50 and 100, not at the end
    assert [c[0] for c in calls] == [50, 100, 120]
    assert calls[0][1] == 0.0 and calls[1][1] == 0.0 and res.params[0] != 0.0


def test_training_runs_with_one_blas_thread():
    """XLA calls LAPACK from its own threads; a threaded OpenBLAS beneath them can deadlock, so
    fit holds the BLAS pools at one thread while it trains and restores them afterwards."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    jnp.linalg.cholesky(jnp.eye(2)).block_until_ready()  # load the LAPACK that XLA uses
    before = [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]
    seen = []

    def record(step, params, losses):
        seen.extend(p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas")

    vi.fit(regression, (jnp.array(0.0), None), DATA, num_steps=20, key=0, chunk_size=10, progress=False,
           callbacks=[record])
    assert seen and set(seen) == {1}
    assert [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"] == before
