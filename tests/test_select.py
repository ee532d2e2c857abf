"""`genvi.vi.select`: choosing among candidates by final ELBO, restarts, evidence and bad inputs."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import genvi
import genvi.models.ppca as ppca
import genvi.vi as vi
from genvi import gen, sample

HERE = pathlib.Path(__file__).resolve().parent


@gen
def _obs(mu, sd, x):
    sample("x", dist.Normal(mu, sd), obs=x)


_rows = genvi.vmap(_obs, in_axes=(None, None, 0), plate="data")


@gen
def shift_model(prior_sd, x):
    """`mu ~ N(0, prior_sd)`, `x_i ~ N(mu, 1)`: conjugate, log p(x) in closed form."""
    mu = sample("mu", dist.Normal(0.0, prior_sd))
    sample("rows", _rows(mu, 1.0, x))


@gen
def shift_guide(q, x):
    loc, scale = q
    sample("mu", dist.Normal(loc, scale))


def shift_factory(key):
    return 1.0, (jax.random.normal(key), jnp.array(0.5))


def _shift_data(n=40, mean=1.5):
    return jnp.asarray(np.random.default_rng(0).normal(mean, 1.0, size=n), jnp.float32)


def _shift(**kw):
    x = _shift_data()
    options = dict(restarts=3, num_steps=150, key=0, progress=False, eval_particles=64, evidence_particles=64)
    return vi.select({"shift": (shift_model, shift_guide, shift_factory)}, x, **{**options, **kw})


def test_same_key_same_result_different_key_different_result():
    a, b, c = _shift(), _shift(), _shift(key=1)
    np.testing.assert_array_equal(a["shift"].elbos, b["shift"].elbos)
    np.testing.assert_array_equal(a["shift"].losses, b["shift"].losses)
    assert not np.allclose(a["shift"].losses, c["shift"].losses)
    # restarts are independent: distinct starts and distinct gradient noise
    losses = a["shift"].losses
    assert len({float(v) for v in losses[0]}) == 3 and len({float(v) for v in losses[-1]}) == 3


def test_evidence_between_elbo_and_exact_log_marginal():
    """Fixed-loadings PPCA: log p(x) is closed form; ELBO <= IWAE evidence <= log p(x)."""
    rng = np.random.default_rng(2)
    w = jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)
    mean, noise = jnp.zeros(4), 0.5
    x = jnp.asarray(rng.normal(size=(30, 2)) @ np.asarray(w).T + np.sqrt(noise) * rng.normal(size=(30, 4)),
                    jnp.float32)
    exact = float(ppca.marginal_log_likelihood(x, w, mean, noise))
    res = vi.select({"fixed": (ppca.fixed_model, ppca.fixed_guide, ppca.fixed_init(w, mean, noise, 30))}, x,
                    restarts=2, num_steps=400, key=0, progress=False, eval_particles=256, evidence_particles=512)
    c = res["fixed"]
    r = c.best_restart
    gap_se = np.hypot(c.elbo_ses[r], c.evidence_ses[r])
    assert c.evidence > c.best + 4 * gap_se  # strictly tighter: the mean-field guide misses correlations
    assert c.evidence <= exact + 4 * c.evidence_se
    assert c.best < exact


def test_empty_candidate_list_is_an_error():
    with pytest.raises(genvi.ConfigError, match="candidate list is empty"):
        vi.select({}, _shift_data(), num_steps=10, key=0)


def test_data_arrays_that_disagree_are_named():
    with pytest.raises(genvi.ShapeError, match=r"disagree.*\(40,\).*\(30,\)"):
        vi.select({"shift": (shift_model, shift_guide, shift_factory)}, _shift_data(), jnp.zeros(30),
                  num_steps=10, key=0)


def test_candidate_whose_shapes_do_not_fit_the_data_is_named():
    x = jnp.zeros((20, 5))
    cands = {"k=2 on d=4": (ppca.model, ppca.guide, ppca.init(2, jnp.zeros((20, 4))))}
    with pytest.raises(genvi.ShapeError, match=r"candidate 'k=2 on d=4' cannot be evaluated.*\(20, 5\)"):
        vi.select(cands, x, num_steps=10, key=0, progress=False)


def test_nonfinite_restart_is_excluded_with_a_warning():
    calls = []

    def factory(key):  # the second restart starts with a negative scale: log q is NaN
        calls.append(1)
        return 1.0, (jax.random.normal(key), jnp.array(-0.5 if len(calls) == 2 else 0.5))

    x = _shift_data()
    with pytest.warns(vi.SelectionWarning, match=r"candidate 'bad', restart 1 is excluded.*step 0.*site 'mu'"):
        res = vi.select({"bad": (shift_model, shift_guide, factory)}, x, restarts=3, num_steps=50, key=0,
                        progress=False, eval_particles=16, evidence_particles=0)
    c = res["bad"]
    assert c.excluded == (1,) and np.isnan(c.elbos[1]) and np.all(np.isfinite(c.elbos[[0, 2]]))
    assert np.isfinite(c.best) and np.isfinite(c.mean)


def test_options_out_of_range_are_errors():
    cands = {"shift": (shift_model, shift_guide, shift_factory)}
    with pytest.raises(genvi.ConfigError, match="restarts=0"):
        vi.select(cands, _shift_data(), restarts=0, num_steps=10, key=0)
    with pytest.raises(genvi.ConfigError, match="triple"):
        vi.select({"a": (shift_model, shift_guide)}, _shift_data(), num_steps=10, key=0)


_MESH_WORKER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import jax, numpy as np
import genvi._select as S
from test_select import _shift
assert jax.device_count() == 8
one = _shift(restarts=8, evidence_particles=0)
many = _shift(restarts=8, evidence_particles=0, mesh="auto")
try:
    _shift(restarts=3, mesh="auto")
    uneven = ""
except Exception as err:
    uneven = str(err)
print(json.dumps({"one": one["shift"].elbos.tolist(), "many": many["shift"].elbos.tolist(),
                  "losses_one": one["shift"].losses[-1].tolist(), "losses_many": many["shift"].losses[-1].tolist(),
                  "uneven": uneven}))
"""


def test_restarts_sharded_over_eight_devices_match_one_device():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", _MESH_WORKER, str(HERE)], env=env, capture_output=True,
                         text=True, timeout=900, cwd=HERE)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(got["many"], got["one"], rtol=1e-5)
    np.testing.assert_allclose(got["losses_many"], got["losses_one"], rtol=1e-5)
    assert "restarts=3" in got["uneven"] and "multiple of 8" in got["uneven"]
