"""`fit`: maximise an objective program with an optax optimiser, in compiled chunks of steps.

Each chunk is one `jax.jit`-compiled `lax.scan` over steps, so Python dispatch happens once per
chunk; the progress bar, callbacks and checkpoints run between chunks. Every step is a pure
function of the carry (parameters, optimiser state, estimator states, key, minibatch order,
step), so results do not depend on chunking and a resumed run repeats a straight one bit for bit.
"""

from __future__ import annotations

import dataclasses
import functools
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
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from . import _checkpoint, _mesh, _plates
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
    `update` must be deterministic given its arguments, so resumed runs stay bit-identical. It may
    change any array leaf (integer ones, such as a support's indices, included: `fit` carries them
    untrained), not the pytree structure or shapes.
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
             batch_size: int | None, n: int, skip: bool, mesh: Mesh | None) -> Callable:
    def step(carry: _Carry, data: tuple, num_steps: jax.Array):
        active = (carry.step < num_steps) & (carry.bad < 0)
        batch, k_est, key, perm, pos = _draw(carry, data, batch_size, n)
        if mesh is not None:
            batch = _mesh.constrain_rows(batch, mesh)
        params = eqx.combine(carry.params, static)
        with _plates.subsampling(n, batch_size) if batch_size else _nullcontext() as ctx, _mesh.active(mesh):
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
        trainable, fixed = eqx.partition(carry.params, eqx.is_inexact_array)
        updates, opt_state = optimizer.update(grads, carry.opt_state, trainable)
        new_params = eqx.combine(optax.apply_updates(trainable, updates), fixed)
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


def _chunk_fn(step: Callable, length: int, mesh: Mesh | None) -> Callable:
    """One compiled chunk of `length` steps; on a mesh its outputs stay replicated."""
    out = None if mesh is None else _mesh.replicated(mesh)

    @functools.partial(jax.jit, out_shardings=out)
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
        strategy: Strategy | None = None, mesh: Mesh | str | None = None) -> FitResult:
    """Maximise `objective(params, *data)` by stochastic gradient ascent.

    **Arguments:**

    - `objective`: an `@expectation` program (e.g. `objectives.elbo(model, guide)`).
    - `params`: the initial parameters, any pytree (equinox modules included); floating-point
      array leaves are trained.
    - `*data`: arrays sharing a leading data axis, passed to the objective after `params`. In a
      multi-process run each process passes its own equal-sized shard.
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
    - `mesh`: `None` (one device), a `jax.sharding.Mesh` with a `"data"` axis (and optionally a
      `"particles"` axis), or `"auto"` (all devices on `"data"`): the minibatch is sharded over
      `"data"`, `genvi.vmap` particle axes over `"particles"`, parameters are replicated and
      XLA reduces the gradients. Results match a one-device run to float tolerance.

    **Returns:** a [`FitResult`][].
    """
    if not isinstance(objective, Expectation):
        raise ConfigError(f"fit: objective must be an @expectation program, got {type(objective).__name__}")
    mesh = _mesh.resolve(mesh)
    data, n = _place_data(data, mesh, batch_size)
    _check_args(num_steps, batch_size, n, on_nonfinite, checkpoint_every, chunk_size)
    _check_finite_start(params)
    optimizer = optimizer if optimizer is not None else optax.adam(1e-3)
    key = jax.random.PRNGKey(key) if isinstance(key, int) else key
    # array leaves ride in the carry (so a strategy may change integer ones, e.g. a sparse
    # support's indices); only the floating-point ones are trained
    dynamic, static = eqx.partition(params, eqx.is_array)
    chunk = chunk_size or min(num_steps, 100)
    for every in (checkpoint_every, strategy.every if strategy is not None else None):
        if every is not None:
            chunk = math.gcd(chunk, every)
    path = pathlib.Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists() and not resume:
        raise FitError(f"checkpoint {str(path)!r} already exists; pass resume=True to continue from it, "
                       "or remove it to start afresh (genvi never overwrites it silently)")

    first_batch = jax.tree.map(lambda d: d[:batch_size], data) if batch_size else data
    with _plates.subsampling(n, batch_size) if batch_size else _nullcontext(), _mesh.active(mesh):
        state = objective.init_state(params, *first_batch)
    opt_state = optimizer.init(eqx.filter(dynamic, eqx.is_inexact_array))
    carry = _Carry(dynamic, opt_state, key, state, jnp.arange(max(n, 1)), jnp.array(n, jnp.int32),
                   jnp.array(0, jnp.int32), jnp.array(0, jnp.int32), jnp.array(-1, jnp.int32))
    carry = jax.tree.map(_strong, carry)  # weak types would change after one step and recompile
    history: list[np.ndarray] = []
    if path is not None and resume and path.exists():
        carry, losses, _ = _checkpoint.load(path, carry)
        history.append(np.asarray(losses))
    if mesh is not None:
        carry = jax.device_put(carry, _mesh.replicated(mesh))

    run = _chunk_fn(_step_fn(objective, optimizer, static, batch_size, n, on_nonfinite == "skip", mesh),
                    chunk, mesh)
    loop = _Loop(objective, optimizer, static, data, batch_size, n, key, num_steps, path, checkpoint_every,
                 strategy, callbacks)
    return loop.run(run, carry, history, Progress(num_steps, int(_mesh.host(carry.step)), progress))


class _Loop(NamedTuple):
    """The host side of `fit`: chunks, strategy, progress, checkpoints, callbacks."""

    objective: Expectation
    optimizer: optax.GradientTransformation
    static: Any
    data: tuple
    batch_size: int | None
    n: int
    key: jax.Array
    num_steps: int
    path: pathlib.Path | None
    checkpoint_every: int | None
    strategy: Strategy | None
    callbacks: Sequence[Callable]

    def run(self, run: Callable, carry: _Carry, history: list, bar: Progress) -> FitResult:
        interrupted, writer = False, jax.process_index() == 0
        try:
            while int(_mesh.host(carry.step)) < self.num_steps:
                previous = int(_mesh.host(carry.step))
                carry, (losses, done) = run(carry, self.data, jnp.array(self.num_steps, jnp.int32))
                history.append(_mesh.host(losses)[_mesh.host(done)])
                step = int(_mesh.host(carry.step))
                if int(_mesh.host(carry.bad)) >= 0:
                    raise _nonfinite(self.objective, self.static, self.batch_size, self.n, carry, self.data)
                if self.strategy is not None and step < self.num_steps and _crossed(previous, step, self.strategy.every):
                    carry = self._strategy(step, carry)
                bar.update(step, float(history[-1][-1]) if len(history[-1]) else float("nan"))
                if writer and self.path is not None and (step >= self.num_steps or _crossed(previous, step, self.checkpoint_every)):
                    _checkpoint.save(self.path, jax.tree.map(_mesh.host, carry), np.concatenate(history),
                                     {"num_steps": self.num_steps})
                params = eqx.combine(carry.params, self.static)
                if any(cb(step, params, np.concatenate(history)) for cb in self.callbacks):
                    interrupted = True
                    break
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
        return FitResult(params=eqx.combine(carry.params, self.static),
                         losses=np.concatenate(history) if history else np.zeros(0), opt_state=carry.opt_state,
                         key=carry.key, steps=int(_mesh.host(carry.step)), state=carry.state,
                         skipped=int(_mesh.host(carry.skipped)), interrupted=interrupted)

    def _strategy(self, step: int, carry: _Carry) -> _Carry:
        context = FitContext(self.objective, self.data, self.batch_size, jax.random.fold_in(self.key, step),
                             self.optimizer)
        params, opt_state = self.strategy.update(step, eqx.combine(carry.params, self.static), carry.opt_state, context)
        dynamic = eqx.filter(params, eqx.is_array)
        if jax.tree.structure(dynamic) != jax.tree.structure(carry.params) or \
                jax.tree.structure(opt_state) != jax.tree.structure(carry.opt_state):
            raise FitError(f"fit: strategy {type(self.strategy).__name__}.update at step {step} changed the structure "
                           "of the parameters or of the optimiser state; it may change array values only")
        return carry._replace(params=jax.tree.map(_strong, dynamic), opt_state=jax.tree.map(_strong, opt_state))


def _crossed(previous: int, step: int, every: int | None) -> bool:
    return bool(every) and step // every > previous // every


def _place_data(data: tuple, mesh: Mesh | None, batch_size: int | None) -> tuple[tuple, int]:
    """Put the data on the mesh (global arrays from per-process shards); return it and its rows."""
    local = _data_size(data)
    if mesh is None:
        return data, local
    devices = _mesh.axis_size(mesh, _mesh.DATA)
    if batch_size is not None and batch_size % devices:
        raise ConfigError(f"fit(batch_size={batch_size}): with a mesh the minibatch is split evenly over the "
                          f"{devices} devices of its {_mesh.DATA!r} axis; use a multiple of {devices}")
    if jax.process_count() > 1:
        sizes = multihost_utils.process_allgather(np.array(local))
        if len(set(np.ravel(sizes).tolist())) > 1:
            raise ConfigError(f"fit: every process must pass a data shard of the same size; got {np.ravel(sizes).tolist()}")
        sharding = _mesh.along(mesh, _mesh.DATA)
        data = jax.tree.map(lambda d: jax.make_array_from_process_local_data(sharding, np.asarray(d)), data)
        return data, local * jax.process_count()
    if batch_size is None and local % devices:
        raise ConfigError(f"fit: full-batch training on a mesh splits the {local} rows over {devices} devices; "
                          "use a row count divisible by it, or a batch_size")
    sharding = _mesh.along(mesh, _mesh.DATA) if local % devices == 0 else _mesh.replicated(mesh)
    return jax.device_put(data, sharding), local


def _nonfinite(objective, static, batch_size, n, carry: _Carry, data) -> FitNonFinite:
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
