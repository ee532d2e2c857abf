"""Site handlers: what `sample(addr, dist)` does under each generative-function method.

A handler is created for one run of a generative function body and records the run's choices and
site log densities. It is active only while that body executes in Python (a stack local to this
module); combinators (`genvi.vmap`, `genvi.scan`) never let a handler cross a JAX transformation:
they give each mapped element a fresh handler built from a per-element *state* (a key, a sub
choice map) and return its records as ordinary outputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpyro.distributions as nd
from numpyro.distributions import constraints

from ._choicemap import ChoiceMap, join
from ._errors import AddressError, DomainError, GenviError, ShapeError
from ._primitive import SiteSpec, sample_p, tag
from ._trace import DistRecord, sum_arrays

_ACTIVE: list["Handler"] = []
_NONCES: list[jax.Array] = []


@contextlib.contextmanager
def active(handler: "Handler") -> Iterator["Handler"]:
    """Make `handler` the one `sample` talks to while the body runs."""
    _ACTIVE.append(handler)
    try:
        yield handler
    finally:
        _ACTIVE.pop()


def current() -> "Handler":
    """The handler of the innermost running generative function."""
    if not _ACTIVE:
        raise GenviError(
            "sample() was called outside a running generative function; decorate the function "
            "with @genvi.gen and call one of its methods (simulate, log_density, sim, ...)"
        )
    return _ACTIVE[-1]


@contextlib.contextmanager
def nonce(value: jax.Array) -> Iterator[None]:
    """Register the per-element index of an enclosing `genvi.vmap` (see `_primitive`)."""
    _NONCES.append(value)
    try:
        yield
    finally:
        _NONCES.pop()


def _total(log_density: Any, scale: float = 1.0) -> jax.Array:
    """A site's summed log density times its plate's `scale`, with no product by 1 bound."""
    total = sum_arrays([log_density])
    return total if isinstance(scale, (int, float)) and scale == 1 else total * scale


class Handler:
    """Base handler: records choices and log densities, and checks addresses."""

    def __init__(self, state: Any = None, where: str = "") -> None:
        self.where = where  # the full address of this run inside the outermost one
        self.choices: dict[str, Any] = {}
        self.logps: dict[str, Any] = {}
        self.plates: dict[str, tuple[str | None, ...]] = {}
        self.scales: dict[str, float] = {}
        self.dists: dict[str, Any] = {}
        self.scored: set[str] = set()  # sites whose density counts as a weight (observed, constrained)

    # --- what subclasses define -------------------------------------------------------------
    def value(self, addr: str, dist: nd.Distribution, estimator: Any) -> Any:
        """The value of latent site `addr`."""
        raise NotImplementedError

    def spawn(self, state: Any, where: str) -> "Handler":
        """A fresh handler of the same kind for a nested run with input `state`."""
        return type(self)(state, where)

    def child_state(self, addr: str) -> Any:
        """The input of a nested call at `addr`."""
        return None

    def split_state(self, size: int, where: str) -> Any:
        """`size` independent inputs, stacked on a leading axis, for a vmap or scan."""
        return None

    def observed(self, addr: str, dist: nd.Distribution, obs: Any) -> Any:
        return obs

    def log_density(self, addr: str, dist: nd.Distribution, value: Any) -> jax.Array:
        """The log density of `value` at site `addr` (element-shaped)."""
        return dist.log_prob(value)

    # --- shared machinery --------------------------------------------------------------------
    def site(self, addr: str, dist: nd.Distribution, obs: Any, estimator: Any, scale: float = 1.0) -> Any:
        """Handle one site; `scale` multiplies its log density (a subsampled NumPyro plate)."""
        self._claim(addr)
        if obs is not None:
            obs = _check_obs(addr, dist, obs)
            value = self.observed(addr, dist, obs)
            self.scored.add(addr)
        else:
            value = self.value(addr, dist, estimator)
            self.choices[addr] = value
        self.logps[addr] = tag(_total(self.log_density(addr, dist, value), scale), join(self.where, addr))
        self.plates[addr] = ()
        self.scales[addr] = scale
        leaves, treedef = jax.tree.flatten(dist)
        self.dists[addr] = DistRecord(leaves, treedef)
        return value

    def factor(self, addr: str, log_weight: jax.Array) -> None:
        """Add `log_weight` to the log density under `addr`, with no choice (like an observation)."""
        self._claim(addr)
        self.logps[addr] = tag(_total(log_weight), join(self.where, addr))
        self.plates[addr] = ()
        self.scales[addr] = 1.0
        self.scored.add(addr)

    def call(self, addr: str, gf: Any, args: tuple) -> Any:
        self._claim(addr)
        child = self.spawn(self.child_state(addr), join(self.where, addr))
        retval = gf._run(child, args)
        self.absorb(child, prefix=addr)
        return retval

    def absorb(self, child: "Handler", prefix: str = "", records: tuple | None = None,
               plate: tuple[str | None, ...] = (), scale: float = 1.0) -> None:
        """Copy a finished child's records under `prefix` (records override the child's own,
        for mapped children whose arrays came back stacked)."""
        choices, logps, dists = records if records is not None else child.records()
        if prefix == "":
            for addr in child.logps:
                self._claim(addr)
        for addr in _flat_keys(child.logps):
            self.plates[join(prefix, addr)] = plate + child.plates[addr]
            self.scales[join(prefix, addr)] = scale * child.scales[addr]
        self.scored |= {join(prefix, a) for a in child.scored}
        if prefix:
            if choices:
                self.choices[prefix] = choices
            self.logps[prefix] = logps
        else:
            self.choices.update(choices)
            self.logps.update(logps)
        self.dists.update({join(prefix, addr): d for addr, d in dists.items()})

    def _claim(self, addr: str) -> None:
        if addr in self.logps or addr in self.choices:
            raise AddressError(
                f"address {addr!r} is used twice in one run; every sample site and nested call "
                "needs its own address"
            )
        if "/" in addr or not addr:
            raise AddressError(f"address {addr!r}: addresses are non-empty and contain no '/'")

    def records(self) -> tuple[dict, dict, dict]:
        """What a mapped run returns: choices, log densities (nested by address) and the sites'
        distributions (flat, by full address relative to this run)."""
        return self.choices, self.logps, self.dists


def _flat_keys(tree: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        full = join(prefix, key)
        out.extend(_flat_keys(value, full) if isinstance(value, dict) else [full])
    return out


def _base_constraint(constraint: Any) -> Any:
    while hasattr(constraint, "base_constraint"):
        constraint = constraint.base_constraint
    return constraint


def _check_obs(addr: str, dist: nd.Distribution, obs: Any) -> jax.Array:
    """Observations must have the site's shape, an integer dtype where the support is integer
    (NumPyro would truncate floats silently), and, when known now, lie in the support."""
    obs = jnp.asarray(obs)
    expected = tuple(dist.batch_shape) + tuple(dist.event_shape)
    name = type(dist).__name__
    if obs.shape != expected:
        raise ShapeError(
            f"site {addr!r}: observation has shape {obs.shape} but the distribution {name} has batch "
            f"shape {tuple(dist.batch_shape)} and event shape {tuple(dist.event_shape)}, so it expects "
            f"{expected}; reshape the data or use genvi.vmap / .to_event so the shapes agree"
        )
    support = getattr(dist, "support", None)
    if support is None:
        return obs
    integer = support.is_discrete and not isinstance(_base_constraint(support), type(constraints.boolean))
    if integer and not (jnp.issubdtype(obs.dtype, jnp.integer) or obs.dtype == jnp.bool_):
        raise ShapeError(f"site {addr!r}: observation dtype {obs.dtype} for {name}, whose support is integer; "
                         "cast the data with .astype(jnp.int32)")
    if not jnp.issubdtype(obs.dtype, jnp.number) and obs.dtype != jnp.bool_:
        raise ShapeError(f"site {addr!r}: observation dtype {obs.dtype} is not numeric")
    if not isinstance(obs, jax.core.Tracer):
        inside = support(obs)
        if not isinstance(inside, jax.core.Tracer) and not bool(jnp.all(inside)):
            bad = obs.reshape(-1)[jnp.argmin(jnp.ravel(inside))] if jnp.ndim(inside) else obs
            raise DomainError(f"site {addr!r}: observed value {bad} lies outside the support of {name} ({support}); "
                              "check the data or the distribution")
    return obs


# --- the four handlers ------------------------------------------------------------------------


class Simulate(Handler):
    """`simulate`: draw every latent site from its distribution."""

    def __init__(self, key: jax.Array | None = None, where: str = ""):
        super().__init__(key, where)
        self.key = key

    def _next(self) -> jax.Array:
        self.key, sub = jax.random.split(self.key)
        return sub

    def value(self, addr, dist, estimator):
        return dist.sample(self._next())

    def child_state(self, addr):
        return self._next()

    def split_state(self, size, where):
        return jax.random.split(self._next(), size)


class Score(Handler):
    """`log_density` / `assess`: read every latent site from a choice map."""

    def __init__(self, choices: ChoiceMap | None = None, where: str = ""):
        super().__init__(choices, where)
        self.given = choices if choices is not None else ChoiceMap()

    def value(self, addr, dist, estimator):
        if addr not in self.given:
            known = [join(self.where, a) for a in self.given.addresses()]
            raise AddressError(
                f"site {join(self.where, addr)!r} needs a value but the choices have none; "
                f"given addresses: {sorted(known)}"
            )
        value = jnp.asarray(self.given[addr])
        expected = tuple(dist.batch_shape) + tuple(dist.event_shape)
        if value.shape != expected:
            raise ShapeError(
                f"site {join(self.where, addr)!r}: the choice has shape {value.shape}, the "
                f"distribution expects {expected}"
            )
        return value

    def child_state(self, addr):
        return self.given.get_submap(addr)

    def split_state(self, size, where):
        for addr, leaf in self.given.flat().items():
            if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != size:
                raise ShapeError(
                    f"site {join(self.where, addr)!r} sits inside {where} of size {size}, so its "
                    f"choice needs a leading axis of that size; got shape {jnp.shape(leaf)}"
                )
        return self.given

    def check_all_used(self) -> None:
        extra = sorted(set(self.given.addresses()) - set(_flat_keys(self.choices)))
        if extra:
            raise AddressError(
                f"the choices have addresses the program never samples: {extra}; the program's "
                f"latent sites are {sorted(_flat_keys(self.choices))}"
            )


class Importance(Handler):
    """`importance`: read constrained sites from a choice map, draw the others."""

    def __init__(self, state: tuple | None = None, where: str = ""):
        super().__init__(state, where)
        self.key, constraints = state if state is not None else (None, None)
        self.constraints = constraints if constraints is not None else ChoiceMap()

    def _next(self) -> jax.Array:
        self.key, sub = jax.random.split(self.key)
        return sub

    def value(self, addr, dist, estimator):
        if addr in self.constraints:
            self.scored.add(addr)
            return jnp.asarray(self.constraints[addr])
        return dist.sample(self._next())

    def child_state(self, addr):
        return (self._next(), self.constraints.get_submap(addr))

    def split_state(self, size, where):
        return (jax.random.split(self._next(), size), self.constraints)


class Sim(Handler):
    """`sim` inside an @expectation program: leave a `sample_p` for the transformation."""

    def __init__(self, state: Any = None, where: str = "") -> None:
        super().__init__(state, where)
        self.drawn: dict[str, jax.Array] = {}  # latent site -> the log density bound with its value

    def value(self, addr, dist, estimator):
        leaves, treedef = jax.tree.flatten(dist)

        def draw(ls):
            d = jax.tree.unflatten(treedef, ls)
            x = d.sample(jax.random.PRNGKey(0))
            return x, d.log_prob(x)

        aval, density = jax.eval_shape(draw, leaves)
        spec = SiteSpec(address=join(self.where, addr), treedef=treedef, n_leaves=len(leaves), estimator=estimator,
                        levels=(), aval=jax.ShapeDtypeStruct(aval.shape, aval.dtype),
                        density=jax.ShapeDtypeStruct(density.shape, density.dtype))
        value, self.drawn[addr] = sample_p.bind(*leaves, *_NONCES, site=spec)
        return value

    def log_density(self, addr, dist, value):
        return self.drawn.pop(addr) if addr in self.drawn else dist.log_prob(value)


class Predict(Importance):
    """Posterior predictive: constrained sites from the guide, every other site (observed ones
    included) drawn afresh."""

    def site(self, addr, dist, obs, estimator, scale=1.0):
        return super().site(addr, dist, None, estimator, scale)
