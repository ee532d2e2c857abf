"""`fit`: maximise an objective program with an optax optimiser, in compiled chunks of steps.

Each chunk is one `jax.jit`-compiled `lax.scan` over steps, so Python dispatch happens once per
chunk; the progress bar, callbacks and checkpoints run between chunks. Every step is a pure
function of the carry (parameters, optimiser state, estimator states, key, minibatch order,
step), so results do not depend on chunking and a resumed run repeats a straight one bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import _checkpoint, _plates
from ._errors import ConfigError, FitError, ShapeError
from ._expectation import Expectation
from ._primitive import probing
from ._progress import Progress


@dataclasses.dataclass
class FitResult:
    """What `fit` returns.

    - `params`: the trained parameters (same structure as given).
    - `losses`: per-step `-objective` estimates, a NumPy array of length `steps`.
    - `opt_state`, `state` (estimator states, e.g. running baselines), `key`: to continue.
    - `steps`: steps done; `skipped`: non-finite steps skipped (`on_nonfinite="skip"`).
    - `interrupted`: whether a `KeyboardInterrupt` or a callback stopped training early.
    """

    params: Any
    losses: np.ndarray
    opt_state: Any
    key: jax.Array
    steps: int
    state: dict
    skipped: int = 0
    interrupted: bool = False


class FitContext(NamedTuple):
    """What a [`Strategy`][] sees between chunks."""

    objective: Expectation
    data: tuple
    batch_size: int | None
    key: jax.Array  # fresh for this update (derived from fit's key and the step)
    optimizer: optax.GradientTransformation

    def grad(self, params: Any, key: jax.Array | None = None) -> Any:
        """An unbiased estimate of the objective's gradient at `params` on a random minibatch
        (scaled by N/B, as in training); `None` for non-trainable leaves."""
        key = self.key if key is None else key
        n = _data_size(self.data)
        k_batch, k_est = jax.random.split(key)
        if self.batch_size is None:
            return self.objective.grad_estimate(k_est, params, *self.data)
        index = jax.random.permutation(k_batch, n)[: self.batch_size]
        batch = jax.tree.map(lambda d: d[index], self.data)
        with _plates.subsampling(n, self.batch_size):
            return self.objective.grad_estimate(k_est, params, *batch)


class Strategy(eqx.Module):
    """A training strategy run by `fit` every `every` steps, between compiled chunks: it may
    replace the parameters and optimiser state (pruning and regrowing a sparse support, say).

    Subclasses define `every` and `update(step, params, opt_state, context) -> (params, opt_state)`;
    `update` must be deterministic given its arguments, so resumed runs stay bit-identical.
    """

    every: eqx.AbstractVar[int]

    def update(self, step: int, params: Any, opt_state: Any, context: FitContext) -> tuple[Any, Any]:
        raise NotImplementedError


class _Carry(NamedTuple):
    params: Any
    opt_state: Any
    key: jax.Array
    state: dict
    perm: jax.Array
    pos: jax.Array
    step: jax.Array
    skipped: jax.Array
    bad: jax.Array  # step of the first non-finite update (raise mode), or -1


class FitNonFinite(FitError):
    """Training met a NaN or inf; `.step`, `.site` and `.params` (the last finite ones) say more."""

    def __init__(self, message: str, step: int, site: str | None, params: Any):
        super().__init__(message)
        self.step, self.site, self.params = step, site, params


def _data_size(data: tuple) -> int:
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree.leaves(data)}
    if None in sizes:
        raise ShapeError("fit: every data array needs a leading data axis; got a scalar")
    if len(sizes) > 1:
        raise ShapeError(f"fit: data arrays disagree on their leading (data) axis: sizes {sorted(sizes)}")
    return sizes.pop() if sizes else 0


def _draw(carry: _Carry, data: tuple, batch_size: int | None, n: int):
    """The step's minibatch and estimator key, and the carry's next key and minibatch order."""
    key, k_perm, k_est = jax.random.split(carry.key, 3)
    if batch_size is None:
        return data, k_est, key, carry.perm, carry.pos
    reshuffle = carry.pos + batch_size > n
    perm = jax.lax.cond(reshuffle, lambda: jax.random.permutation(k_perm, n), lambda: carry.perm)
    pos = jnp.where(reshuffle, 0, carry.pos)
    index = jax.lax.dynamic_slice_in_dim(perm, pos, batch_size)
    return jax.tree.map(lambda d: d[index], data), k_est, key, perm, pos + batch_size


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _step_fn(objective: Expectation, optimizer: optax.GradientTransformation, static: Any,
             batch_size: int | None, n: int, skip: bool) -> Callable:
    def step(carry: _Carry, data: tuple, num_steps: jax.Array):
        active = (carry.step < num_steps) & (carry.bad < 0)
        batch, k_est, key, perm, pos = _draw(carry, data, batch_size, n)
        params = eqx.combine(carry.params, static)
        with _plates.subsampling(n, batch_size) if batch_size else _nullcontext() as ctx:
            (value, grads), state = objective.value_and_grad_estimate(k_est, params, *batch, state=carry.state)
        if batch_size is not None and batch_size < n and not ctx.used:
            raise ConfigError(
                f"fit(batch_size={batch_size}) draws minibatches of {batch_size} of the data's {n} rows, "
                "but no named plate of that size appears in the objective, so nothing would be scaled "
                f"by N/B and the objective would be biased; map the data with "
                f"genvi.vmap(..., plate='data') (or declare size={n} on the plate)"
            )
        grads = jax.tree.map(jnp.negative, eqx.filter(grads, eqx.is_inexact_array))
        loss = -value
        finite = jnp.isfinite(loss) & _all_finite(grads)
        updates, opt_state = optimizer.update(grads, carry.opt_state, carry.params)
        new_params = optax.apply_updates(carry.params, updates)
        ok = active & finite
        advance = active if skip else ok  # in raise mode the failing step's key is kept for diagnosis
        pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(advance, a, b), new, old)  # noqa: E731
        bad = carry.bad if skip else jnp.where(active & ~finite, carry.step, carry.bad)
        new = _Carry(pick(new_params, carry.params), pick(opt_state, carry.opt_state), keep(key, carry.key),
                     pick(state, carry.state), keep(perm, carry.perm), keep(pos, carry.pos),
                     carry.step + advance.astype(carry.step.dtype),
                     carry.skipped + (active & ~finite & skip).astype(jnp.int32), bad)
        return new, (loss, advance)

    return step


class _nullcontext:
    used = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def _chunk_fn(step: Callable, length: int) -> Callable:
    @jax.jit
    def run(carry: _Carry, data: tuple, num_steps: jax.Array):
        return jax.lax.scan(lambda c, _: step(c, data, num_steps), carry, None, length=length)

    return run


def _strong(x: Any) -> Any:
    """`x` without JAX's weak type (a Python-scalar-born array), so carry types stay fixed."""
    if isinstance(x, jax.Array) and not jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jnp.array(x, dtype=x.dtype)
    return x


def _check_args(num_steps: int, batch_size: int | None, n: int, on_nonfinite: str,
                checkpoint_every: int | None, chunk_size: int | None) -> None:
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ConfigError(f"fit(num_steps={num_steps!r}): must be a positive integer")
    if batch_size is not None and (not isinstance(batch_size, int) or not 1 <= batch_size <= n):
        raise ConfigError(f"fit(batch_size={batch_size!r}): must be an integer in [1, {n}] (the data's rows)")
    if on_nonfinite not in ("raise", "skip"):
        raise ConfigError(f"fit(on_nonfinite={on_nonfinite!r}): use 'raise' or 'skip'")
    for name, value in (("checkpoint_every", checkpoint_every), ("chunk_size", chunk_size)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"fit({name}={value!r}): must be a positive integer")


def _check_finite_start(params: Any) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(eqx.filter(params, eqx.is_inexact_array))[0]:
        if not bool(jnp.all(jnp.isfinite(leaf))):
            raise FitError(f"fit: parameter {jax.tree_util.keystr(path) or 'params'} is not finite at the start")


def fit(objective: Expectation, params: Any, *data: Any, optimizer: optax.GradientTransformation | None = None,
        num_steps: int, key: jax.Array | int, batch_size: int | None = None, progress: bool = True,
        callbacks: Sequence[Callable[[int, Any, np.ndarray], bool | None]] = (),
        checkpoint: str | os.PathLike | None = None, checkpoint_every: int | None = None,
        resume: bool = False, on_nonfinite: str = "raise", chunk_size: int | None = None,
        strategy: Strategy | None = None) -> FitResult:
    """Maximise `objective(params, *data)` by stochastic gradient ascent.

    **Arguments:**

    - `objective`: an `@expectation` program (e.g. `objectives.elbo(model, guide)`).
    - `params`: the initial parameters, any pytree (equinox modules included); floating-point
      array leaves are trained.
    - `*data`: arrays sharing a leading data axis, passed to the objective after `params`.
    - `optimizer`: an optax transformation (default `optax.adam(1e-3)`).
    - `num_steps`: the total number of steps (a resumed run continues up to it).
    - `key`: an int or a PRNG key; the same key gives the same result.
    - `batch_size`: draw minibatches of this many rows (reshuffled each epoch, on device); the
      objective's named plate over the data is scaled by N/B so it stays unbiased.
    - `progress`: a tqdm bar (terminal or Jupyter), or a log line every 10% otherwise.
    - `callbacks`: `cb(step, params, losses)` after each chunk; return `True` to stop.
    - `checkpoint`, `checkpoint_every`, `resume`: an `.npz` path written atomically every
      `checkpoint_every` steps and at the end; `resume=True` continues from it bit for bit. An
      existing checkpoint is never overwritten unless `resume=True`.
    - `on_nonfinite`: `"raise"` stops with a `FitError` naming the step and the first site (or
      parameter gradient) that became NaN/inf, keeping the last finite parameters in `err.params`;
      `"skip"` skips such updates and counts them.
    - `chunk_size`: steps per compiled chunk (default: up to 100).
    - `strategy`: a [`Strategy`][] run every `strategy.every` steps between chunks (e.g. SSVI's
      prune-and-regrow), which may replace parameters and optimiser state.

    **Returns:** a [`FitResult`][].
    """
    if not isinstance(objective, Expectation):
        raise ConfigError(f"fit: objective must be an @expectation program, got {type(objective).__name__}")
    n = _data_size(data)
    _check_args(num_steps, batch_size, n, on_nonfinite, checkpoint_every, chunk_size)
    _check_finite_start(params)
    optimizer = optimizer if optimizer is not None else optax.adam(1e-3)
    key = jax.random.PRNGKey(key) if isinstance(key, int) else key
    dynamic, static = eqx.partition(params, eqx.is_inexact_array)
    chunk = chunk_size or min(num_steps, 100)
    for every in (checkpoint_every, strategy.every if strategy is not None else None):
        if every is not None:
            chunk = math.gcd(chunk, every)
    path = pathlib.Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists() and not resume:
        raise FitError(f"checkpoint {str(path)!r} already exists; pass resume=True to continue from it, "
                       "or remove it to start afresh (genvi never overwrites it silently)")

    first_batch = jax.tree.map(lambda d: d[:batch_size], data) if batch_size else data
    with _plates.subsampling(n, batch_size) if batch_size else _nullcontext():
        state = objective.init_state(params, *first_batch)
    carry = _Carry(dynamic, optimizer.init(dynamic), key, state, jnp.arange(max(n, 1)), jnp.array(n, jnp.int32),
                   jnp.array(0, jnp.int32), jnp.array(0, jnp.int32), jnp.array(-1, jnp.int32))
    carry = jax.tree.map(_strong, carry)  # weak types would change after one step and recompile
    history: list[np.ndarray] = []
    if path is not None and resume and path.exists():
        carry, losses, _ = _checkpoint.load(path, carry)
        history.append(np.asarray(losses))

    run = _chunk_fn(_step_fn(objective, optimizer, static, batch_size, n, on_nonfinite == "skip"), chunk)
    meta = {"num_steps": num_steps}
    bar = Progress(num_steps, int(carry.step), progress)
    interrupted = False
    try:
        while int(carry.step) < num_steps:
            previous = int(carry.step)
            carry, (losses, done) = run(carry, data, jnp.array(num_steps, jnp.int32))
            history.append(np.asarray(losses)[np.asarray(done)])
            step = int(carry.step)
            if int(carry.bad) >= 0:
                raise _nonfinite(objective, optimizer, static, batch_size, n, carry, data)
            if strategy is not None and step < num_steps and step // strategy.every > previous // strategy.every:
                context = FitContext(objective, data, batch_size, jax.random.fold_in(key, step), optimizer)
                new_params, opt_state = strategy.update(step, eqx.combine(carry.params, static), carry.opt_state, context)
                carry = carry._replace(params=jax.tree.map(_strong, eqx.filter(new_params, eqx.is_inexact_array)),
                                       opt_state=jax.tree.map(_strong, opt_state))
            last = float(history[-1][-1]) if len(history[-1]) else float("nan")
            bar.update(step, last)
            if path is not None and (step >= num_steps or (checkpoint_every and step // checkpoint_every > previous // checkpoint_every)):
                _checkpoint.save(path, carry, np.concatenate(history), meta)
            if any(cb(step, eqx.combine(carry.params, static), np.concatenate(history)) for cb in callbacks):
                interrupted = True
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    return FitResult(params=eqx.combine(carry.params, static), losses=np.concatenate(history) if history else np.zeros(0),
                     opt_state=carry.opt_state, key=carry.key, steps=int(carry.step), state=carry.state,
                     skipped=int(carry.skipped), interrupted=interrupted)


def _nonfinite(objective, optimizer, static, batch_size, n, carry: _Carry, data) -> FitNonFinite:
    """Re-run the failing step eagerly and name the first non-finite site or gradient."""
    step = int(carry.bad)
    params = eqx.combine(carry.params, static)
    batch, k_est, *_ = _draw(carry, data, batch_size, n)
    site = None
    with jax.disable_jit(), probing() as bad_sites, \
            (_plates.subsampling(n, batch_size) if batch_size else _nullcontext()):
        (value, grads), _ = objective.value_and_grad_estimate(k_est, params, *batch, state=carry.state)
    if bad_sites:
        site = bad_sites[0]
        what = f"the log density of site {site!r} is not finite"
    else:
        leaves = jax.tree_util.tree_flatten_with_path(eqx.filter(grads, eqx.is_inexact_array))[0]
        bad = [jax.tree_util.keystr(p) for p, g in leaves if not bool(jnp.all(jnp.isfinite(g)))]
        what = (f"the gradient of parameter {bad[0] or 'params'} is not finite" if bad
                else f"the objective's value is {float(value)}")
    return FitNonFinite(
        f"fit stopped at step {step}: {what}. The parameters before that step are in err.params; "
        "lower the learning rate, check the data, or pass on_nonfinite='skip'",
        step, site, params)
