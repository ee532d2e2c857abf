"""Generative functions: `@gen` programs, `sample`, and the methods every generative function has.

A generative function is a Python function that makes random choices with
`sample(address, distribution)` and may call other generative functions at an address. Its
methods run the body under a handler (`_handlers.py`) that decides what each site does:

| method | what a latent site does |
| --- | --- |
| `simulate(key, *args)` | draws from its distribution |
| `log_density(choices, *args)` / `assess` | reads its value from `choices` |
| `importance(key, constraints, *args)` | reads constrained values, draws the rest |
| `sim(*args)` (inside `@expectation`) | leaves a sample primitive for the gradient estimator |

Observed sites (`obs=`) are scored by every method.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import numpyro.distributions as nd

from . import _handlers as H
from ._choicemap import ChoiceMap
from ._errors import AddressError, GenviError
from ._tfp import TFPDistribution, is_tfp_distribution
from ._trace import Trace, sum_arrays


def sample(addr: str, dist: Any, obs: Any = None, *, estimator: Any = None) -> Any:
    """Make a random choice at address `addr`.

    **Arguments:**

    - `addr`: the site's address, unique within the running function.
    - `dist`: a NumPyro distribution (or a TFP one through `genvi.tfp_distribution`), or a call of
      another generative function, `gf(*args)`, whose choices then live under `addr`.
    - `obs`: an observed value; the site is then scored, not sampled.
    - `estimator`: the gradient estimator for this site inside objectives (`genvi.estimators`);
      `None` picks REPARAM where the distribution is reparameterisable, REINFORCE otherwise.

    **Returns:** the value of the choice (or the nested call's return value).
    """
    handler = H.current()
    if isinstance(dist, GenCall):
        if obs is not None or estimator is not None:
            raise GenviError(f"site {addr!r}: a nested generative-function call takes no obs= or estimator=")
        return handler.call(addr, dist.gf, dist.args)
    if is_tfp_distribution(dist):
        dist = TFPDistribution(dist)
    if not isinstance(dist, nd.Distribution):
        raise GenviError(
            f"site {addr!r}: expected a numpyro distribution or a generative-function call "
            f"gf(*args), got {type(dist).__name__}"
        )
    return handler.site(addr, dist, obs, estimator)


def factor(addr: str, log_weight: Any) -> None:
    """Add `log_weight` (summed) to the running function's log density under `addr`.

    A factor is scored like an observation: it has no choice, it counts in `log_density`, and
    objectives treat it as part of the model (or guide) density.
    """
    H.current().factor(addr, log_weight)


class GenCall(eqx.Module):
    """A generative function applied to arguments, to be sampled at an address."""

    gf: "GenerativeFunction"
    args: tuple


class GenerativeFunction(eqx.Module):
    """Abstract base of generative functions (`@gen` functions and combinators).

    Subclasses define `_run(handler, args)`, which executes the body with `handler` recording
    the sites; every public method below is built on it.
    """

    @abc.abstractmethod
    def _run(self, handler: H.Handler, args: tuple) -> Any:
        """Run the body under `handler`; return the body's return value."""

    def __call__(self, *args: Any) -> GenCall:
        """Apply to arguments, for use as `sample(addr, gf(*args))` inside another body."""
        return GenCall(self, args)

    # --- the methods -------------------------------------------------------------------------
    def simulate(self, key: jax.Array | int, *args: Any) -> Trace:
        """Run forward, drawing every latent site; returns the [`genvi.Trace`][]."""
        handler = H.Simulate(_as_key(key))
        retval = _top(self, handler, args)
        return _trace(handler, retval)

    def assess(self, choices: Mapping[str, Any], *args: Any) -> tuple[jax.Array, Any]:
        """Score given latent `choices` (and observations); returns `(log_density, retval)`.

        Every latent site must be given and every given address must be a latent site.
        """
        handler = H.Score(_as_choicemap(choices))
        retval = _top(self, handler, args)
        handler.check_all_used()
        return _trace(handler, retval).log_density, retval

    def log_density(self, choices: Mapping[str, Any], *args: Any) -> jax.Array:
        """The joint log density of `choices` and the observations, differentiable in both."""
        return self.assess(choices, *args)[0]

    def score(self, choices: Mapping[str, Any], *args: Any) -> Trace:
        """The [`genvi.Trace`][] of a run with the given latent `choices` (all of them, no more):
        per-site log densities with their plate axes, as multi-sample objectives need."""
        handler = H.Score(_as_choicemap(choices))
        retval = _top(self, handler, args)
        handler.check_all_used()
        return _trace(handler, retval)

    def importance(self, key: jax.Array | int, constraints: Mapping[str, Any], *args: Any
                   ) -> tuple[Trace, jax.Array]:
        """Run with `constraints` fixing some latent sites; returns `(trace, log_weight)`.

        The other sites are drawn from their distributions (the prior as proposal), so
        `log_weight` is the log density of the constrained and observed sites: an unbiased
        importance weight for the marginal density of the constraints.
        """
        constraints = _as_choicemap(constraints)
        handler = H.Importance((_as_key(key), constraints))
        retval = _top(self, handler, args)
        unused = sorted(set(constraints.addresses()) - set(H._flat_keys(handler.choices)))
        if unused:
            raise AddressError(f"constraints name addresses the program never samples: {unused}")
        trace = _trace(handler, retval)
        weight = sum_arrays(leaf for addr, leaf in trace.site_log_densities.flat().items() if addr in handler.scored)
        return trace, weight

    def sim(self, *args: Any) -> Trace:
        """Inside an `@expectation` program: sample through each site's gradient estimator."""
        handler = H.Sim()
        retval = _top(self, handler, args)
        return _trace(handler, retval)


class GenFn(GenerativeFunction):
    """A generative function written as a Python function (see [`genvi.gen`][])."""

    fn: Callable = eqx.field(static=True)

    def _run(self, handler, args):
        with H.active(handler):
            return self.fn(*args)

    @property
    def __name__(self) -> str:
        return getattr(self.fn, "__name__", "gen")

    def __repr__(self) -> str:
        return f"gen({self.__name__})"


def gen(fn: Callable) -> GenFn:
    """Turn a Python function that calls `genvi.sample` into a generative function.

    ```python
    @gen
    def model(mu):
        z = sample("z", dist.Normal(mu, 1.0))
        sample("x", dist.Normal(z, 0.5), obs=1.2)
        return z
    ```
    """
    if isinstance(fn, GenerativeFunction):
        return fn
    return GenFn(fn)


# --- helpers ----------------------------------------------------------------------------------


def _as_key(key: jax.Array | int) -> jax.Array:
    if isinstance(key, int):
        return jax.random.PRNGKey(key)
    return key


def _as_choicemap(choices: Mapping[str, Any]) -> ChoiceMap:
    if isinstance(choices, ChoiceMap):
        return choices
    if isinstance(choices, Mapping):
        return ChoiceMap(choices)
    raise GenviError(f"choices must be a ChoiceMap or a dict keyed by address, got {type(choices).__name__}")


def _top(gf: GenerativeFunction, handler: H.Handler, args: tuple) -> Any:
    try:
        return gf._run(handler, args)
    except jax.errors.UnexpectedTracerError as err:
        raise GenviError(
            "a sample site leaked out of a JAX transformation inside a generative function: "
            "sites inside jax.lax.scan / cond / while or jax.vmap within a @gen body are not "
            "seen by the handler; use genvi.scan and genvi.vmap for repeated sites"
        ) from err


def _trace(handler: H.Handler, retval: Any) -> Trace:
    return Trace(
        choices=ChoiceMap(handler.choices),
        site_log_densities=ChoiceMap(handler.logps),
        retval=retval,
        site_distributions=dict(handler.dists),
        plates=tuple(sorted(handler.plates.items())),
        scales=tuple(sorted(handler.scales.items())),
    )
