"""The only place genvi touches JAX behaviour that is not plain documented API.

Re-binding a jaxpr equation is what every jaxpr interpreter does (`jax.core.eval_jaxpr` does the
same), but how a primitive turns its stored parameters into bind parameters changed between JAX
releases: older ones returned `(subfuns, params)`, 0.7+ return `params`. Both are handled here,
and `tests/test_jax_compat.py` fails loudly if a release changes it again.
"""

from __future__ import annotations

from typing import Any

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
