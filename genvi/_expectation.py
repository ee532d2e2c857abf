"""`@expectation`: an objective written as a program, with unbiased value and gradient estimates.

An expectation program is a function of parameters and data that samples with `gf.sim(...)` and
returns a scalar; it denotes `E[f(params)]` over every site sampled inside it. Its methods
evaluate it through the transformation (`_adev.py`), which applies each site's estimator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax

from . import _adev, _plates
from ._errors import ConfigError, EstimatorError
from ._site import Estimator

DEFAULT_MAX_BRANCHES = 1 << 20


def _key(key: jax.Array | int) -> jax.Array:
    return jax.random.PRNGKey(key) if isinstance(key, int) else key


class Expectation(eqx.Module):
    """An objective program and its estimator choices (see [`genvi.expectation`][]).

    **Methods** (all compiled with `eqx.filter_jit`):

    - `estimate(key, *args)`: an unbiased estimate of `E[f]`.
    - `grad_estimate(key, *args, argnums=0)`: an unbiased estimate of its gradient with respect
      to `args[argnums]` (floating-point array leaves; other leaves get `None`).
    - `value_and_grad_estimate(key, *args, argnums=0)`: both in one pass; the value equals
      `estimate` for the same key.

    Programs whose estimators keep state between steps (a running-mean baseline) take
    `state=` (from `init_state(*args)`) and then return `(result, new_state)`.
    """

    fn: Callable = eqx.field(static=True)
    overrides: tuple[tuple[str, Estimator], ...] = eqx.field(static=True, default=())
    max_branches: int = eqx.field(static=True, default=DEFAULT_MAX_BRANCHES)
    policy: Callable | None = eqx.field(static=True, default=None)

    @property
    def __name__(self) -> str:
        return getattr(self.fn, "__name__", "expectation")

    def with_estimators(self, estimators: Mapping[str, Estimator]) -> "Expectation":
        """The same program with the estimators of the named addresses overridden."""
        for address, est in estimators.items():
            if not isinstance(est, Estimator):
                raise EstimatorError(f"address {address!r}: expected a genvi estimator, got {est!r}")
        merged = {**dict(self.overrides), **dict(estimators)}
        return Expectation(self.fn, tuple(sorted(merged.items())), self.max_branches, self.policy)

    def init_state(self, *args: Any) -> dict[str, Any]:
        """Initial states of the stateful estimators in the program, keyed by address."""
        return _adev.stateful_sites(self.fn, args, dict(self.overrides), self.policy)

    def estimate(self, key: jax.Array | int, *args: Any, state: dict | None = None) -> Any:
        value, new_state = _compiled(_estimate)(self, _key(key), args, state)
        return value if state is None else (value, new_state)

    def grad_estimate(self, key: jax.Array | int, *args: Any, argnums: int | tuple[int, ...] = 0,
                      state: dict | None = None) -> Any:
        (_, grads), new_state = _compiled(_value_and_grad)(self, _key(key), args, argnums, state)
        return grads if state is None else (grads, new_state)

    def value_and_grad_estimate(self, key: jax.Array | int, *args: Any,
                                argnums: int | tuple[int, ...] = 0, state: dict | None = None) -> Any:
        result, new_state = _compiled(_value_and_grad)(self, _key(key), args, argnums, state)
        return result if state is None else (result, new_state)

    def _evaluate(self, key: jax.Array, args: tuple, state: dict | None):
        value, surrogate, new_state = _adev.evaluate(
            self.fn, args, key=key, overrides=dict(self.overrides), states=state,
            max_branches=self.max_branches, policy=self.policy)
        if state is None and new_state:
            raise EstimatorError(
                f"sites {sorted(new_state)} use estimators that keep state between steps (a "
                "running-mean baseline); pass state=objective.init_state(*args) and carry the "
                "returned state, or train with genvi.vi.fit, which does so"
            )
        return value, surrogate, new_state


def _compiled(fn: Callable) -> Callable:
    """`fn` compiled with `eqx.filter_jit`, unless a plate-subsampling context is active: its
    scale factors are trace-time constants that the jit cache cannot see, so it is traced afresh
    (inside `fit`, which compiles the whole step anyway)."""
    return fn if _plates.active() else _JITTED[fn]


def _estimate(ex: Expectation, key, args, state):
    value, _, new_state = ex._evaluate(key, args, state)
    return value, new_state


def _value_and_grad(ex: Expectation, key, args, argnums, state):
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    for n in nums:
        if not isinstance(n, int) or not -len(args) <= n < len(args):
            raise ConfigError(f"argnums={argnums!r} does not index the program's {len(args)} arguments")
    chosen = tuple(args[n] for n in nums)
    diff, nondiff = eqx.partition(chosen, eqx.is_inexact_array)

    def surrogate(diff):
        merged = eqx.combine(diff, nondiff)
        full = list(args)
        for n, a in zip(nums, merged):
            full[n] = a
        value, sur, new_state = ex._evaluate(key, tuple(full), state)
        return sur, (value, new_state)

    (_, (value, new_state)), grads = jax.value_and_grad(surrogate, has_aux=True)(diff)
    grads = grads[0] if isinstance(argnums, int) else grads
    return (value, grads), new_state


_JITTED = {_estimate: eqx.filter_jit(_estimate), _value_and_grad: eqx.filter_jit(_value_and_grad)}


def expectation(fn: Callable | None = None, *, estimators: Mapping[str, Estimator] | None = None,
                max_branches: int = DEFAULT_MAX_BRANCHES, policy: Callable | None = None) -> Any:
    """Declare an objective program: `fn(*args)` samples with `gf.sim(...)` and returns a scalar.

    **Arguments:**

    - `fn`: the program.
    - `estimators`: estimator overrides by site address.
    - `max_branches`: the most times nested enumeration may evaluate the rest of the program.
    - `policy`: `policy(address, dist, chosen) -> Estimator | None`, called for every site with
      the estimator chosen for it (or `None`): objectives use it to pick their own default or to
      refuse a strategy they cannot use, with an `EstimatorError` naming the site.

    ```python
    @expectation
    def my_elbo(params, x):
        dec, enc = params
        tr = guide.sim(enc, x)
        return model.log_density(tr.choices, dec, x) - tr.log_density

    grads = my_elbo.grad_estimate(key, (dec, enc), x)
    ```
    """
    if fn is None:
        return lambda f: expectation(f, estimators=estimators, max_branches=max_branches, policy=policy)
    if isinstance(fn, Expectation):
        return fn
    ex = Expectation(fn, (), max_branches, policy)
    return ex.with_estimators(estimators) if estimators else ex
