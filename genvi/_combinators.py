"""Combinators: `genvi.vmap` (plates and particles) and `genvi.scan` (sequential steps).

Both build a generative function from another one. They never let a handler cross the JAX
transformation: each mapped element (or step) runs the inner body with a fresh handler made from
its slice of the handler's state, and the records come back as stacked outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from . import _handlers as H
from . import _mesh, _plates
from ._errors import ConfigError, GenviError, ShapeError
from ._gen import GenerativeFunction


def _axis_size(args: tuple, in_axes: tuple, axis_size: int | None, where: str) -> int:
    sizes = set()
    for arg, axis in zip(args, in_axes):
        if axis is None:
            continue
        for leaf in jax.tree.leaves(arg):
            if jnp.ndim(leaf) <= axis:
                raise ShapeError(f"{where}: an argument of shape {jnp.shape(leaf)} has no axis {axis} to map over")
            sizes.add(jnp.shape(leaf)[axis])
    if axis_size is not None:
        sizes.add(axis_size)
    if len(sizes) != 1:
        raise ShapeError(
            f"{where}: mapped arguments must agree on the axis size (and with axis_size), got sizes "
            f"{sorted(sizes)}" if sizes else f"{where}: nothing to map over; pass axis_size="
        )
    return sizes.pop()


def _normalise_axes(in_axes: Any, nargs: int) -> tuple:
    if isinstance(in_axes, (int, type(None))):
        return (in_axes,) * nargs
    in_axes = tuple(in_axes)
    if len(in_axes) != nargs:
        raise ConfigError(f"in_axes has {len(in_axes)} entries for {nargs} arguments")
    return in_axes


def _mapped(fn: Callable, in_axes: tuple, size: int) -> Callable:
    """`jax.vmap` that registers each element's index as a nonce, so sites draw independently."""

    def with_nonce(index, *args):
        with H.nonce(index):
            return fn(*args)

    def run(*args):
        return jax.vmap(with_nonce, in_axes=(0, *in_axes), axis_size=size)(jnp.arange(size), *args)

    return run


class Vmap(GenerativeFunction):
    """Independent copies of a generative function: a plate. Each site gains a leading axis."""

    gf: GenerativeFunction
    in_axes: Any = eqx.field(static=True)
    plate: str | None = eqx.field(static=True)
    size: int | None = eqx.field(static=True)
    axis_size: int | None = eqx.field(static=True)

    def _run(self, handler, args):
        in_axes = _normalise_axes(self.in_axes, len(args))
        where = f"genvi.vmap(plate={self.plate!r})"
        n = _axis_size(args, in_axes, self.axis_size, where)
        state = handler.split_state(n, where)
        box: dict[str, H.Handler] = {}

        def one(st, *elem_args):
            child = handler.spawn(st, handler.where)
            retval = self.gf._run(child, elem_args)
            box["child"] = child
            return retval, child.records()

        retval, (choices, logps, dists) = _mapped(one, (0, *in_axes), n)(state, *args)
        factor = _plates.scale(self.plate, self.size, n)
        if factor != 1.0:
            logps = jax.tree.map(lambda lp: lp * factor, logps)
        handler.absorb(box["child"], "", (choices, logps, dists), plate=(self.plate,), scale=factor)
        return retval


class Scan(GenerativeFunction):
    """A generative step function iterated like `jax.lax.scan`; per-step sites are stacked.

    Called as `scanned(init, xs, *consts)`, the step is `step(carry, x, *consts) -> (carry, y)`.
    """

    gf: GenerativeFunction
    length: int | None = eqx.field(static=True)
    reverse: bool = eqx.field(static=True)

    def _run(self, handler, args):
        if len(args) < 2:
            raise GenviError("genvi.scan: call as scanned(init, xs, *consts); use xs=None with length=")
        init, xs, *consts = args
        lengths = {jnp.shape(leaf)[0] for leaf in jax.tree.leaves(xs)}
        if self.length is not None:
            lengths.add(self.length)
        if len(lengths) != 1:
            raise ShapeError(f"genvi.scan: xs and length disagree on the number of steps: {sorted(lengths)}")
        n = lengths.pop()
        state = handler.split_state(n, "genvi.scan")
        box: dict[str, H.Handler] = {}

        def body(carry, inputs):
            st, x = inputs
            child = handler.spawn(st, handler.where)
            out = self.gf._run(child, (carry, x, *consts))
            if not (isinstance(out, tuple) and len(out) == 2):
                raise GenviError("genvi.scan: the step function must return (carry, y)")
            box["child"] = child
            return out[0], (out[1], child.records())

        carry, (ys, records) = lax.scan(body, init, (state, xs), length=n, reverse=self.reverse)
        handler.absorb(box["child"], "", records, plate=(None,))
        return carry, ys


def vmap(f: Any, in_axes: Any = 0, *, plate: str | None = None, size: int | None = None,
         axis_size: int | None = None) -> Any:
    """Vectorise a generative function (a plate) or an objective-program function (particles).

    **Arguments:**

    - `f`: a generative function, or a plain function that calls `sim` (e.g. one particle).
    - `in_axes`: as in `jax.vmap`.
    - `plate`: the plate's name. A named plate of a generative function is what `fit`'s
      minibatching scales by N/B.
    - `size`: the plate's full size when the data passed in are a minibatch of it.
    - `axis_size`: the number of copies when no argument is mapped (particles).

    Unlike `jax.vmap`, every copy draws its sites independently even when no distribution
    parameter varies along the mapped axis.
    """
    if isinstance(f, GenerativeFunction):
        return Vmap(f, in_axes, plate, size, axis_size)
    if plate is not None or size is not None:
        raise ConfigError("genvi.vmap: plate= and size= apply to generative functions only")

    def mapped(*args):
        axes = _normalise_axes(in_axes, len(args))
        n = _axis_size(args, axes, axis_size, "genvi.vmap")
        return _mesh.constrain_particles(_mapped(f, axes, n)(*args), n)

    return mapped


def scan(step: GenerativeFunction, *, length: int | None = None, reverse: bool = False) -> Scan:
    """Iterate a generative step function `step(carry, x, *consts) -> (carry, y)` (see [`Scan`][])."""
    if not isinstance(step, GenerativeFunction):
        raise GenviError("genvi.scan expects a generative function (decorate the step with @gen)")
    return Scan(step, length, reverse)
