"""The program the transformation works on: a jaxpr flattened into a list of nodes.

`build(closed_jaxpr, resolve)` turns an objective program's jaxpr into a `Program`:

- equations without sample sites stay single *prim* nodes and are re-bound as they are (jitted
  helpers, `custom_jvp` functions such as `relu` or `logaddexp`, scans and conds without sites);
- sub-jaxprs that contain sites are inlined: `jit` / `closed_call` / `remat` bodies in place, and
  each branch of a `cond` followed by a `select` (every branch is evaluated; a site in a branch
  not taken is drawn but cannot influence the result, so every estimator stays unbiased);
- a `scan` whose sites all use *local* estimators (REPARAM, REINFORCE: they need no
  continuation) becomes one *scan* node that draws inside the loop; a scan with a site that needs
  the continuation (ENUM, MVD) is unrolled, so each step sees the rest of the program;
- sites inside `while_loop`, `custom_jvp` / `custom_vjp` bodies or other higher-order primitives
  are refused with an error naming the site.

One peephole rewrite runs while building: a `reshape` of an expand-dims `broadcast_in_dim`
(NumPyro's `sum_rightmost` writes `reshape(x[..., None], ...)`) becomes one `reshape` of `x`, or
`x` itself. XLA on CPU turns the pair into a reduction over a trailing unit axis, which runs
about 12x slower than the plain one (`benchmarks/xla_cpu_pitfalls.py`; W4 in `benchmarks/run.py`).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from jax import lax
from jax.extend import core as jcore
from jax.extend.core import primitives as P

from . import _jax_compat
from ._errors import EstimatorError
from ._primitive import SiteSpec, sample_p


@dataclasses.dataclass(eq=False)
class V:
    """A variable of the flattened program."""

    shape: tuple[int, ...]
    dtype: Any

    def __repr__(self) -> str:
        return f"V{id(self) % 10000}{list(self.shape)}"


@dataclasses.dataclass(frozen=True, eq=False)
class C:
    """A constant (a jaxpr literal or a closed-over array)."""

    value: Any

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(jnp.shape(self.value))


Atom = V | C


@dataclasses.dataclass(eq=False)
class Node:
    """One step of the program.

    `kind` is "prim" (re-bind `prim` with `params`), "fn" (call `fn`, a structural helper such as
    a slice of an unrolled scan, with alignment rule `align`), "site" (a sample site with
    resolved `estimator`) or "scan" (a scan whose body `body` holds sites drawn in place).
    """

    kind: str
    ins: list[Atom]
    outs: list[V]
    prim: Any = None
    params: dict = dataclasses.field(default_factory=dict)
    fn: Callable | None = None
    align: str | None = None
    site: SiteSpec | None = None
    sid: int = -1
    estimator: Any = None
    body: "Program | None" = None


@dataclasses.dataclass
class Program:
    invars: list[V]
    outvars: list[Atom]
    nodes: list[Node]

    def sites(self) -> list[Node]:
        """Every site node, including those inside scan bodies (depth first)."""
        out = []
        for node in self.nodes:
            if node.kind == "site":
                out.append(node)
            elif node.kind == "scan":
                out.extend(node.body.sites())
        return out


# call-like primitives whose bodies are inlined, by name: `jax.extend` exports them variously by
# release (`pjit` became `jit` in 0.7), but their names and their `jaxpr` parameter stay
_CALL_NAMES = {"jit", "pjit", "closed_call", "call", "core_call", "remat", "checkpoint", "remat2"}


def has_sites(jaxpr: jcore.Jaxpr) -> bool:
    """Whether `jaxpr` binds `sample_p` anywhere, nested jaxprs included."""
    return bool(site_addresses(jaxpr))


def site_addresses(jaxpr: jcore.Jaxpr) -> list[str]:
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive is sample_p:
            out.append(eqn.params["site"].address)
        for sub in _jax_compat.jaxprs_in_params(eqn.params):
            out.extend(site_addresses(sub))
    return out


def _open(j: Any) -> tuple[jcore.Jaxpr, list]:
    if isinstance(j, jcore.ClosedJaxpr):
        return j.jaxpr, list(j.consts)
    return j, []


class Builder:
    """Converts jaxprs into one flat `Program`, numbering sites uniquely."""

    def __init__(self, resolve: Callable[[SiteSpec], Any], counter: itertools.count | None = None):
        self.resolve = resolve
        self.counter = counter if counter is not None else itertools.count()
        self.nodes: list[Node] = []
        self.expanded: dict[int, Atom] = {}  # id of an expand-dims broadcast's output -> its input

    def program(self, jaxpr: jcore.Jaxpr, consts: list) -> Program:
        invars = [V(tuple(v.aval.shape), v.aval.dtype) for v in jaxpr.invars]
        outs = self.convert(jaxpr, consts, invars)
        return Program(invars, outs, self.nodes)

    def convert(self, jaxpr: jcore.Jaxpr, consts: list, in_atoms: list[Atom]) -> list[Atom]:
        env: dict[Any, Atom] = {}
        for var, value in zip(jaxpr.constvars, consts):
            env[var] = C(value)
        for var, atom in zip(jaxpr.invars, in_atoms):
            env[var] = atom

        def read(x):
            return C(x.val) if isinstance(x, jcore.Literal) else env[x]

        for eqn in jaxpr.eqns:
            ins = [read(x) for x in eqn.invars]
            outs = self._equation(eqn, ins)
            for var, atom in zip(eqn.outvars, outs):
                env[var] = atom
        return [read(x) for x in jaxpr.outvars]

    def _fresh(self, eqn) -> list[V]:
        return [V(tuple(v.aval.shape), v.aval.dtype) for v in eqn.outvars]

    def _equation(self, eqn, ins: list[Atom]) -> list[Atom]:
        prim = eqn.primitive
        if prim is sample_p:
            spec = eqn.params["site"]
            node = Node("site", ins, self._fresh(eqn), site=spec, sid=next(self.counter),
                        estimator=self.resolve(spec))
            self.nodes.append(node)
            return node.outs
        subs = list(_jax_compat.jaxprs_in_params(eqn.params))
        if not any(has_sites(s) for s in subs):
            return self._prim(eqn, ins)
        if prim.name in _CALL_NAMES:
            key = "jaxpr" if "jaxpr" in eqn.params else "call_jaxpr"
            jaxpr, consts = _open(eqn.params[key])
            return self.convert(jaxpr, consts, ins)
        if prim is P.cond_p:
            return self._cond(eqn, ins)
        if prim is P.scan_p:
            return self._scan(eqn, ins)
        addresses = sorted({a for s in subs for a in site_addresses(s)})
        raise EstimatorError(
            f"sites {addresses} sit inside `{prim.name}`, which the transformation cannot see "
            "through; sample in the main program, inside jax.jit, lax.cond, lax.scan, "
            "genvi.vmap or genvi.scan instead"
        )

    def _prim(self, eqn, ins: list[Atom]) -> list[Atom]:
        """A node re-binding `eqn`, with the expand-dims-then-reshape pair folded into one reshape."""
        prim, params = eqn.primitive, dict(eqn.params)
        if prim is P.reshape_p and params.get("dimensions") is None and id(ins[0]) in self.expanded:
            source = self.expanded[id(ins[0])]
            if tuple(params["new_sizes"]) == source.shape:
                return [source]
            ins = [source]
        node = Node("prim", ins, self._fresh(eqn), prim=prim, params=params)
        self.nodes.append(node)
        if prim is P.broadcast_in_dim_p and _expands_dims(ins[0].shape, params):
            self.expanded[id(node.outs[0])] = ins[0]
        return node.outs

    def _cond(self, eqn, ins: list[Atom]) -> list[Atom]:
        index, operands = ins[0], ins[1:]
        branches = eqn.params["branches"]
        results = [self.convert(*_open(br), operands) for br in branches]
        outs = self._fresh(eqn)
        n = len(branches)
        for j, out in enumerate(outs):
            cases = [r[j] for r in results]
            self.nodes.append(Node(
                "fn", [index, *cases], [out],
                fn=lambda i, *cs, n=n: [lax.select_n(jnp.clip(i, 0, n - 1).astype(jnp.int32), *cs)],
                align="select",
            ))
        return outs

    def _scan(self, eqn, ins: list[Atom]) -> list[Atom]:
        params = eqn.params
        body_jaxpr, body_consts = _open(params["jaxpr"])
        sub = Builder(self.resolve, self.counter)
        body = sub.program(body_jaxpr, body_consts)
        if all(getattr(s.estimator, "local", False) for s in body.sites()):
            node = Node("scan", ins, self._fresh(eqn), params=dict(params), body=body,
                        sid=next(self.counter))
            self.nodes.append(node)
            return node.outs
        return self._unroll(eqn, ins, body_jaxpr, body_consts)

    def _unroll(self, eqn, ins, body_jaxpr, body_consts) -> list[Atom]:
        p = eqn.params
        nc, ncarry, length = p["num_consts"], p["num_carry"], p["length"]
        consts, carry, xs = ins[:nc], ins[nc:nc + ncarry], ins[nc + ncarry:]
        steps = range(length - 1, -1, -1) if p["reverse"] else range(length)
        ys_at: dict[int, list[Atom]] = {}
        for t in steps:
            x_t = []
            for x in xs:
                out = V(x.shape[1:], _dtype(x))
                self.nodes.append(Node("fn", [x], [out], fn=lambda a, t=t: [a[t]], align="index0"))
                x_t.append(out)
            res = self.convert(body_jaxpr, body_consts, [*consts, *carry, *x_t])
            carry, ys_at[t] = res[:ncarry], res[ncarry:]
        outs = self._fresh(eqn)
        for j, out in enumerate(outs[ncarry:]):
            self.nodes.append(Node("fn", [ys_at[t][j] for t in range(length)], [out],
                                   fn=lambda *ys: [jnp.stack(ys)], align="stack0"))
        for out, c in zip(outs[:ncarry], carry):
            self.nodes.append(Node("fn", [c], [out], fn=lambda a: [a], align="same"))
        return outs


def _expands_dims(shape: tuple[int, ...], params: dict) -> bool:
    """Whether a `broadcast_in_dim` only inserts unit axes (so it is a reshape)."""
    out, dims = tuple(params["shape"]), tuple(params["broadcast_dimensions"])
    if list(dims) != sorted(dims) or any(out[d] != n for d, n in zip(dims, shape)):
        return False
    return all(n == 1 for i, n in enumerate(out) if i not in dims)


def _dtype(atom: Atom) -> Any:
    return atom.dtype if isinstance(atom, V) else jnp.result_type(atom.value)


def build(closed: jcore.ClosedJaxpr, resolve: Callable[[SiteSpec], Any]) -> Program:
    """Flatten an objective program's jaxpr (see the module docstring)."""
    return Builder(resolve).program(closed.jaxpr, list(closed.consts))


def scan_runner(node: Node) -> Callable:
    """`lax.scan` with the original scan's options, for a "scan" node."""
    p = node.params
    return lambda body, init, xs: lax.scan(body, init, xs, length=p["length"], reverse=p["reverse"],
                                           unroll=p.get("unroll", 1))


def read(env: dict, atom: Atom) -> Any:
    return atom.value if isinstance(atom, C) else env[atom]

