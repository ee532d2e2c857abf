"""The transformation: evaluate an objective program so that its gradient is unbiased.

`evaluate(fn, args, ...)` traces `fn` to a jaxpr (with `jax.make_jaxpr`; public API only),
flattens it (`_ir.py`), analyses it (`_analysis.py`) and interprets it in continuation-passing
style, as ADEV does (Lew et al., POPL 2023): at each sample site the site's estimator receives
the continuation, the rest of the program as a function of the site's value. Where ADEV
propagates forward-mode dual numbers, genvi builds a *surrogate*: a scalar equal to the
program's value whose reverse-mode gradient (`jax.grad`) is the estimator's unbiased gradient.
That composes with `jit`, `vmap` and XLA's reverse mode, and costs a REPARAM-only program
exactly what the program costs by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from . import _jax_compat
from ._analysis import Analysis
from ._errors import EstimatorError, ShapeError
from ._ir import Node, Program, build, read, scan_runner
from ._primitive import SiteSpec
from ._site import Estimator, Outcome, SiteCall, branch_counter
from ._sitedist import SiteDist, placeholder
from ._trace import sum_arrays


def resolver(overrides: Mapping[str, Estimator], policy: Callable | None = None
             ) -> Callable[[SiteSpec], Estimator]:
    """Estimator choice for a site: objective override > site's `estimator=` > default.

    An objective's `policy(address, dist, chosen_or_None) -> Estimator` may replace the default
    or refuse a choice it cannot use (e.g. DReG needs REPARAM everywhere)."""
    from genvi.estimators import default_estimator  # the core's one upward reference

    def resolve(spec: SiteSpec) -> Estimator:
        dist = placeholder(spec)
        est = overrides.get(spec.address, spec.estimator)
        if policy is not None:
            est = policy(spec.address, dist, est)
        if est is None:
            est = default_estimator(dist)
        if not isinstance(est, Estimator):
            raise EstimatorError(f"site {spec.address!r}: estimator must be a genvi estimator, got {est!r}")
        est.check(spec.address, dist)
        return est

    return resolve


def _eval_node(node: Node, vals: list[Any]) -> list[Any]:
    if node.kind == "prim":
        return _jax_compat.bind(node.prim, node.params, vals)
    return node.fn(*vals)


def _site_dist(node: Node, env: dict) -> SiteDist:
    return SiteDist(node.site, [read(env, a) for a in node.ins[: node.site.n_leaves]])


def _site_values(node: Node, dist: SiteDist, x: jax.Array) -> dict:
    """A site's two outputs, its value and the value's log density (the draw's own, if `x` is
    the estimator's draw; see `SiteDist.log_prob`)."""
    value, density = node.outs
    return {value: jnp.asarray(x).astype(value.dtype), density: dist.log_prob(x).astype(density.dtype)}


def _run_scan(node: Node, env: dict, key: jax.Array) -> tuple[list, list]:
    """Run a scan node with its sites drawn in place; return outputs and per-site `aux`."""
    p = node.params
    nc, ncarry = p["num_consts"], p["num_carry"]
    vals = [read(env, a) for a in node.ins]
    consts, init, xs = vals[:nc], vals[nc:nc + ncarry], vals[nc + ncarry:]
    keys = jax.random.split(jax.random.fold_in(key, node.sid), p["length"])

    def body(carry, inputs):
        k, x = inputs
        outs, auxes = _run_local(node.body, [*consts, *carry, *x], k)
        return outs[:ncarry], (outs[ncarry:], auxes)

    carry, (ys, auxes) = scan_runner(node)(body, init, (keys, xs))
    return [*carry, *ys], auxes


def _run_local(program: Program, vals: list, key: jax.Array) -> tuple[list, list]:
    """Evaluate a scan body: sites draw with their (local) estimator, no continuation."""
    env = dict(zip(program.invars, vals))
    auxes: list = []
    for node in program.nodes:
        if node.kind == "site":
            dist = _site_dist(node, env)
            x, aux = node.estimator.draw(jax.random.fold_in(key, node.sid), dist)
            env.update(_site_values(node, dist, x))
            auxes.append(aux)
        elif node.kind == "scan":
            outs, inner = _run_scan(node, env, key)
            env.update(zip(node.outs, outs))
            auxes.extend(inner)
        else:
            env.update(zip(node.outs, _eval_node(node, [read(env, a) for a in node.ins])))
    return [read(env, a) for a in program.outvars], auxes


class Interpreter:
    """Continuation-passing evaluation of one `Program` (see the module docstring)."""

    def __init__(self, program: Program, analysis: Analysis, key: jax.Array, args: tuple,
                 states: dict, branching: Callable):
        self.program = program
        self.analysis = analysis
        self.key = key
        self.args = args
        self.states = states
        self.branching = branching
        self.fast = not any(s.estimator.needs_terms for s in program.sites())

    def run(self, i: int, env: dict) -> Outcome:
        nodes = self.program.nodes
        while i < len(nodes):
            node = nodes[i]
            if node.kind == "site":
                return self._site(node, i, env)
            if node.kind == "scan":
                return self._scan(node, i, env)
            env.update(zip(node.outs, _eval_node(node, [read(env, a) for a in node.ins])))
            i += 1
        return self._collect(env)

    def _call(self, node: Node, est: Estimator, dist: SiteDist | None, continuation) -> SiteCall:
        address = node.site.address
        state = self.states.get(address)
        if state is None and est.stateful:
            state = est.init_state()
        return SiteCall(
            address=address, key=jax.random.fold_in(self.key, node.sid), dist=dist, sid=node.sid,
            rank=self.analysis.rank[node.sid],
            element_shape=dist.element_shape if dist is not None else (), state=state,
            args=self.args, continuation=continuation, term_deps=self.analysis.term_deps,
            add_deps=self.analysis.extra.__setitem__,
            value_deps=self.analysis.of(node.outs[0]) if dist is not None else {},
            branching=self.branching, describe=self._describe,
        )

    def _describe(self, key: str) -> str:
        term = self.analysis.terms.get(key)
        return term.origin if term is not None else "an estimator's correction"

    def _site(self, node: Node, i: int, env: dict) -> Outcome:
        dist = _site_dist(node, env)

        def continuation(x):
            return self.run(i + 1, {**env, **_site_values(node, dist, x)})

        return node.estimator.rule(self._call(node, node.estimator, dist, continuation))

    def _scan(self, node: Node, i: int, env: dict) -> Outcome:
        outs, auxes = _run_scan(node, env, self.key)
        outcome = self.run(i + 1, {**env, **dict(zip(node.outs, outs))})
        for site, aux in zip(node.body.sites(), auxes):
            call = self._call(site, site.estimator, None, None)
            outcome = site.estimator.adjust(call, outcome, jax.tree.map(jnp.sum, aux))
        return outcome

    def _collect(self, env: dict) -> Outcome:
        if self.fast:
            (out,) = self.program.outvars
            value = read(env, out)
            return Outcome({"out": (value, value)}, {})
        terms = {}
        for key, term in self.analysis.terms.items():
            value = read(env, term.atom)
            for op, arg in term.factors:
                value = -value if op == "neg" else value * read(env, arg) if op == "mul" else value / read(env, arg)
            terms[key] = (value, value)
        return Outcome(terms, {})


def evaluate(fn: Callable, args: tuple, *, key: jax.Array, overrides: Mapping[str, Estimator],
             states: dict | None, max_branches: int, policy: Callable | None = None
             ) -> tuple[jax.Array, jax.Array, dict]:
    """Run the transformed program: returns `(value, surrogate, new_states)`."""
    dynamic, static = eqx.partition(args, eqx.is_array)
    leaves, treedef = jax.tree.flatten(dynamic)

    def flat(*leaves):
        return fn(*eqx.combine(jax.tree.unflatten(treedef, list(leaves)), static))

    closed, out = jax.make_jaxpr(flat, return_shape=True)(*leaves)
    if not (isinstance(out, jax.ShapeDtypeStruct) and out.shape == () and jnp.issubdtype(out.dtype, jnp.floating)):
        raise ShapeError(
            f"an @expectation program must return one floating-point scalar, got {out}; "
            "sum or average per-element values inside the program"
        )
    program = build(closed, resolver(overrides, policy))
    analysis = Analysis(program)
    states = dict(states or {})
    with branch_counter(max_branches) as branching:
        interpreter = Interpreter(program, analysis, key, args, states, branching)
        outcome = interpreter.run(0, dict(zip(program.invars, leaves)))
    value = sum_arrays((v for v, _ in outcome.terms.values()), out.dtype)
    surrogate = sum_arrays((s for _, s in outcome.terms.values()), out.dtype)
    return value.astype(out.dtype), surrogate.astype(out.dtype), {**states, **outcome.states}


def stateful_sites(fn: Callable, args: tuple, overrides: Mapping[str, Estimator],
                   policy: Callable | None = None) -> dict[str, Any]:
    """Initial states of the program's stateful estimators, keyed by address."""
    dynamic, static = eqx.partition(args, eqx.is_array)
    leaves, treedef = jax.tree.flatten(dynamic)
    closed = jax.make_jaxpr(lambda *ls: fn(*eqx.combine(jax.tree.unflatten(treedef, list(ls)), static)))(*leaves)
    program = build(closed, resolver(overrides, policy))
    return {s.site.address: s.estimator.init_state() for s in program.sites() if s.estimator.stateful}
