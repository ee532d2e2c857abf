"""The catalogue of bad inputs: each row is a mistake a user makes, the error class it must raise
and a message that names the site, option or shape at fault (and, where there is one, the fix).

Every row runs through one harness that also checks that nothing the user passed in was mutated
and that no file was written, half-written or changed. A family adds its rows to `CATALOGUE`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import shutil
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from exact import (BERN_PARAMS, NORMAL_PARAMS, bern_guide, bern_model, normal_guide, normal_model, plated, reg_guide,
                   reg_model)

import genvi
import genvi.vi as vi
from genvi import (AddressError, ConfigError, DomainError, EstimatorError, FitError, GenviError, ShapeError,
                   expectation, gen, sample)
from genvi.estimators import ENUM, MVD, REINFORCE, REPARAM, LeaveOneOut, RunningMean
from genvi.models import fbm_sde, flows, ssvi, tucker_gp
from genvi.objectives import elbo, iwae, renyi, vimco


@dataclasses.dataclass
class Inputs:
    """What a case may pass to the library: NumPy arrays (mutable, so mutation would show) and a
    folder holding a valid checkpoint of the regression model."""

    data: np.ndarray  # (40, 2) rows of (x, y)
    params: tuple  # (w, None) for the regression model
    folder: pathlib.Path
    checkpoint: pathlib.Path


@dataclasses.dataclass(frozen=True)
class Bad:
    name: str
    call: Callable[[Inputs], Any]
    error: type[Exception]
    match: str


# --- small models the rows use ----------------------------------------------------------------
REGRESSION = elbo(plated(reg_model), plated(reg_guide))


@gen
def global_model(mu, x):
    z = sample("z", dist.Normal(mu, 1.0))
    sample("x", plated(obs_point)(z, x))


@gen
def obs_point(z, x):
    sample("x", dist.Normal(z, 1.0), obs=x)


@gen
def global_guide(phi, x):
    sample("z", dist.Normal(phi[0], jnp.exp(phi[1])))


@gen
def guide_with_extra_site(phi, x):
    m, log_s = phi
    sample("z", dist.Normal(m, jnp.exp(log_s)))
    sample("u", dist.Normal(0.0, 1.0))


@gen
def guide_without_the_latent(phi, x):
    return None


@gen
def poisson_model(rate, n):
    sample("n", dist.Poisson(rate), obs=n)


@gen
def bernoulli_obs(p, x):
    sample("x", dist.Bernoulli(probs=p), obs=x)


@gen
def exponential_obs(rate, x):
    sample("x", dist.Exponential(rate), obs=x)


@gen
def twice():
    sample("z", dist.Normal(0.0, 1.0))
    sample("z", dist.Normal(0.0, 1.0))


@gen
def wide_categorical(logits):
    sample("c", dist.Categorical(logits=logits), estimator=ENUM)


@gen
def gamma_mvd(a):
    sample("w", dist.Gamma(a, 1.0), estimator=MVD)


@gen
def not_a_distribution():
    sample("z", 3.0)


@gen
def step(carry, x):
    z = sample("z", dist.Normal(carry, 1.0))
    return z, z


@gen
def unplated(mu, x):
    z = sample("z", dist.Normal(mu, 1.0))
    sample("x", dist.Normal(z, 1.0).expand(x.shape).to_event(1), obs=x)


def numpyro_model(x):
    loc = numpyro.param("loc", 0.0)
    numpyro.sample("x", dist.Normal(loc, 1.0), obs=x)


# --- the rows ---------------------------------------------------------------------------------
def _fit(i: Inputs, objective=REGRESSION, params=None, **kwargs) -> Any:
    kwargs.setdefault("num_steps", 5)
    return vi.fit(objective, i.params if params is None else params, i.data, key=0, progress=False, **kwargs)


def _estimate(objective, params, *data) -> Any:
    return objective.estimate(0, params, *data)


def _program_returning_a_vector(i: Inputs):
    @expectation
    def program(phi):
        return normal_guide.sim(phi, 1.0).choices["z"] * jnp.ones(3)

    return program.estimate(0, NORMAL_PARAMS[1])


def _site_in_while(i: Inputs):
    @expectation
    def program(mu):
        def body(c):
            return c[0] + 1, c[1] + normal_guide.sim((mu, 0.0), 1.0).choices["z"]

        return jax.lax.while_loop(lambda c: c[0] < 3, body, (0, 0.0))[1]

    return program.estimate(0, 0.0)


def _corrupt(i: Inputs):
    i.checkpoint.write_bytes(b"not an npz file")
    return _fit(i, checkpoint=i.checkpoint, resume=True)


def _other_model(i: Inputs):
    # same data and parameters, but an optimiser whose state has another structure
    return _fit(i, optimizer=optax.sgd(0.1, momentum=0.9), checkpoint=i.checkpoint, resume=True)


CATALOGUE = [
    # addresses
    Bad("missing address", lambda i: normal_model.log_density({"zz": 0.1}, 0.0, 1.0), AddressError,
        r"site 'z' needs a value .* given addresses: \['zz'\]"),
    Bad("extra address", lambda i: normal_model.log_density({"z": 0.1, "extra": 1.0}, 0.0, 1.0), AddressError,
        r"never samples: \['extra'\]"),
    Bad("unknown address lookup", lambda i: normal_model.simulate(0, 0.0, 1.0).choices["zz"], AddressError,
        r"no choice at address 'zz'.*did you mean 'z'"),
    Bad("address used twice", lambda i: twice.simulate(0), AddressError, r"address 'z' is used twice"),
    Bad("address given twice in a choice map", lambda i: genvi.ChoiceMap({"a/b": 1.0, "a": {"b": 2.0}}),
        AddressError, r"'a/b'|'b'.* given twice"),
    Bad("constraint on an unknown address", lambda i: normal_model.importance(0, {"q": 1.0}, 0.0, 1.0),
        AddressError, r"constraints name addresses the program never samples: \['q'\]"),
    Bad("marginal keep not a subset", lambda i: genvi.marginal(normal_model, ["nope"], normal_guide)
        .simulate(0, 0.0, 1.0), AddressError, r"keep names addresses .* \['nope'\]"),
    Bad("marginal keep empty", lambda i: genvi.marginal(normal_model, [], normal_guide), ConfigError,
        r"marginal\(keep=\[\]\): give a non-empty list"),
    Bad("guide samples a site the model lacks",
        lambda i: _estimate(elbo(normal_model, guide_with_extra_site), NORMAL_PARAMS, 1.0), AddressError,
        r"never samples: \['u'\]"),
    Bad("model latent the guide lacks",
        lambda i: _estimate(elbo(normal_model, guide_without_the_latent), NORMAL_PARAMS, 1.0), AddressError,
        r"site 'z' needs a value"),
    Bad("numpyro.param without a value", lambda i: genvi.from_numpyro(numpyro_model).simulate(0, {}, 1.0),
        AddressError, r"numpyro.param 'loc' has no value .* gf.init_params"),
    # shapes, dtypes, supports
    Bad("observation shape", lambda i: normal_model.simulate(0, 0.0, np.ones(3)), ShapeError,
        r"site 'x': observation has shape \(3,\) .* expects \(\)"),
    Bad("choice shape", lambda i: normal_model.log_density({"z": np.zeros(2)}, 0.0, 1.0), ShapeError,
        r"site 'z': the choice has shape \(2,\)"),
    Bad("float observation of a count", lambda i: poisson_model.simulate(0, 2.0, np.float32(1.5)), ShapeError,
        r"site 'n': observation dtype float32 for Poisson, whose support is integer; cast"),
    Bad("observation outside the support (Bernoulli)", lambda i: bernoulli_obs.simulate(0, 0.3, np.int32(2)),
        DomainError, r"site 'x': observed value 2 lies outside the support of Bernoulli"),
    Bad("observation outside the support (Exponential)", lambda i: exponential_obs.log_density({}, 1.0, np.float32(-1.0)),
        DomainError, r"site 'x': observed value -1.0 lies outside the support of Exponential"),
    Bad("plate choices without the plate axis", lambda i: genvi.vmap(normal_model, in_axes=(None, 0), plate="data")
        .log_density({"z": np.zeros(2)}, 0.0, np.ones(3)), ShapeError,
        r"site 'z' sits inside genvi.vmap\(plate='data'\) of size 3"),
    Bad("plate arguments of mismatched sizes", lambda i: genvi.vmap(normal_model, in_axes=(0, 0))
        .simulate(0, np.zeros(3), np.ones(4)), ShapeError, r"must agree on the axis size .* \[3, 4\]"),
    Bad("in_axes of the wrong length", lambda i: genvi.vmap(normal_model, in_axes=(0,)).simulate(0, np.zeros(3), 1.0),
        ConfigError, r"in_axes has 1 entries for 2 arguments"),
    Bad("mapped argument without the axis", lambda i: genvi.vmap(normal_model, in_axes=(0, None))
        .simulate(0, np.float32(0.0), 1.0), ShapeError, r"an argument of shape \(\) has no axis 0"),
    Bad("scan steps disagree", lambda i: genvi.scan(step, length=3).simulate(0, 0.0, np.zeros(4)), ShapeError,
        r"xs and length disagree on the number of steps: \[3, 4\]"),
    Bad("program returns a vector", _program_returning_a_vector, ShapeError, r"must return one floating-point scalar"),
    Bad("data without a shared leading axis", lambda i: vi.fit(REGRESSION, i.params, i.data, i.data[:3], num_steps=5,
        key=0, progress=False), ShapeError, r"disagree on their leading \(data\) axis: sizes \[3, 40\]"),
    Bad("scalar data", lambda i: vi.fit(REGRESSION, i.params, np.float32(1.0), num_steps=5, key=0, progress=False),
        ShapeError, r"every data array needs a leading data axis"),
    Bad("not a distribution at a site", lambda i: not_a_distribution.simulate(0), GenviError,
        r"site 'z': expected a numpyro distribution .* got float"),
    # estimators
    Bad("ENUM on a Normal", lambda i: _estimate(elbo(normal_model, normal_guide).with_estimators({"z": ENUM}),
        NORMAL_PARAMS, 1.0), EstimatorError, r"site 'z': ENUM needs a distribution with finite support, got Normal"),
    Bad("REPARAM on a Bernoulli", lambda i: _estimate(elbo(bern_model, bern_guide).with_estimators({"z": REPARAM}),
        BERN_PARAMS, 1.0), EstimatorError, r"site 'z': REPARAM needs a reparameterisable .* BernoulliLogits"),
    Bad("MVD on a Gamma", lambda i: expectation(lambda a: gamma_mvd.sim(a).log_density).estimate(0, 2.0),
        EstimatorError, r"site 'w': MVD knows .* got Gamma"),
    Bad("ENUM over a too-large support", lambda i: expectation(lambda l: wide_categorical.sim(l).log_density)
        .estimate(0, np.zeros(2000, np.float32)), EstimatorError,
        r"site 'c': ENUM over a support of 2000 values exceeds max_support=1024"),
    Bad("ENUM over an exponential joint support", lambda i: _estimate(
        iwae(bern_model, bern_guide, particles=16).with_estimators({"z": ENUM}), BERN_PARAMS, 1.0),
        EstimatorError, r"site 'z': ENUM \(joint support 2\^16 > max_support=1024\)"),
    Bad("ENUM max_support below 1", lambda i: ENUM(max_support=0), ConfigError, r"ENUM\(max_support=0\)"),
    Bad("unknown baseline", lambda i: REINFORCE(baseline="median"), ConfigError, r"baseline='median'"),
    Bad("running-mean decay out of range", lambda i: RunningMean(decay=1.5), ConfigError, r"decay"),
    Bad("stateful baseline without state", lambda i: elbo(bern_model, bern_guide)
        .with_estimators({"z": REINFORCE(baseline="mean")}).grad_estimate(0, BERN_PARAMS, 1.0), EstimatorError,
        r"sites \['z'\] use estimators that keep state"),
    Bad("leave-one-out on a bound that mixes particles", lambda i: iwae(bern_model, bern_guide, particles=4)
        .with_estimators({"z": REINFORCE(baseline=LeaveOneOut())}).grad_estimate(0, BERN_PARAMS, 1.0),
        EstimatorError, r"site 'z': the leave-one-out baseline .* `log` mixes them"),
    Bad("override that is not an estimator", lambda i: elbo(normal_model, normal_guide)
        .with_estimators({"z": "reparam"}), EstimatorError, r"address 'z': expected a genvi estimator, got 'reparam'"),
    Bad("VIMCO with another estimator", lambda i: _estimate(vimco(bern_model, bern_guide, particles=4)
        .with_estimators({"z": ENUM}), BERN_PARAMS, 1.0), EstimatorError, r"site 'z': vimco .* asks for Enum"),
    Bad("site inside while_loop", _site_in_while, EstimatorError, r"sites \['z'\] sit inside `while`"),
    # objectives
    Bad("iwae particles 0", lambda i: iwae(normal_model, normal_guide, particles=0), ConfigError, r"iwae\(particles=0\)"),
    Bad("elbo particles negative", lambda i: elbo(normal_model, normal_guide, particles=-1), ConfigError,
        r"elbo\(particles=-1\)"),
    Bad("vimco with one particle", lambda i: vimco(bern_model, bern_guide, particles=1), ConfigError,
        r"vimco\(particles=1\): the leave-one-out control variate needs at least 2"),
    Bad("renyi alpha not finite", lambda i: renyi(normal_model, normal_guide, alpha=float("nan"), particles=2),
        ConfigError, r"renyi\(alpha=nan\)"),
    Bad("marginal particles 0", lambda i: genvi.marginal(normal_model, ["z"], normal_guide, particles=0),
        ConfigError, r"marginal\(particles=0\)"),
    Bad("argnums out of range", lambda i: elbo(normal_model, normal_guide).grad_estimate(0, NORMAL_PARAMS, 1.0,
        argnums=5), ConfigError, r"argnums=5 does not index the program's 2 arguments"),
    Bad("joint bound over a global latent under minibatching", lambda i: vi.fit(
        iwae(global_model, global_guide, particles=4), (np.float32(0.0), (np.float32(0.0), np.float32(0.0))),
        i.data[:, 0], num_steps=5, batch_size=8, key=0, progress=False), ConfigError,
        r"iwae: the multi-sample bound over latents \['z'\] .* minibatching would bias it"),
    Bad("predictive num_samples 0", lambda i: genvi.predictive(normal_model, normal_guide, NORMAL_PARAMS, 1.0,
        num_samples=0, key=0), ConfigError, r"predictive\(num_samples=0\)"),
    # fit
    Bad("num_steps 0", lambda i: _fit(i, num_steps=0), ConfigError, r"fit\(num_steps=0\): must be a positive integer"),
    Bad("num_steps negative", lambda i: _fit(i, num_steps=-3), ConfigError, r"fit\(num_steps=-3\)"),
    Bad("num_steps not an integer", lambda i: _fit(i, num_steps=2.5), ConfigError, r"fit\(num_steps=2.5\)"),
    Bad("batch_size 0", lambda i: _fit(i, batch_size=0), ConfigError, r"fit\(batch_size=0\): must be an integer in \[1, 40\]"),
    Bad("batch_size larger than the data", lambda i: _fit(i, batch_size=41), ConfigError, r"fit\(batch_size=41\)"),
    Bad("unknown on_nonfinite", lambda i: _fit(i, on_nonfinite="ignore"), ConfigError, r"on_nonfinite='ignore'"),
    Bad("checkpoint_every 0", lambda i: _fit(i, checkpoint_every=0), ConfigError, r"fit\(checkpoint_every=0\)"),
    Bad("non-finite parameters at the start", lambda i: _fit(i, params=(np.float32(np.nan), None)), FitError,
        r"parameter .* is not finite at the start"),
    Bad("objective that is not a program", lambda i: vi.fit(lambda p, x: 0.0, i.params, i.data, num_steps=5, key=0),
        ConfigError, r"objective must be an @expectation program, got function"),
    Bad("minibatches without a data plate", lambda i: vi.fit(elbo(unplated, normal_guide), NORMAL_PARAMS,
        i.data[:, 0], num_steps=5, batch_size=8, key=0, progress=False), ConfigError,
        r"no named plate of that size appears in the objective"),
    Bad("unknown mesh", lambda i: _fit(i, mesh="gpu"), ConfigError, r"fit\(mesh='gpu'\)"),
    Bad("existing checkpoint without resume", lambda i: _fit(i, checkpoint=i.checkpoint), FitError,
        r"already exists; pass resume=True"),
    Bad("corrupted checkpoint", _corrupt, FitError, r"corrupted or not a genvi checkpoint. It was left untouched"),
    Bad("checkpoint from another model", _other_model, FitError, r"written for a different model or optimiser"),
    # built-in families configured out of range
    Bad("flow layer with an unknown activation", lambda i: flows.Planar(2, key=jax.random.PRNGKey(0),
        activation="relu"), ConfigError, r"Planar: activation must be one of .* got 'relu'"),
    Bad("non-invertible planar layer asked for explicitly", lambda i: flows.Planar.from_params(
        np.array([1.0, 0.0]), np.array([-3.0, 0.0]), 0.0, constrain=False), ConfigError, r"Planar.from_params"),
    Bad("radial layer with beta below -alpha", lambda i: flows.Radial.from_params(np.zeros(2), 1.0, -2.0),
        ConfigError, r"beta"),
    Bad("fBM Hurst index outside (0, 1)", lambda i: fbm_sde.FractionalSDE(None, None, hurst=1.2), ConfigError,
        r"hurst must lie strictly inside \(0, 1\), got 1.2"),
    Bad("MA-fBM with one OU process", lambda i: fbm_sde.FractionalSDE(None, None, hurst=0.3, num_processes=1),
        ConfigError, r"num_processes \(K\) must be an integer >= 2, got 1"),
    Bad("SDE observation times not increasing", lambda i: fbm_sde.PathConfig(np.array([0.1, 0.3, 0.2]), dt=0.01),
        ShapeError, r"obs_times must be strictly increasing"),
    Bad("SSVI density above 1", lambda i: ssvi.mlp(jax.random.PRNGKey(0), (4, 3, 2), density=1.5), ConfigError,
        r"density=1.5 must lie in \(0, 1\]"),
    Bad("SSVI layer too small for its density", lambda i: ssvi.mlp(jax.random.PRNGKey(0), (2, 2), density=0.01),
        ConfigError, r"density=0.01 keeps round\(0.01 \* 4\) = 0"),
    Bad("SSVI swap fraction outside [0, 1]", lambda i: ssvi.SSVI(total_steps=100, every=10, alpha=1.5), ConfigError,
        r"SSVI\(alpha=1.5\)"),
    Bad("Tucker GP rank 0", lambda i: tucker_gp.TuckerGP(ranks=(2, 0)), ConfigError,
        r"TuckerGP: rank of mode 1 must be an int >= 1, got 0"),
    Bad("CP model with unequal ranks", lambda i: tucker_gp.TuckerGP(ranks=(2, 3), cp=True), ConfigError,
        r"TuckerGP\(cp=True\): a CP model has one rank for every mode"),
    # generative functions used where they cannot be
    Bad("sample outside a generative function", lambda i: sample("z", dist.Normal(0.0, 1.0)), GenviError,
        r"sample\(\) was called outside a running generative function"),
    Bad("sim outside an expectation", lambda i: jax.jit(lambda: normal_guide.sim((0.0, 0.0), 1.0).choices["z"])(),
        GenviError, r"site 'z': `sim` .* only inside an @expectation"),
    Bad("differentiating through sim", lambda i: jax.grad(lambda m: normal_guide.sim((m, 0.0), 1.0).choices["z"])(0.0),
        GenviError, r"site 'z': a program containing `sim` cannot be differentiated"),
]


@pytest.fixture(scope="module")
def valid_checkpoint(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("ckpt") / "regression.npz"
    vi.fit(REGRESSION, (jnp.array(0.0), None), _rows(), num_steps=4, key=0, progress=False, checkpoint=path,
           optimizer=optax.adam(1e-2))
    return path


def _rows() -> np.ndarray:
    x = np.linspace(-1, 1, 40, dtype=np.float32)
    return np.stack([x, 2 * x + 0.1], axis=1)


def _snapshot(i: Inputs) -> tuple:
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(i.folder.iterdir())}
    return i.data.copy(), [np.array(x, copy=True) for x in jax.tree.leaves(i.params)], files


def test_the_catalogue_is_large_and_names_are_unique():
    names = [case.name for case in CATALOGUE]
    assert len(names) >= 40 and len(set(names)) == len(names)


@pytest.mark.parametrize("case", CATALOGUE, ids=[c.name for c in CATALOGUE])
def test_bad_input_is_refused_clearly_and_changes_nothing(case: Bad, tmp_path, valid_checkpoint):
    checkpoint = tmp_path / "run.npz"
    shutil.copy(valid_checkpoint, checkpoint)
    inputs = Inputs(_rows(), (np.float32(0.0), None), tmp_path, checkpoint)
    data, params, files = _snapshot(inputs)
    with pytest.raises(case.error, match=case.match):
        case.call(inputs)
    after_data, after_params, after_files = _snapshot(inputs)
    np.testing.assert_array_equal(after_data, data)
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(after_params, params))
    if case.call is _corrupt:  # the case itself wrote the corrupted file; genvi must leave it alone
        files = {**files, "run.npz": hashlib.sha256(b"not an npz file").hexdigest()}
    assert after_files == files, "a file was written, changed or left half-written"
