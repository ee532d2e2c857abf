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
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from . import _checkpoint, _mesh, _plates, _step
from ._errors import ConfigError, FitError, ShapeError
from ._expectation import Expectation
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


def _data_size(data: tuple) -> int:
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in jax.tree.leaves(data)}
    if None in sizes:
        raise ShapeError("fit: every data array needs a leading data axis; got a scalar")
    if len(sizes) > 1:
        raise ShapeError(f"fit: data arrays disagree on their leading (data) axis: sizes {sorted(sizes)}")
    return sizes.pop() if sizes else 0


def _check_finite_start(params: Any) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(eqx.filter(params, eqx.is_inexact_array))[0]:
        if not bool(jnp.all(jnp.isfinite(leaf))):
            raise FitError(f"fit: parameter {jax.tree_util.keystr(path) or 'params'} is not finite at the start")


@_step.blas_single_threaded
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
    _step.check_args(num_steps, batch_size, n, on_nonfinite, checkpoint_every, chunk_size)
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
    with _plates.subsampling(n, batch_size) if batch_size else _step.nullcontext(), _mesh.active(mesh):
        state = objective.init_state(params, *first_batch)
    opt_state = optimizer.init(eqx.filter(dynamic, eqx.is_inexact_array))
    carry = _step.initial_carry(dynamic, opt_state, key, state, n)
    carry = jax.tree.map(_step.strong, carry)  # weak types would change after one step and recompile
    history: list[np.ndarray] = []
    if path is not None and resume and path.exists():
        carry, losses, _ = _checkpoint.load(path, carry)
        history.append(np.asarray(losses))
    if mesh is not None:
        carry = jax.device_put(carry, _mesh.replicated(mesh))

    run = _step.chunk_fn(_step.step_fn(objective, optimizer, static, batch_size, n, on_nonfinite == "skip", mesh),
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

    def run(self, run: Callable, carry: _step.Carry, history: list, bar: Progress) -> FitResult:
        interrupted, writer = False, jax.process_index() == 0
        try:
            while int(_mesh.host(carry.step)) < self.num_steps:
                previous = int(_mesh.host(carry.step))
                carry, (losses, done) = run(carry, self.data, jnp.array(self.num_steps, jnp.int32))
                history.append(_mesh.host(losses)[_mesh.host(done)])
                step = int(_mesh.host(carry.step))
                if int(_mesh.host(carry.bad)) >= 0:
                    raise _step.nonfinite(self.objective, self.static, self.batch_size, self.n, carry, self.data)
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

    def _strategy(self, step: int, carry: _step.Carry) -> _step.Carry:
        context = FitContext(self.objective, self.data, self.batch_size, jax.random.fold_in(self.key, step),
                             self.optimizer)
        params, opt_state = self.strategy.update(step, eqx.combine(carry.params, self.static), carry.opt_state, context)
        dynamic = eqx.filter(params, eqx.is_array)
        if jax.tree.structure(dynamic) != jax.tree.structure(carry.params) or \
                jax.tree.structure(opt_state) != jax.tree.structure(carry.opt_state):
            raise FitError(f"fit: strategy {type(self.strategy).__name__}.update at step {step} changed the structure "
                           "of the parameters or of the optimiser state; it may change array values only")
        return carry._replace(params=jax.tree.map(_step.strong, dynamic), opt_state=jax.tree.map(_step.strong, opt_state))


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
