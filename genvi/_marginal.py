"""Approximate marginalisation and normalisation: generative functions without closed-form densities.

**`marginal(gf, keep, proposal, particles=N)`** is a generative function over the choices of `gf`
at the addresses `keep`; the other choices (auxiliary variables `psi`) are integrated out by
importance sampling with `proposal(kept, *args)`, a generative function over them. Its density is
an estimate, and which estimate depends on the side it is used on (Ranganath et al. 2016, HVI;
Sobolev & Vetrov 2019, IWHVI):

- **drawn** (`sim`, `simulate`): `z` and `psi_0` come from one joint run of `gf`; with
  `psi_1..psi_{N-1} ~ proposal(z)`, the trace's log density is
  `log (1/N) sum_k q(z, psi_k) / r(psi_k | z)`, whose expectation is an *upper* bound on
  `log q(z)`: subtracted in an ELBO it keeps the bound a lower bound. `elbo` on a marginal guide
  is HVI (N = 1), IWHVI for N > 1, and `iwae(particles=K)` on it is DIWHVI.
- **scored** (`log_density`, `assess` with `z` given): `psi_1..psi_N ~ proposal(z)`, the
  importance estimate `(1/N) sum_k q(z, psi_k) / r(psi_k | z)` is unbiased for `q(z)` (its log is
  a lower bound), as a model density needs.

**`normalize(target, proposal, particles=N)`** is the sampling-importance-resampling (SIR)
approximation of the normalised `target` (an unnormalised density, e.g. a model with its
observations): `sim` draws `N` particles from `proposal`, resamples one by its weight, and its log
density is `log target(z) - log Zhat` with `Zhat` the particles' mean weight, so `elbo(model,
normalize(model, q, N))` is exactly `iwae(model, q, particles=N)`. Called as
`n(target_args, proposal_args)`. The resampling index is held fixed in gradients (DETACHED): SIR
proposals serve with fixed samples (wake-sleep); the density estimate stays differentiable.

Random draws inside `sim` and `log_density` go through the transformation (particles are a
`genvi.vmap` axis, compiled once for any N), so both are used inside `@expectation` programs;
`simulate` and `importance` draw with their key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as nd
from jax.scipy.special import logsumexp

from . import _handlers as H
from ._choicemap import ChoiceMap
from ._combinators import vmap as genvi_vmap
from ._errors import AddressError, ConfigError
from ._gen import GenerativeFunction, gen, sample


def _split(choices: ChoiceMap, keep: Sequence[str]) -> tuple[ChoiceMap, ChoiceMap]:
    flat = choices.flat()
    missing = sorted(set(keep) - set(flat))
    if missing:
        raise AddressError(f"marginal: keep names addresses the program does not sample: {missing}; "
                           f"its addresses are {sorted(flat)}")
    return (ChoiceMap({a: v for a, v in flat.items() if a in keep}),
            ChoiceMap({a: v for a, v in flat.items() if a not in keep}))


def _logmeanexp(x: jax.Array) -> jax.Array:
    return logsumexp(x) - jnp.log(x.shape[0])


def _check_particles(name: str, particles: Any) -> None:
    if not isinstance(particles, int) or particles < 1:
        raise ConfigError(f"{name}(particles={particles!r}): particles must be an integer >= 1")


def _keyed(handler: H.Handler) -> bool:
    return isinstance(handler, (H.Simulate, H.Importance))


def _draws(handler: H.Handler, gf: GenerativeFunction, n: int, args: tuple) -> ChoiceMap:
    """`n` independent draws of `gf(*args)`'s choices, stacked: with the handler's key, or
    through the transformation (inside an objective program)."""
    if _keyed(handler):
        keys = jax.random.split(handler._next(), n)
        return jax.vmap(lambda k: gf.simulate(k, *args).choices)(keys)
    return genvi_vmap(lambda: gf.sim(*args).choices, axis_size=n)()


def _record(handler: H.Handler, kept: ChoiceMap, log_density: jax.Array, name: str) -> None:
    """Record `kept` as the run's choices and `log_density` as its density (under `name`)."""
    for key, value in kept.to_dict().items():
        handler._claim(key)
        handler.choices[key] = value
    handler.factor(name, log_density)


class Marginal(GenerativeFunction):
    """A generative function over some of another's choices (see the module docstring)."""

    gf: GenerativeFunction
    proposal: GenerativeFunction
    keep: tuple[str, ...] = eqx.field(static=True)
    particles: int = eqx.field(static=True)

    def _log_weights(self, kept: ChoiceMap, psis: ChoiceMap, args: tuple) -> jax.Array:
        def one(psi):
            joint = ChoiceMap({**kept.flat(), **psi.flat()})
            return self.gf.log_density(joint, *args) - self.proposal.log_density(psi, kept, *args)

        return jax.vmap(one)(psis)

    def _run(self, handler, args):
        given = handler.given if isinstance(handler, H.Score) else (
            handler.constraints if isinstance(handler, H.Importance) else ChoiceMap())
        if isinstance(handler, H.Score) and not all(a in given for a in self.keep):
            raise AddressError(f"marginal: scoring needs every kept address {list(self.keep)}; "
                               f"the choices have {sorted(given.addresses())}")
        if all(a in given for a in self.keep):  # scored: the importance estimate, unbiased for q(z)
            kept = ChoiceMap({a: given[a] for a in self.keep})
            psis = _draws(handler, self.proposal, self.particles, (kept, *args))
            _record(handler, kept, _logmeanexp(self._log_weights(kept, psis, args)), "marginal")
            return None
        joint = self.gf.simulate(handler._next(), *args) if _keyed(handler) else self.gf.sim(*args)
        kept, psi0 = _split(joint.choices, self.keep)
        log_w0 = joint.log_density - self.proposal.log_density(psi0, kept, *args)
        log_w = jnp.array([log_w0])
        if self.particles > 1:
            psis = _draws(handler, self.proposal, self.particles - 1, (kept, *args))
            log_w = jnp.concatenate([log_w, self._log_weights(kept, psis, args)])
        _record(handler, kept, _logmeanexp(log_w), "marginal")
        return joint.retval


@gen
def _resample(log_weights: jax.Array) -> jax.Array:
    return sample("index", nd.Categorical(logits=jax.lax.stop_gradient(log_weights)), estimator=_detached())


def _detached():
    from genvi.estimators import DETACHED  # the estimator lives with the others

    return DETACHED


class Normalize(GenerativeFunction):
    """The SIR approximation of a normalised target (see the module docstring)."""

    target: GenerativeFunction
    proposal: GenerativeFunction
    particles: int = eqx.field(static=True)

    def _run(self, handler, args):
        if len(args) != 2:
            raise ConfigError("normalize(...) is called as n(target_args, proposal_args), two tuples")
        target_args, proposal_args = (tuple(a) for a in args)

        def log_weight(z):
            return self.target.log_density(z, *target_args) - self.proposal.log_density(z, *proposal_args)

        given = handler.given if isinstance(handler, H.Score) else ChoiceMap()
        if given.addresses():  # scored: z joins N - 1 fresh particles
            z = given
            others = _draws(handler, self.proposal, self.particles - 1, proposal_args) if self.particles > 1 else None
            log_w = jnp.array([log_weight(z)])
            if others is not None:
                log_w = jnp.concatenate([jax.vmap(log_weight)(others), log_w])
            _record(handler, z, log_w[-1] + self.proposal.log_density(z, *proposal_args) - _logmeanexp(log_w),
                    "normalized")
            return None
        particles = _draws(handler, self.proposal, self.particles, proposal_args)
        log_w = jax.vmap(log_weight)(particles)
        if _keyed(handler):
            index = jax.random.categorical(handler._next(), jax.lax.stop_gradient(log_w))
        else:
            index = _resample.sim(log_w).retval
        z = jax.tree.map(lambda leaf: leaf[index], particles)
        log_target = self.target.log_density(z, *target_args)
        _record(handler, z, log_target - _logmeanexp(log_w), "normalized")
        return None


def marginal(gf: GenerativeFunction, keep: Sequence[str], proposal: GenerativeFunction,
             particles: int = 1) -> Marginal:
    """The marginal of `gf` over the addresses `keep`, the rest integrated out by importance
    sampling with `proposal(kept_choices, *args)` and `particles` samples (module docstring)."""
    _check_particles("marginal", particles)
    if isinstance(keep, str) or not keep:
        raise ConfigError(f"marginal(keep={keep!r}): give a non-empty list of addresses")
    return Marginal(gf, proposal, tuple(keep), particles)


def normalize(target: GenerativeFunction, proposal: GenerativeFunction, particles: int) -> Normalize:
    """The SIR approximation of the normalised `target` with `particles` proposals (module docstring)."""
    _check_particles("normalize", particles)
    return Normalize(target, proposal, particles)
