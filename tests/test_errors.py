"""Bad input gets a GenviError subclass naming the site, shape or option at fault."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
import pytest
from exact import BERN_PARAMS, NORMAL_PARAMS, bern_guide, bern_model, normal_guide, normal_model

import genvi
from genvi import AddressError, ConfigError, EstimatorError, GenviError, ShapeError, expectation, gen, sample
from genvi.estimators import ENUM, MVD, REINFORCE, REPARAM, LeaveOneOut, RunningMean
from genvi.objectives import elbo, iwae


def test_enum_on_a_normal_names_the_site():
    with pytest.raises(EstimatorError, match=r"site 'z': ENUM needs a distribution with finite support, got Normal"):
        elbo(normal_model, normal_guide).with_estimators({"z": ENUM}).estimate(0, NORMAL_PARAMS, 1.0)


def test_reparam_on_a_bernoulli_names_the_site():
    with pytest.raises(EstimatorError, match=r"site 'z': REPARAM needs a reparameterisable .* BernoulliLogits"):
        elbo(bern_model, bern_guide).with_estimators({"z": REPARAM}).estimate(0, BERN_PARAMS, 1.0)


def test_mvd_on_an_unsupported_distribution():
    @gen
    def g(a):
        sample("w", dist.Gamma(a, 1.0), estimator=MVD)

    @expectation
    def program(a):
        return g.sim(a).log_density

    with pytest.raises(EstimatorError, match=r"site 'w': MVD knows .* got Gamma"):
        program.estimate(0, 2.0)


def test_missing_address_in_log_density():
    with pytest.raises(AddressError, match=r"site 'z' needs a value .* given addresses: \['zz'\]"):
        normal_model.log_density({"zz": 0.1}, 0.0, 1.0)


def test_extra_address_in_log_density():
    with pytest.raises(AddressError, match=r"never samples: \['extra'\]"):
        normal_model.log_density({"z": 0.1, "extra": 1.0}, 0.0, 1.0)


def test_unknown_address_lookup_suggests_close_match():
    tr = normal_model.simulate(0, 0.0, 1.0)
    with pytest.raises(AddressError, match=r"no choice at address 'zz'.*did you mean 'z'"):
        tr.choices["zz"]


def test_observation_of_the_wrong_shape():
    with pytest.raises(ShapeError, match=r"site 'x': observation has shape \(3,\) .* expects \(\)"):
        normal_model.simulate(0, 0.0, jnp.ones(3))


def test_choice_of_the_wrong_shape():
    with pytest.raises(ShapeError, match=r"site 'z': the choice has shape \(2,\)"):
        normal_model.log_density({"z": jnp.zeros(2)}, 0.0, 1.0)


def test_site_address_used_twice():
    @gen
    def twice():
        sample("z", dist.Normal(0.0, 1.0))
        sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(AddressError, match=r"address 'z' is used twice"):
        twice.simulate(0)


def test_plate_choices_without_the_plate_axis():
    plate = genvi.vmap(normal_model, in_axes=(None, 0), plate="data")
    with pytest.raises(ShapeError, match=r"site 'z' sits inside genvi.vmap\(plate='data'\) of size 3"):
        plate.log_density({"z": jnp.zeros(2)}, 0.0, jnp.ones(3))


def test_sim_outside_an_expectation():
    with pytest.raises(GenviError, match=r"site 'z': `sim` .* only inside an @expectation"):
        jax.jit(lambda: normal_guide.sim((0.0, 0.0), 1.0).choices["z"])()


def test_grad_through_sim_directly():
    with pytest.raises(GenviError, match=r"site 'z': a program containing `sim` cannot be differentiated"):
        jax.grad(lambda m: normal_guide.sim((m, 0.0), 1.0).choices["z"])(0.0)


def test_sample_outside_a_generative_function():
    with pytest.raises(GenviError, match=r"sample\(\) was called outside a running generative function"):
        sample("z", dist.Normal(0.0, 1.0))


def test_program_must_return_a_scalar():
    @expectation
    def program(phi):
        return normal_guide.sim(phi, 1.0).choices["z"] * jnp.ones(3)

    with pytest.raises(ShapeError, match=r"must return one floating-point scalar"):
        program.estimate(0, (0.0, 0.0))


def test_particles_must_be_positive():
    with pytest.raises(ConfigError, match=r"iwae\(particles=0\)"):
        iwae(normal_model, normal_guide, particles=0)


def test_leave_one_out_refuses_a_bound_that_mixes_particles():
    objective = iwae(bern_model, bern_guide, particles=4).with_estimators({"z": REINFORCE(baseline=LeaveOneOut())})
    with pytest.raises(EstimatorError, match=r"site 'z': the leave-one-out baseline .* `log` mixes them"):
        objective.grad_estimate(0, BERN_PARAMS, 1.0)


def test_enum_refuses_an_exponential_joint_support():
    objective = iwae(bern_model, bern_guide, particles=16).with_estimators({"z": ENUM})
    with pytest.raises(EstimatorError, match=r"site 'z': ENUM \(joint support 2\^16 > max_support=1024\)"):
        objective.estimate(0, BERN_PARAMS, 1.0)


def test_stateful_baseline_needs_state():
    objective = elbo(bern_model, bern_guide).with_estimators({"z": REINFORCE(baseline="mean")})
    with pytest.raises(EstimatorError, match=r"sites \['z'\] use estimators that keep state"):
        objective.grad_estimate(0, BERN_PARAMS, 1.0)


def test_bad_baseline_options():
    with pytest.raises(ConfigError, match=r"baseline='median'"):
        REINFORCE(baseline="median")
    with pytest.raises(ConfigError, match=r"decay"):
        RunningMean(decay=1.5)


def test_site_inside_while_loop_is_refused():
    @expectation
    def program(mu):
        def body(c):
            return c[0] + 1, c[1] + normal_guide.sim((mu, 0.0), 1.0).choices["z"]

        return jax.lax.while_loop(lambda c: c[0] < 3, body, (0, 0.0))[1]

    with pytest.raises(EstimatorError, match=r"sites \['z'\] sit inside `while`"):
        program.estimate(0, 0.0)


def test_estimator_override_must_be_an_estimator():
    with pytest.raises(EstimatorError, match=r"address 'z': expected a genvi estimator"):
        elbo(normal_model, normal_guide).with_estimators({"z": "reparam"})
