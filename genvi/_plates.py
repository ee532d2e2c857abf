"""Plate subsampling: the factor N/B by which a minibatch of a plate is scaled.

A plate (`genvi.vmap(..., plate=name)`) knows its full size either because the user declared it
(`size=N`) or because `genvi.vi.fit` draws minibatches of B rows from data with N rows and says
so here while it traces the objective. The scale keeps every objective an unbiased estimate of
its full-data value. The context lives only while Python traces the program (static integers,
no arrays), so nothing leaks across `jit`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

from ._errors import ShapeError


@dataclasses.dataclass
class _Subsample:
    full: int
    batch: int
    used: bool = False


_STACK: list[_Subsample] = []


@contextlib.contextmanager
def subsampling(full: int, batch: int) -> Iterator[_Subsample]:
    """While active, an undeclared plate of size `batch` is a minibatch of `full` rows."""
    ctx = _Subsample(full, batch)
    _STACK.append(ctx)
    try:
        yield ctx
    finally:
        _STACK.pop()


def active() -> bool:
    """Whether a subsampling context is active (trace-time information a jit cache cannot see)."""
    return bool(_STACK)


def scale(plate: str | None, declared: int | None, actual: int) -> float:
    """The factor for a plate element's log density: full size over the size traced."""
    if declared is not None:
        if declared < actual:
            raise ShapeError(
                f"plate {plate!r} declares size={declared} but is mapped over {actual} elements; "
                "the declared size is the full data size and cannot be smaller than a minibatch"
            )
        return declared / actual
    if plate is not None and _STACK and _STACK[-1].batch == actual:
        _STACK[-1].used = True
        return _STACK[-1].full / actual
    return 1.0
