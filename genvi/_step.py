"""One training step and compiled chunks of steps: the machinery `fit` and `select` share.

A step is a pure function of the carry (parameters, optimiser state, estimator states, key,
minibatch order, step count), so results do not depend on chunking and a resumed run repeats a
straight one bit for bit. A step that meets a NaN or inf is either skipped or marks the carry,
and `nonfinite` re-runs it eagerly to name the site at fault.

Training runs with OpenBLAS single-threaded (`blas_single_threaded`): XLA's CPU runtime calls
LAPACK (Cholesky, triangular solves) from its own worker threads, and a threaded OpenBLAS
beneath them oversubscribes the cores. (A separate hang of large vmapped triangular solves sits
in jaxlib's LAPACK kernels, which wait on XLA's thread pool from inside it; README, "Training".)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import threadpoolctl
from jax.sharding import Mesh

from . import _mesh, _plates
from ._errors import ConfigError, FitError
from ._expectation import Expectation
from ._primitive import probing


def blas_single_threaded(fn: Callable) -> Callable:
    """Run `fn` with the BLAS libraries' own thread pools limited to one thread."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapped


class Carry(NamedTuple):
    params: Any
    opt_state: Any
    key: jax.Array
    state: dict
    perm: jax.Array
    pos: jax.Array
    step: jax.Array
    skipped: jax.Array
    bad: jax.Array  # step of the first non-finite update (raise mode), or -1


def initial_carry(params: Any, opt_state: Any, key: jax.Array, state: dict, n: int) -> Carry:
    """The carry before step 0: data in order, nothing drawn, skipped or failed yet."""
    return Carry(params, opt_state, key, state, jnp.arange(max(n, 1)), jnp.array(n, jnp.int32),
                 jnp.array(0, jnp.int32), jnp.array(0, jnp.int32), jnp.array(-1, jnp.int32))


class FitNonFinite(FitError):
    """Training met a NaN or inf; `.step`, `.site` and `.params` (the last finite ones) say more."""

    def __init__(self, message: str, step: int, site: str | None, params: Any):
        super().__init__(message)
        self.step, self.site, self.params = step, site, params


def draw(carry: Carry, data: tuple, batch_size: int | None, n: int):
    """The step's minibatch and estimator key, and the carry's next key and minibatch order."""
    key, k_perm, k_est = jax.random.split(carry.key, 3)
    if batch_size is None:
        return data, k_est, key, carry.perm, carry.pos
    reshuffle = carry.pos + batch_size > n
    perm = jax.lax.cond(reshuffle, lambda: jax.random.permutation(k_perm, n), lambda: carry.perm)
    pos = jnp.where(reshuffle, 0, carry.pos)
    index = jax.lax.dynamic_slice_in_dim(perm, pos, batch_size)
    return jax.tree.map(lambda d: d[index], data), k_est, key, perm, pos + batch_size


def all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def step_fn(objective: Expectation, optimizer: optax.GradientTransformation, static: Any,
             batch_size: int | None, n: int, skip: bool, mesh: Mesh | None) -> Callable:
    def step(carry: Carry, data: tuple, num_steps: jax.Array):
        active = (carry.step < num_steps) & (carry.bad < 0)
        batch, k_est, key, perm, pos = draw(carry, data, batch_size, n)
        if mesh is not None:
            batch = _mesh.constrain_rows(batch, mesh)
        params = eqx.combine(carry.params, static)
        with _plates.subsampling(n, batch_size) if batch_size else nullcontext() as ctx, _mesh.active(mesh):
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
        finite = jnp.isfinite(loss) & all_finite(grads)
        trainable, fixed = eqx.partition(carry.params, eqx.is_inexact_array)
        updates, opt_state = optimizer.update(grads, carry.opt_state, trainable)
        new_params = eqx.combine(optax.apply_updates(trainable, updates), fixed)
        ok = active & finite
        advance = active if skip else ok  # in raise mode the failing step's key is kept for diagnosis
        pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)  # noqa: E731
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(advance, a, b), new, old)  # noqa: E731
        bad = carry.bad if skip else jnp.where(active & ~finite, carry.step, carry.bad)
        new = Carry(pick(new_params, carry.params), pick(opt_state, carry.opt_state), keep(key, carry.key),
                     pick(state, carry.state), keep(perm, carry.perm), keep(pos, carry.pos),
                     carry.step + advance.astype(carry.step.dtype),
                     carry.skipped + (active & ~finite & skip).astype(jnp.int32), bad)
        return new, (loss, advance)

    return step


class nullcontext:
    used = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def chunk_fn(step: Callable, length: int, mesh: Mesh | None) -> Callable:
    """One compiled chunk of `length` steps; on a mesh its outputs stay replicated."""
    out = None if mesh is None else _mesh.replicated(mesh)

    @functools.partial(jax.jit, out_shardings=out)
    def run(carry: Carry, data: tuple, num_steps: jax.Array):
        return jax.lax.scan(lambda c, _: step(c, data, num_steps), carry, None, length=length)

    return run


def strong(x: Any) -> Any:
    """`x` without JAX's weak type (a Python-scalar-born array), so carry types stay fixed."""
    if isinstance(x, jax.Array) and not jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        return jnp.array(x, dtype=x.dtype)
    return x


def check_args(num_steps: int, batch_size: int | None, n: int, on_nonfinite: str,
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


def nonfinite(objective, static, batch_size, n, carry: Carry, data) -> FitNonFinite:
    """Re-run the failing step eagerly and name the first non-finite site or gradient."""
    step = int(carry.bad)
    params = eqx.combine(carry.params, static)
    batch, k_est, *_ = draw(carry, data, batch_size, n)
    site = None
    with jax.disable_jit(), probing() as bad_sites, \
            (_plates.subsampling(n, batch_size) if batch_size else nullcontext()):
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
