"""Exact marginalisation of discrete choices: a generative function with them summed out.

`collapse(gf, keep=())` is a generative function over the choices of `gf` at `keep`; every other
choice has finite support and is summed out exactly: its density is
`log sum_v p(kept, v)` over the joint support of the other choices (NumPyro's
`TraceEnum_ELBO` in the model, Pyro's `config_enumerate`). In a model it removes discrete
latents from the guide altogether: a mixture's `genvi.vmap(collapse(point), plate="data")`
scores each point by a logsumexp over its components, O(N K), with the exact gradient, and no
estimator is involved. Drawn (`sim`, `simulate`), it runs `gf` ancestrally and records the
same exact marginal density of the kept choices.

Enumerate per plate element: the other choices' joint support (the product of their supports)
must fit in `max_support`, so map a per-element function with `genvi.vmap` rather than
collapsing a plate of K^N values.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from . import _handlers as H
from ._choicemap import ChoiceMap
from ._errors import AddressError, ConfigError
from ._gen import GenerativeFunction, _top, _trace
from ._marginal import _keyed, _record, _split


class _Discover(H.Score):
    """`collapse`'s discovery run: kept sites read from the choices, every other site set to the
    first value of its finite support. Nothing is drawn or scored: the run only shows the sites and
    their distributions, so it adds no random bits or densities to the traced program."""

    def value(self, addr, dist, estimator):
        if addr in self.given:
            return super().value(addr, dist, estimator)
        if not getattr(dist, "has_enumerate_support", False):
            raise ConfigError(f"collapse: site {addr!r} has no finite support ({type(dist).__name__}); keep it "
                              "(keep=[...]) and give it a guide site, or collapse only discrete choices")
        first = dist.enumerate_support(expand=False).reshape(-1)[0]
        return jnp.broadcast_to(first, tuple(dist.batch_shape) + tuple(dist.event_shape))

    def log_density(self, addr, dist, value):
        return 0.0


def _support(address: str, trace, max_support: int) -> jax.Array:
    """Every joint value of one collapsed site's elements, stacked on a leading axis."""
    if dict(trace.plates).get(address):
        raise ConfigError(f"collapse: site {address!r} sits inside a plate of the collapsed function; collapse "
                          "the per-element function and map it with genvi.vmap (enumeration stays O(N K))")
    record = trace.site_distributions[address]
    dist = jax.tree.unflatten(record.treedef, record.leaves)
    values = dist.enumerate_support(expand=False).reshape(-1)  # the support of one element
    n = int(np.prod(dist.batch_shape + dist.event_shape, dtype=int))
    if values.shape[0] ** n > max_support:
        raise ConfigError(f"collapse: site {address!r} has {values.shape[0]}^{n} joint values, more than "
                          f"max_support={max_support}; collapse a per-element function under genvi.vmap")
    index = np.array(list(itertools.product(range(values.shape[0]), repeat=n)), dtype=np.int32)
    return values[index].reshape((len(index),) + dist.batch_shape + dist.event_shape)


class Collapse(GenerativeFunction):
    """A generative function with its discrete choices summed out (see the module docstring)."""

    gf: GenerativeFunction
    keep: tuple[str, ...] = eqx.field(static=True)
    max_support: int = eqx.field(static=True)

    def log_marginal(self, kept: ChoiceMap, args: tuple) -> jax.Array:
        """`log sum_v p(kept, v)` over the joint support of the other choices."""
        # one run shows the other sites and their distributions (their support does not depend on
        # the values taken); it is dead code in the compiled program
        discover = _Discover(kept)
        trace = _trace(discover, _top(self.gf, discover, args))
        _, others = _split(trace.choices, self.keep)
        addresses = sorted(others.flat())
        if not addresses:
            return self.gf.log_density(kept, *args)
        supports = [_support(a, trace, self.max_support) for a in addresses]
        grid = np.array(list(itertools.product(*(range(s.shape[0]) for s in supports))), dtype=np.int32)
        if len(grid) > self.max_support:
            raise ConfigError(f"collapse: the sites {addresses} have {len(grid)} joint values, more than "
                              f"max_support={self.max_support}")
        values = {a: s[grid[:, i]] for i, (a, s) in enumerate(zip(addresses, supports))}

        def one(assignment):
            return self.gf.log_density(ChoiceMap({**kept.flat(), **assignment}), *args)

        return logsumexp(jax.vmap(one)(values))

    def _run(self, handler, args):
        given = handler.given if isinstance(handler, H.Score) else (
            handler.constraints if isinstance(handler, H.Importance) else ChoiceMap())
        if all(a in given for a in self.keep):  # scored
            kept = ChoiceMap({a: given[a] for a in self.keep})
            _record(handler, kept, self.log_marginal(kept, args), "collapsed")
            return None
        if isinstance(handler, H.Score):
            raise AddressError(f"collapse: scoring needs every kept address {list(self.keep)}; "
                               f"the choices have {sorted(given.addresses())}")
        joint = self.gf.simulate(handler._next(), *args) if _keyed(handler) else self.gf.sim(*args)
        kept, _ = _split(joint.choices, self.keep)
        _record(handler, kept, self.log_marginal(kept, args), "collapsed")
        return joint.retval


def collapse(gf: GenerativeFunction, keep: Sequence[str] = (), max_support: int = 1024) -> Collapse:
    """`gf` with every choice outside `keep` summed out exactly (module docstring)."""
    if isinstance(keep, str):
        raise ConfigError(f"collapse(keep={keep!r}): give a list of addresses, not one string")
    if not isinstance(max_support, int) or max_support < 1:
        raise ConfigError(f"collapse(max_support={max_support!r}): must be a positive integer")
    return Collapse(gf, tuple(keep), max_support)
