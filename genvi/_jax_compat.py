"""The only place genvi touches JAX behaviour that differs between the releases it supports.

Re-binding a jaxpr equation is what every jaxpr interpreter does (`jax.core.eval_jaxpr` does the
same), but how a primitive turns its stored parameters into bind parameters changed between JAX
releases: older ones returned `(subfuns, params)`, 0.7+ return `params`. `jax.extend.core`
gained `jaxprs_in_params` after 0.6. Both are handled here, and `tests/test_transform.py::test_jax_compat_bind_reproduces_eval_jaxpr` fails loudly if a release changes it again.
"""

from __future__ import annotations

from typing import Any

from collections.abc import Iterator

from jax.extend import core as jcore
from jax.extend.core import Primitive


def bind(primitive: Primitive, params: dict[str, Any], args: list[Any]) -> list[Any]:
    """Apply `primitive` with its jaxpr-equation `params` to `args`; always returns a list."""
    bind_params = primitive.get_bind_params(params)
    if isinstance(bind_params, tuple):  # JAX < 0.7: (subfuns, params)
        subfuns, bind_params = bind_params
        out = primitive.bind(*subfuns, *args, **bind_params)
    else:
        out = primitive.bind(*args, **bind_params)
    return list(out) if primitive.multiple_results else [out]


def jaxprs_in_params(params: dict[str, Any]) -> Iterator[jcore.Jaxpr]:
    """The sub-jaxprs an equation's parameters hold (a scan's body, a cond's branches, ...)."""
    public = getattr(jcore, "jaxprs_in_params", None)
    return public(params) if public is not None else walk_params(params)


def walk_params(params: dict[str, Any]) -> Iterator[jcore.Jaxpr]:
    """`jaxprs_in_params` for JAX 0.6, which lacks it: the same walk over the parameter values."""
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, jcore.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jcore.Jaxpr):
                yield item
