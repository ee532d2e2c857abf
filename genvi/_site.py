"""What an estimator sees: the `Estimator` interface, `SiteCall` and `Outcome`.

The transformation evaluates an objective program in continuation-passing style. At a sample
site it calls the site's estimator with a [`SiteCall`][]: the site's distribution, a key, and
`continue_(x)`, which runs the rest of the program with the site's value set to `x` and returns
an [`Outcome`][]: the program's additive terms, each as a `(value, surrogate)` pair. Surrogates
keep the value of their term (every correction has value zero, such as
`c * (l - stop_gradient(l))`, or is a factor equal to one, such as `magic_box(l)`) while their
gradient is the estimator's unbiased gradient estimate. The helpers on `SiteCall` say which
terms depend on the site and map element-shaped arrays (log densities, baselines, enumeration
weights) onto each term by the analysis' alignment.
"""

from __future__ import annotations

import abc
import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from ._analysis import Align, Deps
from ._errors import EstimatorError
from ._sitedist import SiteDist


class Outcome(eqx.Module):
    """The rest of a program's result: `terms[key] = (value, surrogate)`, estimator states."""

    terms: dict[str, tuple[jax.Array, jax.Array]]
    states: dict[str, Any]


def magic_box(logq: jax.Array) -> jax.Array:
    """`exp(l - stop_gradient(l))`: equals one, has gradient `grad l` (DiCE, Foerster et al. 2018)."""
    return jnp.exp(logq - jax.lax.stop_gradient(logq))


class SiteCall:
    """One visit of a site by the transformation, handed to the site's estimator rule."""

    def __init__(self, *, address: str, key: jax.Array, dist: SiteDist | None, sid: int,
                 rank: int, element_shape: tuple[int, ...], state: Any, args: tuple,
                 continuation: Callable[[jax.Array], Outcome] | None,
                 term_deps: Callable[[str], Deps], add_deps: Callable[[str, Deps], None],
                 value_deps: Deps, branching: Callable[[int], contextlib.AbstractContextManager],
                 describe: Callable[[str], str]):
        self.address = address
        self.key = key
        self.dist = dist
        self.sid = sid
        self.element_shape = element_shape
        self.state = state
        self.args = args
        self._k = continuation
        self._term_deps = term_deps
        self._add_deps = add_deps
        self._value_deps = value_deps
        self._rank = rank
        self.branching = branching
        self.describe = describe  # the operation that produced a term, for error messages

    # --- running the rest of the program ------------------------------------------------------
    def continue_(self, x: jax.Array) -> Outcome:
        """Run the rest of the program with this site's value set to `x`."""
        if self._k is None:
            raise EstimatorError(f"site {self.address!r}: this estimator needs the continuation, "
                                 "which is not available inside a scan; use a local estimator")
        return self._k(x)

    # --- which terms depend on the site, and how -----------------------------------------------
    def dependent(self, outcome: Outcome) -> list[str]:
        """Keys of the terms that depend on this site (the costs downstream of it)."""
        return [k for k in outcome.terms if self.sid in self._term_deps(k)]

    def alignment(self, key: str) -> Align:
        return self._term_deps(key)[self.sid]

    def require_factorised(self, outcome: Outcome, why: str) -> None:
        """Raise unless every dependent term keeps this site's elements apart."""
        for key in self.dependent(outcome):
            if not self.factorises(key):
                raise EstimatorError(
                    f"site {self.address!r}: {why} needs every term that depends on the site to "
                    f"keep its {self.element_shape} elements apart, but the term computed by "
                    f"`{self.describe(key)}` mixes them; compute per-element quantities before "
                    "summing them, or use REINFORCE for this site"
                )

    def factorises(self, key: str) -> bool:
        """Whether the term treats each element of the site separately (axes of size 1 aside)."""
        return all(a is not None or n == 1 for a, n in zip(self.alignment(key), self.element_shape))

    def aligned_on(self, key: str, axis: int) -> bool:
        return self.alignment(key)[axis] is not None

    def to_term(self, elem: jax.Array, key: str, term_shape: tuple[int, ...]) -> jax.Array:
        """Map an element-shaped array onto a term: sum over the site axes the term mixes,
        then place the aligned axes where the term has them and broadcast the rest."""
        align = self.alignment(key)
        mixed = tuple(j for j, a in enumerate(align) if a is None)
        reduced = jnp.sum(elem, axis=mixed) if mixed else elem
        kept = [a for a in align if a is not None]
        order = sorted(range(len(kept)), key=lambda i: kept[i])
        reduced = jnp.transpose(reduced, order) if len(kept) > 1 else reduced
        return jax.lax.broadcast_in_dim(reduced, term_shape, tuple(sorted(kept)))

    def to_element(self, term: jax.Array, key: str) -> jax.Array:
        """Map a term onto the site's elements: the part of the term each element can affect.

        Sums the term over its axes not aligned with the site; along site axes the term mixes,
        every element gets the whole sum (it may affect all of it)."""
        align = self.alignment(key)
        kept = [(j, a) for j, a in enumerate(align) if a is not None]
        other = tuple(i for i in range(term.ndim) if i not in {a for _, a in kept})
        reduced = jnp.sum(term, axis=other) if other else term
        site_axes = [j for j, _ in sorted(kept, key=lambda ja: ja[1])]  # in the term's axis order
        order = sorted(range(len(site_axes)), key=lambda i: site_axes[i])
        reduced = jnp.transpose(reduced, order) if len(site_axes) > 1 else reduced
        return jax.lax.broadcast_in_dim(reduced, self.element_shape, tuple(sorted(site_axes)))

    def cost(self, outcome: Outcome) -> jax.Array:
        """Element-shaped total of the dependent terms' values (the downstream cost per element)."""
        total = jnp.zeros(self.element_shape)
        for key in self.dependent(outcome):
            total = total + self.to_element(outcome.terms[key][0], key)
        return total

    def add_term(self, outcome: Outcome, name: str, value: jax.Array, surrogate: jax.Array) -> Outcome:
        """Add an element-shaped term (a baseline correction of value zero, say) to `outcome`."""
        key = f"x{self.sid}_{name}"
        deps = {sid: tuple(a if a is not None and a < len(self.element_shape) else None for a in align)
                for sid, align in self._value_deps.items()}
        deps[self.sid] = tuple(range(self._rank))
        self._add_deps(key, deps)
        return Outcome({**outcome.terms, key: (value, surrogate)}, outcome.states)

    def with_state(self, outcome: Outcome, state: Any) -> Outcome:
        return Outcome(outcome.terms, {**outcome.states, self.address: state})


class Estimator(eqx.Module):
    """A gradient strategy for one site: `rule` turns the continuation into terms.

    Subclasses are `eqx.Module`s with static configuration. `local = True` marks estimators that
    need no continuation (`LocalEstimator`); only those may serve sites inside a `lax.scan` that
    is kept rolled. `needs_terms = False` marks estimators that leave every term as it is.
    """

    local: ClassVar[bool] = False
    needs_terms: ClassVar[bool] = True
    stateful: ClassVar[bool] = False

    @abc.abstractmethod
    def rule(self, call: SiteCall) -> Outcome:
        """Return the rest of the program's terms, corrected so surrogates are unbiased."""

    def check(self, address: str, dist: Any) -> None:
        """Raise `EstimatorError` if this estimator cannot serve a site with distribution `dist`
        (a placeholder instance: its type and shapes, no values)."""

    def init_state(self) -> Any:
        """The initial state of a stateful estimator (running baselines)."""
        return None


class LocalEstimator(Estimator):
    """An estimator that draws in place and then corrects the terms: no continuation needed."""

    local: ClassVar[bool] = True

    @abc.abstractmethod
    def draw(self, key: jax.Array, dist: SiteDist) -> tuple[jax.Array, Any]:
        """Draw the site's value; return it with whatever `adjust` needs (element-shaped)."""

    def adjust(self, call: SiteCall, outcome: Outcome, aux: Any) -> Outcome:
        """Correct the terms; `aux` is what `draw` returned (summed to a scalar inside a scan)."""
        return outcome

    def rule(self, call: SiteCall) -> Outcome:
        x, aux = self.draw(call.key, call.dist)
        return self.adjust(call, call.continue_(x), aux)


@contextlib.contextmanager
def branch_counter(limit: int) -> Iterator[Callable[[int], contextlib.AbstractContextManager]]:
    """Count nested continuation branches (enumeration, MVD) while tracing; refuse past `limit`."""
    stack = [1]

    @contextlib.contextmanager
    def branching(n: int) -> Iterator[None]:
        total = stack[-1] * n
        if total > limit:
            raise EstimatorError(
                f"nested enumeration would evaluate the rest of the program {total} times "
                f"(limit {limit}); sites enumerated one inside another multiply their supports. "
                "Use REINFORCE or MVD for some of them, or raise max_branches"
            )
        stack.append(total)
        try:
            yield
        finally:
            stack.pop()

    yield branching


def element_count(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
