"""Run NumPyro models and guides as genvi generative functions.

`from_numpyro(fn)` runs `fn` under a NumPyro messenger that hands every message to genvi:

- `numpyro.sample` becomes a genvi site (observed when it has `obs=`), so genvi's handlers,
  estimators and objectives apply unchanged; the estimator can be chosen with
  `infer={"genvi_estimator": ...}`;
- `numpyro.param("loc", init, constraint=...)` reads `params["loc"]`, stored unconstrained, and
  maps it through `biject_to(constraint)` as NumPyro's SVI does; `init_params` collects them;
- `numpyro.plate(name, size, subsample_size=b)` draws its indices as a genvi choice at
  `"<name>_subsample"` (uniform over subsets, constant density), so a model scored with a guide's
  choices reuses the guide's indices, and sites inside are scaled by `size / b`;
- `numpyro.deterministic` passes its value through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as nd
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to
from numpyro.primitives import Messenger

from . import _handlers as H
from ._errors import AddressError, GenviError
from ._gen import GenerativeFunction


class UniformSubset(nd.Distribution):
    """`subsample_size` distinct indices out of `size`, uniformly; its log density is constant
    (taken as 0: it cancels between model and guide, and has no parameters to learn)."""

    pytree_aux_fields = ("size", "subsample_size")
    support = constraints.integer_interval(0, 1 << 30)

    def __init__(self, size: int, subsample_size: int):
        self.size, self.subsample_size = size, subsample_size
        super().__init__(batch_shape=(), event_shape=(subsample_size,))

    def sample(self, key, sample_shape=()):
        draw = lambda k: jax.random.permutation(k, self.size)[: self.subsample_size]  # noqa: E731
        if not sample_shape:
            return draw(key)
        keys = jax.random.split(key, int(jnp.prod(jnp.array(sample_shape))))
        return jax.vmap(draw)(keys).reshape(*sample_shape, self.subsample_size)

    def log_prob(self, value):
        return jnp.zeros(jnp.shape(value)[:-1])


class _Bridge(Messenger):
    def __init__(self, handler: H.Handler, params: dict[str, Any]):
        super().__init__()
        self.handler, self.params = handler, params

    def process_message(self, msg: dict) -> None:
        kind = msg["type"]
        if kind == "sample":
            obs = msg["value"] if msg["is_observed"] else None
            scale = msg.get("scale") or 1.0
            estimator = (msg.get("infer") or {}).get("genvi_estimator")
            msg["value"] = self.handler.site(_address(msg["name"]), msg["fn"], obs, estimator, scale)
            msg["stop"] = True
        elif kind == "param":
            msg["value"] = self._param(msg)
            msg["stop"] = True
        elif kind == "plate":
            size, subsample_size = msg["args"]
            if msg["value"] is None:
                if subsample_size is not None and subsample_size < size:
                    msg["value"] = self.handler.site(f"{_address(msg['name'])}_subsample",
                                                     UniformSubset(size, subsample_size), None, None)
                else:
                    msg["value"] = jnp.arange(size)
            msg["stop"] = True

    def _param(self, msg: dict) -> jax.Array:
        name = msg["name"]
        if name not in self.params:
            raise AddressError(
                f"numpyro.param {name!r} has no value in the params given ({sorted(self.params)}); "
                "start from gf.init_params(key, *args)"
            )
        constraint = msg["kwargs"].get("constraint", constraints.real)
        return biject_to(constraint)(self.params[name])


def _address(name: str) -> str:
    return name.replace("/", ".")


class NumPyroFunction(GenerativeFunction):
    """A NumPyro model or guide as a genvi generative function, called as `gf(params, *args)`."""

    fn: Callable = eqx.field(static=True)

    def _run(self, handler, args):
        if not args:
            raise GenviError("a NumPyro generative function is called as gf(params, *args); params may be {}")
        params, *rest = args
        params = params if params is not None else {}
        with _Bridge(handler, params):
            return self.fn(*rest)

    def init_params(self, key: jax.Array | int, *args: Any, **kwargs: Any) -> dict[str, jax.Array]:
        """The initial values of every `numpyro.param`, unconstrained (as `params` expects them)."""
        key = jax.random.PRNGKey(key) if isinstance(key, int) else key
        trace = numpyro.handlers.trace(numpyro.handlers.seed(self.fn, key)).get_trace(*args, **kwargs)
        return {name: jnp.asarray(biject_to(site["kwargs"].get("constraint", constraints.real)).inv(site["value"]), float)
                for name, site in trace.items() if site["type"] == "param"}


def from_numpyro(fn: Callable) -> NumPyroFunction:
    """Turn a NumPyro model or guide function into a genvi generative function (see module doc)."""
    return NumPyroFunction(fn)
