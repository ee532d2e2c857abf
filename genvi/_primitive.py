"""The ``sample`` primitive: a random choice left in a jaxpr for the transformation to rewrite.

Inside an `@expectation` program, `gf.sim(...)` binds one `sample_p` per latent site. It returns
the site's value and that value's element-shaped log density: the estimator draws both together,
so the program's `log q` reuses what the draw computed (see `_draw.py`). Its operands
are the distribution's leaves (and one "nonce" per enclosing `genvi.vmap`, which only exists so
that the batching rule runs and each mapped element draws independently); its parameter
[`SiteSpec`][] holds the address, the distribution's tree structure, the estimator chosen at the
site and the vectorisation levels. The primitive has no implementation of its own: the
transformation in `_adev.py` replaces it by its estimator's rule. Evaluating it anywhere else
raises an error that says so.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

from ._errors import GenviError


@dataclasses.dataclass(frozen=True)
class SiteSpec:
    """Static description of a sample site in a jaxpr.

    - `address`: the full hierarchical address.
    - `treedef`: the tree structure of the distribution (its leaves are the operands).
    - `n_leaves`: how many operands are distribution leaves (the rest are vmap nonces).
    - `estimator`: the estimator named at the site, or `None` for the default.
    - `levels`: one entry per enclosing vmap, outermost first: `(size, batched)` where `batched`
      says for each leaf whether it carries that level's axis (leading, in level order).
    - `aval`: shape and dtype of one draw of the unbatched distribution.
    - `density`: shape (the batch shape) and dtype of that draw's log density.
    """

    address: str
    treedef: Any
    n_leaves: int
    estimator: Any
    levels: tuple[tuple[int, tuple[bool, ...]], ...]
    aval: jax.ShapeDtypeStruct
    density: jax.ShapeDtypeStruct

    def __hash__(self) -> int:  # ShapeDtypeStruct hashes by value; estimators by their fields.
        return hash((self.address, self.treedef, self.n_leaves, self.estimator, self.levels,
                     self.aval.shape, str(self.aval.dtype), self.density.shape, str(self.density.dtype)))


sample_p = Primitive("genvi_sample")
sample_p.multiple_results = True


def _abstract_eval(*operands, site: SiteSpec):
    del operands
    levels = tuple(size for size, _ in site.levels)
    return [jax.core.ShapedArray(levels + tuple(site.aval.shape), site.aval.dtype),
            jax.core.ShapedArray(levels + tuple(site.density.shape), site.density.dtype)]


def _outside(*args, site: SiteSpec, **kwargs):
    raise GenviError(
        f"site {site.address!r}: `sim` draws through the estimator transformation and runs only "
        "inside an @expectation program (estimate / grad_estimate / an objective); "
        "outside one, use `simulate(key, ...)`"
    )


def _batch(args, dims, *, site: SiteSpec):
    sizes = {a.shape[d] for a, d in zip(args, dims) if d is not None}
    (size,) = sizes
    moved = [a if d is None else jnp.moveaxis(a, d, 0) for a, d in zip(args, dims)]
    flags = tuple(d is not None for d in dims[: site.n_leaves])
    new = dataclasses.replace(site, levels=((size, flags),) + site.levels)
    return sample_p.bind(*moved, site=new), [0, 0]


def _no_jvp(primals, tangents, *, site: SiteSpec):
    raise GenviError(
        f"site {site.address!r}: a program containing `sim` cannot be differentiated with jax.grad "
        "directly; use the @expectation methods grad_estimate / value_and_grad_estimate, which "
        "apply each site's gradient estimator"
    )


sample_p.def_abstract_eval(_abstract_eval)
sample_p.def_impl(_outside)
batching.primitive_batchers[sample_p] = _batch
ad.primitive_jvps[sample_p] = _no_jvp
mlir.register_lowering(sample_p, _outside)


# --- tag_p: an identity that names a site's log density --------------------------------------
#
# Handlers wrap every site's log density in `tag(value, address)`. It compiles to nothing; its
# only use is diagnosis: when `fit` meets a non-finite loss it re-runs the failing step eagerly
# under `probing()`, and the first tagged value that is not finite names the site at fault.

tag_p = Primitive("genvi_tag")
_PROBE: list[list[str]] = []


def tag(value: jax.Array, address: str) -> jax.Array:
    """Mark `value` as the log density of site `address` (an identity)."""
    return tag_p.bind(value, address=address)


def _tag_impl(value, *, address):
    if _PROBE and not _PROBE[-1]:
        if not bool(jnp.all(jnp.isfinite(value))):
            _PROBE[-1].append(address)
    return value


class probing:
    """Context: eager evaluation records the first site whose tagged log density is not finite."""

    def __enter__(self) -> list[str]:
        _PROBE.append([])
        return _PROBE[-1]

    def __exit__(self, *exc) -> None:
        _PROBE.pop()


tag_p.def_impl(_tag_impl)
tag_p.def_abstract_eval(lambda value, *, address: jax.core.ShapedArray(value.shape, value.dtype))
batching.primitive_batchers[tag_p] = lambda args, dims, *, address: (tag(args[0], address), dims[0])
ad.deflinear2(tag_p, lambda ct, value, *, address: [ct])
mlir.register_lowering(tag_p, lambda ctx, value, *, address: [value])
