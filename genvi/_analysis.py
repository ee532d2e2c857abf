"""Static analysis of a flattened program: which values depend on which sites, and how.

Two results, both computed once per trace:

1. **Alignment.** For every variable and every site it depends on, an *alignment*: for each
   element axis of the site (vmap levels, then the distribution's batch axes), the axis of the
   variable that runs in step with it, or `None` when the variable mixes the site's elements
   along that axis. "Variable axis i is aligned with site axis j" means entry `i = n` of the
   variable depends on the site only through its elements with index `n` on axis j. Elementwise
   operations, broadcasts, reductions over other axes, batched `dot_general`s and gathers keep
   alignment; anything the rules below do not know conservatively loses it (which keeps every
   estimator unbiased and only costs variance, or refuses parallel enumeration with a clear error).

2. **Additive decomposition.** The program's scalar output is rewritten as a sum of *terms*:
   `output = sum_t factor_t * sum(term_t)`, descending through `add`, `sub`, `neg`,
   `reduce_sum`, shape-only operations and scaling by site-independent scalars. Estimators
   reweight only the terms that depend on their site (Rao-Blackwellisation) and, through
   alignment, only the entries of a term that belong to the same element (per-datapoint credit
   for REINFORCE, parallel enumeration for ENUM under a plate).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from jax.extend import core as jcore

from ._ir import C, Node, Program, V
from ._sitedist import placeholder

Align = tuple[int | None, ...]
Deps = dict[int, Align]


# --- alignment algebra ------------------------------------------------------------------------


def merge(*parts: Deps) -> Deps:
    """Dependencies of a value computed from several inputs: alignments must agree per axis."""
    out: Deps = {}
    for deps in parts:
        for sid, align in deps.items():
            if sid in out:
                out[sid] = tuple(a if a == b else None for a, b in zip(out[sid], align))
            else:
                out[sid] = align
    return out


def remap(deps: Deps, axis_map: Callable[[int], int | None]) -> Deps:
    return {sid: tuple(None if a is None else axis_map(a) for a in align) for sid, align in deps.items()}


def full(deps: Deps) -> Deps:
    return {sid: (None,) * len(align) for sid, align in deps.items()}


# --- rules per primitive ----------------------------------------------------------------------

Shapes = list[tuple[int, ...]]
Rule = Callable[[dict, Shapes, Shapes, list[Deps]], list[Deps]]


def _elementwise(params, ins, outs, deps):
    out = outs[0]
    parts = []
    for shape, d in zip(ins, deps):
        offset = len(out) - len(shape)
        parts.append(remap(d, lambda a, shape=shape, offset=offset:
                           a + offset if shape[a] == out[a + offset] else None))
    merged = merge(*parts)
    return [merged for _ in outs]


def _reduce(params, ins, outs, deps):
    axes = set(params["axes"])
    return [remap(deps[0], lambda a: None if a in axes else a - sum(x < a for x in axes))]


def _along(axis_param: str) -> Rule:
    def rule(params, ins, outs, deps):
        axis = params[axis_param]
        merged = merge(*[remap(d, lambda a: None if a == axis else a) for d in deps])
        return [merged for _ in outs]

    return rule


def _broadcast_in_dim(params, ins, outs, deps):
    dims, shape, out = params["broadcast_dimensions"], ins[0], outs[0]
    parts = [remap(deps[0], lambda a: dims[a] if shape[a] == out[dims[a]] else None)]
    return [merge(*parts, *[full(d) for d in deps[1:]])]


def _reshape_map(src: tuple, dst: tuple) -> dict[int, int]:
    a = [i for i, s in enumerate(src) if s != 1]
    b = [i for i, s in enumerate(dst) if s != 1]
    if [src[i] for i in a] == [dst[i] for i in b]:
        return dict(zip(a, b))
    prefix = {}
    for i in range(min(len(src), len(dst))):
        if src[: i + 1] != dst[: i + 1]:
            break
        prefix[i] = i
    return prefix


def _reshape(params, ins, outs, deps):
    mapping = _reshape_map(ins[0], outs[0])
    return [merge(remap(deps[0], mapping.get), *[full(d) for d in deps[1:]])]


def _squeeze(params, ins, outs, deps):
    dims = set(params["dimensions"])
    return [remap(deps[0], lambda a: None if a in dims else a - sum(x < a for x in dims))]


def _transpose(params, ins, outs, deps):
    perm = list(params["permutation"])
    return [remap(deps[0], perm.index)]


def _dot_general(params, ins, outs, deps):
    (lc, rc), (lb, rb) = params["dimension_numbers"]
    lfree = [i for i in range(len(ins[0])) if i not in lc and i not in lb]
    rfree = [i for i in range(len(ins[1])) if i not in rc and i not in rb]

    def lmap(a):
        if a in lb:
            return list(lb).index(a)
        return None if a in lc else len(lb) + lfree.index(a)

    def rmap(a):
        if a in rb:
            return list(rb).index(a)
        return None if a in rc else len(lb) + len(lfree) + rfree.index(a)

    return [merge(remap(deps[0], lmap), remap(deps[1], rmap))]


def _same_size_axes(src: tuple, dst: tuple, keep: Callable[[int], bool]) -> Callable:
    return lambda a: a if keep(a) and src[a] == dst[a] else None


def _slice(params, ins, outs, deps):
    starts, strides = params["start_indices"], params["strides"] or (1,) * len(ins[0])
    keep = lambda a: starts[a] == 0 and strides[a] == 1  # noqa: E731
    return [remap(deps[0], _same_size_axes(ins[0], outs[0], keep))]


def _dynamic_slice(params, ins, outs, deps):
    return [merge(remap(deps[0], _same_size_axes(ins[0], outs[0], lambda a: True)),
                  *[full(d) for d in deps[1:]])]


def _dynamic_update_slice(params, ins, outs, deps):
    operand, update = ins[0], ins[1]
    same = lambda a: operand[a] == update[a]  # noqa: E731
    return [merge(remap(deps[0], lambda a: a if same(a) else None),
                  remap(deps[1], lambda a: a if same(a) else None),
                  *[full(d) for d in deps[2:]])]


def _pad(params, ins, outs, deps):
    config = params["padding_config"]
    return [merge(remap(deps[0], lambda a: a if tuple(config[a]) == (0, 0, 0) else None), full(deps[1]))]


def _rev(params, ins, outs, deps):
    dims = set(params["dimensions"])
    return [remap(deps[0], lambda a: None if a in dims else a)]


def _concatenate(params, ins, outs, deps):
    axis = params["dimension"]
    return [merge(*[remap(d, lambda a: None if a == axis else a) for d in deps])]


def _gather(params, ins, outs, deps):
    dn = params["dimension_numbers"]
    offset = set(int(d) for d in dn.offset_dims)
    out_rank = len(outs[0])
    batch_positions = [d for d in range(out_rank) if d not in offset]
    idx_axes = list(range(len(ins[1]) - 1))  # the last indices axis holds the index vector
    idx_to_out = dict(zip(idx_axes, batch_positions))
    operand_batch = {int(o): int(i) for o, i in zip(dn.operand_batching_dims, dn.start_indices_batching_dims)}
    operand_map = {o: idx_to_out.get(i) for o, i in operand_batch.items()}
    return [merge(remap(deps[0], operand_map.get), remap(deps[1], idx_to_out.get))]


def _call(key: str) -> Rule:
    def rule(params, ins, outs, deps):
        jaxpr = params[key]
        if isinstance(jaxpr, jcore.ClosedJaxpr):
            jaxpr = jaxpr.jaxpr
        return jaxpr_deps(jaxpr, deps)

    return rule


def _union(params, ins, outs, deps):
    merged = full(merge(*deps))
    return [merged for _ in outs]


_ELEMENTWISE = """
abs acos acosh add add_any and asin asinh atan atan2 atanh bessel_i0e bessel_i1e cbrt ceil clamp
conj convert_element_type copy copy_p cos cosh digamma div eq erf erf_inv erfc exp exp2 expm1
floor ge gt igamma igamma_grad_a igammac imag integer_pow is_finite le lgamma log log1p logistic
lt max min mul ne neg nextafter not or polygamma population_count pow random_gamma_grad real
reduce_precision regularized_incomplete_beta rem round rsqrt select_n shift_left
shift_right_arithmetic shift_right_logical sign sin sinh sqrt square stop_gradient sub tan tanh
xor zeta genvi_tag
""".split()

RULES: dict[str, Rule] = {name: _elementwise for name in _ELEMENTWISE}
RULES.update({
    "reduce_sum": _reduce, "reduce_max": _reduce, "reduce_min": _reduce, "reduce_prod": _reduce,
    "reduce_and": _reduce, "reduce_or": _reduce, "reduce_xor": _reduce, "argmax": _reduce,
    "argmin": _reduce,
    "cumsum": _along("axis"), "cumprod": _along("axis"), "cummax": _along("axis"),
    "cummin": _along("axis"), "cumlogsumexp": _along("axis"), "sort": _along("dimension"),
    "split": _along("axis"),
    "broadcast_in_dim": _broadcast_in_dim, "reshape": _reshape, "squeeze": _squeeze,
    "transpose": _transpose, "dot_general": _dot_general, "slice": _slice,
    "dynamic_slice": _dynamic_slice, "dynamic_update_slice": _dynamic_update_slice, "pad": _pad,
    "rev": _rev, "concatenate": _concatenate, "gather": _gather,
    "jit": _call("jaxpr"), "pjit": _call("jaxpr"), "closed_call": _call("call_jaxpr"),
    "remat": _call("jaxpr"), "checkpoint": _call("jaxpr"),
    "custom_jvp_call": _call("call_jaxpr"), "custom_vjp_call": _call("call_jaxpr"),
    "custom_vjp_call_jaxpr": _call("fun_jaxpr"),
})


def eqn_deps(name: str, params: dict, ins: Shapes, outs: Shapes, deps: list[Deps]) -> list[Deps]:
    """Output dependencies of one primitive application."""
    if not any(deps):
        return [{} for _ in outs]
    return RULES.get(name, _union)(params, ins, outs, deps)


def jaxpr_deps(jaxpr: jcore.Jaxpr, in_deps: list[Deps]) -> list[Deps]:
    """Propagate dependencies through a site-free jaxpr."""
    env: dict[Any, Deps] = {v: d for v, d in zip(jaxpr.invars, in_deps)}

    def read(x):
        return {} if isinstance(x, jcore.Literal) else env.get(x, {})

    for eqn in jaxpr.eqns:
        outs = eqn_deps(eqn.primitive.name, eqn.params,
                        [tuple(getattr(x.aval, "shape", ())) for x in eqn.invars],
                        [tuple(getattr(x.aval, "shape", ())) for x in eqn.outvars],
                        [read(x) for x in eqn.invars])
        for var, d in zip(eqn.outvars, outs):
            env[var] = d
    return [read(x) for x in jaxpr.outvars]


# --- the analysis of a program ----------------------------------------------------------------

_FN_RULES: dict[str, Rule] = {
    "select": _elementwise,
    "same": lambda params, ins, outs, deps: [deps[0]],
    "index0": lambda params, ins, outs, deps: [remap(deps[0], lambda a: None if a == 0 else a - 1)],
    "stack0": lambda params, ins, outs, deps: [merge(*[remap(d, lambda a: a + 1) for d in deps])],
}


@dataclasses.dataclass
class Term:
    """One additive term of the output: `factor * sum(atom)`; `factors` are applied in order."""

    atom: V | C
    factors: list[tuple[str, Any]]
    origin: str


class Analysis:
    """Dependencies, alignments and the additive decomposition of a `Program`."""

    def __init__(self, program: Program):
        self.program = program
        self.rank: dict[int, int] = {}  # site id -> number of element axes
        self.deps: dict[V, Deps] = {}
        self._forward(program)
        self.producer = {v: n for n in program.nodes if n.kind == "prim" for v in n.outs}
        self.densities = {n.outs[1]: n.site.address for n in program.nodes if n.kind == "site"}
        (out,) = program.outvars
        self.terms: dict[str, Term] = {}
        for j, term in enumerate(self._decompose(out, [])):
            self.terms[f"t{j}"] = term
        self.extra: dict[str, Deps] = {}  # terms that estimators add (baselines)

    def of(self, atom: V | C) -> Deps:
        return {} if isinstance(atom, C) else self.deps.get(atom, {})

    def term_deps(self, key: str) -> Deps:
        if key in self.terms:
            return self.of(self.terms[key].atom)
        return self.extra[key]

    def _forward(self, program: Program) -> None:
        for node in program.nodes:
            ins = [self.of(a) for a in node.ins]
            shapes_in = [a.shape for a in node.ins]
            shapes_out = [o.shape for o in node.outs]
            if node.kind == "prim":
                outs = eqn_deps(node.prim.name, node.params, shapes_in, shapes_out, ins)
            elif node.kind == "fn":
                outs = _FN_RULES[node.align]({}, shapes_in, shapes_out, ins) if any(ins) else [{} for _ in node.outs]
            elif node.kind == "site":  # the value and its log density: the same dependencies
                outs = [self._site(node, ins)] * 2
            else:  # scan with sites drawn inside: every output depends on all of them, jointly
                inner = {s.sid: () for s in node.body.sites()}
                for sid in inner:
                    self.rank[sid] = 0
                merged = {**full(merge(*ins)), **inner}
                outs = [merged for _ in node.outs]
            for var, d in zip(node.outs, outs):
                self.deps[var] = d

    def _site(self, node: Node, ins: list[Deps]) -> Deps:
        spec = node.site
        rank = len(spec.levels) + len(placeholder(spec).batch_shape)
        self.rank[node.sid] = rank
        parts = []
        for i, d in enumerate(ins[: spec.n_leaves]):
            positions = [lvl for lvl, (_, flags) in enumerate(spec.levels) if flags[i]]
            parts.append(remap(d, lambda a, positions=positions: positions[a] if a < len(positions) else None))
        deps = merge(*parts)
        deps[node.sid] = tuple(range(rank))
        return deps

    def _decompose(self, atom: V | C, factors: list) -> list[Term]:
        node = self.producer.get(atom) if isinstance(atom, V) else None
        if node is None:
            origin = "input" if isinstance(atom, V) else "constant"
            if isinstance(atom, V) and atom in self.densities:
                origin = f"the log density of site {self.densities[atom]!r}"
            return [Term(atom, factors, origin)]
        name, ins = node.prim.name, node.ins
        same = all(a.shape == atom.shape for a in ins)
        floating = jnp.issubdtype(atom.dtype, jnp.floating)
        if name in ("add", "add_any") and same:
            return self._decompose(ins[0], factors) + self._decompose(ins[1], factors)
        if name in ("add", "add_any", "sub") and len(ins) == 2:
            # `0 + x` (Python's `sum(...)` starts at 0; under vmap the literal stays a scalar):
            # the zero adds nothing, so descend into `x` instead of keeping an opaque term that
            # has lost the alignment of every plate and particle axis reduced inside it
            for z in (0, 1):
                if _is_zero(ins[z]) and ins[1 - z].shape == atom.shape:
                    negate = [("neg", None)] if name == "sub" and z == 0 else []
                    return self._decompose(ins[1 - z], factors + negate)
        if name == "sub" and same:
            return self._decompose(ins[0], factors) + self._decompose(ins[1], factors + [("neg", None)])
        if name == "neg":
            return self._decompose(ins[0], factors + [("neg", None)])
        if name == "reduce_sum" or (name in ("reshape", "squeeze", "transpose", "copy", "copy_p", "genvi_tag")
                                    and len(ins) == 1):
            return self._decompose(ins[0], factors)
        if name == "convert_element_type" and floating and jnp.issubdtype(_dtype(ins[0]), jnp.floating):
            return self._decompose(ins[0], factors)
        if name in ("mul", "div") and len(ins) == 2:
            scalars = [i for i, a in enumerate(ins) if a.shape == () and not self.of(a)]
            other = [i for i, a in enumerate(ins) if a.shape == atom.shape]
            for s in scalars:
                o = 1 - s
                if o in other and (name == "mul" or s == 1):
                    return self._decompose(ins[o], factors + [(name, ins[s])])
        return [Term(atom, factors, name)]


def _is_zero(atom: V | C) -> bool:
    """A scalar literal zero (the start of Python's `sum`)."""
    if not isinstance(atom, C) or atom.shape != ():
        return False
    try:
        return bool(atom.value == 0)
    except Exception:  # noqa: BLE001 - a constant that is not a plain number
        return False


def _dtype(atom: V | C) -> Any:
    return atom.dtype if isinstance(atom, V) else jnp.result_type(atom.value)
