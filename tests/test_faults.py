"""Faults injected during training: a NaN in a log density or in a gradient at a chosen step, and
a `KeyboardInterrupt` between chunks or while a checkpoint is being written.

The step is chosen exactly: a parameter `t` is advanced by one per step by its own optax
transform (it gets no gradient), and the model turns faulty when `t` equals the chosen step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax
import pytest
from exact import plated, reg_guide, reg_model

import genvi.vi as vi
from genvi import FitError, gen, sample
from genvi.objectives import elbo

FAULT_STEP = 37
ROWS = np.stack([np.linspace(-1, 1, 40), 2 * np.linspace(-1, 1, 40) + 0.1], axis=1).astype(np.float32)


def _counter() -> optax.GradientTransformation:
    """Ignore the gradient; move the leaf by +1 each step (a step clock inside the parameters)."""
    return optax.GradientTransformation(lambda p: optax.EmptyState(),
                                        lambda g, s, p=None: (jax.tree.map(jnp.ones_like, g), s))


OPTIMIZER = optax.multi_transform({"w": optax.adam(1e-2), "t": _counter()}, (("w", "t"), None))
PARAMS = ((jnp.array(0.0), jnp.array(0.0)), None)


@gen
def nan_density_point(p, row):
    w, t = p
    scale = jnp.where(t == FAULT_STEP, jnp.nan, 1.0)
    sample("y", dist.Normal(w * row[0], scale), obs=row[1])


@gen
def nan_gradient_point(p, row):
    w, t = p
    # sqrt at 0: finite value, infinite derivative times zero -> a NaN gradient for w only then
    bump = jnp.sqrt(jnp.where(t == FAULT_STEP, w - w, 1.0))
    sample("y", dist.Normal(w * row[0] + bump, 1.0), obs=row[1])


def _objective(point):
    return elbo(plated(point), plated(reg_guide))


REGRESSION_OBJECTIVE = _objective(reg_model)


def _fit(point, **kwargs):
    kwargs.setdefault("num_steps", 100)
    return vi.fit(_objective(point), PARAMS, ROWS, optimizer=OPTIMIZER, key=0, progress=False, chunk_size=25,
                  **kwargs)


def test_nan_log_density_at_a_chosen_step_names_step_and_site():
    with pytest.raises(FitError, match=rf"fit stopped at step {FAULT_STEP}: the log density of site 'y'") as info:
        _fit(nan_density_point)
    err = info.value
    assert err.step == FAULT_STEP and err.site == "y"
    (w, t), _ = err.params
    assert float(t) == FAULT_STEP and np.isfinite(float(w))


def test_nan_gradient_at_a_chosen_step_names_step_and_parameter():
    with pytest.raises(FitError, match=rf"fit stopped at step {FAULT_STEP}: the gradient of parameter "
                                       r"\[0\]\[0\] is not finite") as info:
        _fit(nan_gradient_point)
    assert info.value.step == FAULT_STEP and info.value.site is None


@pytest.mark.parametrize("point", [nan_density_point, nan_gradient_point])
def test_skip_mode_skips_exactly_the_faulty_step(point):
    res = _fit(point, on_nonfinite="skip")
    # the clock does not advance on a skipped step, so the fault repeats until num_steps is used up
    (w, t), _ = res.params
    assert res.steps == 100 and float(t) == FAULT_STEP and res.skipped == 100 - FAULT_STEP
    assert np.isfinite(float(w)) and np.all(np.isfinite(res.losses[:FAULT_STEP]))


def test_keyboard_interrupt_between_chunks_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "run.npz"

    def interrupt(step, params, losses):
        if step == 50:
            raise KeyboardInterrupt

    run = dict(key=0, progress=False, num_steps=100, chunk_size=25)
    res = vi.fit(REGRESSION_OBJECTIVE, (jnp.array(0.0), None), ROWS, checkpoint=path, checkpoint_every=25,
                 callbacks=[interrupt], **run)
    assert res.interrupted and res.steps == 50 and len(res.losses) == 50
    assert np.isfinite(float(res.params[0]))
    resumed = vi.fit(REGRESSION_OBJECTIVE, (jnp.array(0.0), None), ROWS, checkpoint=path, resume=True, **run)
    straight = vi.fit(REGRESSION_OBJECTIVE, (jnp.array(0.0), None), ROWS, **run)
    np.testing.assert_array_equal(resumed.losses, straight.losses)
    np.testing.assert_array_equal(resumed.params[0], straight.params[0])


def test_keyboard_interrupt_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "run.npz"
    vi.fit(REGRESSION_OBJECTIVE, (jnp.array(0.0), None), ROWS, key=0, progress=False, num_steps=25,
           checkpoint=path)
    before = path.read_bytes()

    def interrupted_savez(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted_savez)
    res = vi.fit(REGRESSION_OBJECTIVE, (jnp.array(0.0), None), ROWS, key=0, progress=False, num_steps=50,
                 checkpoint=path, resume=True)
    assert res.interrupted and res.steps == 50
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["run.npz"]

