"""`select`: fit several candidate models from several restarts each and keep the best ELBO.

ELBO maximisation is a consistent model-selection rule, robust to misspecification
(Chérief-Abdellatif, "Consistency of ELBO maximization for model selection", AABI 2019): fit
each candidate's variational family, estimate each fitted ELBO precisely, keep the largest.

Restarts of one candidate share their shapes, so they train together: `fit`'s own step (the same
minibatching, N/B scaling and NaN bookkeeping) is `jax.vmap`-ed over one flat axis of restarts
(of every replicate data set when `datasets=True`) inside `fit`'s compiled `lax.scan` chunks;
one flat axis, because XLA's compile time grows steeply with nested `vmap`s. A restart
whose update turns non-finite freezes at its last finite parameters (as `fit`'s raise mode does)
while the others go on; it is then excluded with a [`SelectionWarning`][] that names the
candidate, the restart, the step and the first non-finite site. On a mesh the restart axis is
sharded over the devices (the data are replicated), so restarts run in parallel.

The final ELBO of each restart is the mean of `eval_particles` independent estimates of the
`criterion` (the ELBO by default), not the last noisy training step; the evidence is the IWAE
bound with `evidence_particles` particles on the fitted guide (per data point for latents local
to a data plate, joint otherwise).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import logsumexp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import _plates, _step
from ._errors import ConfigError, FitError, GenviError, ShapeError
from ._expectation import Expectation
from ._progress import Progress
from ._selection import CandidateResult, SelectionResult

RESTARTS = "restarts"
_DEFAULT_OPTIMIZER = optax.adam(1e-2)


class SelectionWarning(UserWarning):
    """A restart of a candidate was excluded from `select` (non-finite training or evaluation)."""


def _candidates(candidates: Any) -> dict[str, tuple]:
    if isinstance(candidates, Mapping):
        items = [(str(k), v) for k, v in candidates.items()]
    elif isinstance(candidates, Sequence) and not isinstance(candidates, str):
        items = [(f"candidate {i}", v) for i, v in enumerate(candidates)]
    else:
        raise ConfigError(f"select: candidates must be a dict name -> (model, guide, params) or a list of "
                          f"such triples, got {type(candidates).__name__}")
    if not items:
        raise ConfigError("select: the candidate list is empty; pass at least one (model, guide, params) triple")
    for name, c in items:
        if not (isinstance(c, tuple) and len(c) == 3):
            raise ConfigError(f"select: candidate {name!r} must be a (model, guide, params_or_factory) triple, "
                              f"got {type(c).__name__}")
    return dict(items)


def _is_factory(init: Any) -> bool:
    return callable(init) and not isinstance(init, eqx.Module)


def _initial(name: str, init: Any, keys: jax.Array) -> tuple[Any, Any]:
    """Stacked trainable leaves `[S * R, ...]` (one per key) and the static part they share."""
    flat = keys.reshape(-1, keys.shape[-1])
    made = [init(k) for k in flat] if _is_factory(init) else [init]
    parts = [eqx.partition(p, eqx.is_inexact_array) for p in made]
    dyn0, static = parts[0]
    for i, (dyn, st) in enumerate(parts[1:], 1):
        if jax.tree.structure(dyn) != jax.tree.structure(dyn0) or not eqx.tree_equal(st, static):
            raise ConfigError(f"select: candidate {name!r}: its factory returned parameters of another structure "
                              f"for restart {i} than for restart 0; a factory must differ only in array values")
        for a, b in zip(jax.tree.leaves(dyn), jax.tree.leaves(dyn0)):
            if jnp.shape(a) != jnp.shape(b):
                raise ShapeError(f"select: candidate {name!r}: its factory returned a leaf of shape {jnp.shape(a)} "
                                 f"for restart {i} but {jnp.shape(b)} for restart 0")
    lead = keys.shape[:-1]
    if len(made) == 1:
        stacked = jax.tree.map(lambda a: jnp.broadcast_to(a, (*lead, *jnp.shape(a))), dyn0)
    else:
        stacked = jax.tree.map(lambda *a: jnp.stack(a).reshape(*lead, *jnp.shape(a[0])), *[d for d, _ in parts])
    return stacked, static


def _restart_axis(mesh: Mesh | str | None, restarts: int) -> Mesh | None:
    """The mesh whose `"restarts"` (else `"data"`) axis carries the restarts, or None."""
    if mesh is None:
        return None
    if mesh == "auto":
        mesh = Mesh(np.array(jax.devices()), (RESTARTS,))
    if not isinstance(mesh, Mesh):
        raise ConfigError(f"select(mesh={mesh!r}): use None, a jax.sharding.Mesh or 'auto'")
    axis = RESTARTS if RESTARTS in mesh.axis_names else ("data" if "data" in mesh.axis_names else None)
    if axis is None:
        raise ConfigError(f"select(mesh=...): the mesh's axes {mesh.axis_names} need one named {RESTARTS!r} "
                          "(or 'data') to spread the restarts over")
    if restarts % int(mesh.shape[axis]):
        raise ConfigError(f"select(restarts={restarts}): the restarts are split evenly over the mesh's {axis!r} "
                          f"axis of {int(mesh.shape[axis])} devices; use a multiple of {int(mesh.shape[axis])}")
    return Mesh(mesh.devices, tuple(RESTARTS if a == axis else a for a in mesh.axis_names))


def _shard(tree: Any, mesh: Mesh | None, spec: PartitionSpec) -> Any:
    return tree if mesh is None else jax.device_put(tree, NamedSharding(mesh, spec))


def _check_data(data: tuple, datasets: bool) -> tuple[int, int]:
    """(number of data sets, rows per data set); names the arrays that disagree."""
    if not data:
        raise ShapeError("select: no data given; pass the data arrays after the candidates")
    leaves = jax.tree.leaves(data)
    lead = 2 if datasets else 1
    shapes = [tuple(np.shape(x)) for x in leaves]
    if any(len(s) < lead for s in shapes):
        raise ShapeError(f"select: every data array needs {'a data-set axis and ' if datasets else ''}a leading "
                         f"data axis; got shapes {shapes}")
    heads = {s[:lead] for s in shapes}
    if len(heads) > 1:
        what = "(data sets, rows)" if datasets else "rows"
        raise ShapeError(f"select: the data arrays disagree on their leading {what}: shapes {shapes}")
    head = heads.pop()
    return (head[0], head[1]) if datasets else (1, head[0])


def _probe(name: str, ex: Expectation, params: Any, data: tuple) -> None:
    """Trace the candidate's objective once on the data so a shape mismatch names the candidate."""
    try:
        jax.eval_shape(lambda p, d: ex.estimate(jax.random.PRNGKey(0), p, *d), params, data)
    except (GenviError, ValueError, TypeError) as err:
        shapes = [tuple(np.shape(x)) for x in jax.tree.leaves(data)]
        raise ShapeError(f"select: candidate {name} cannot be evaluated on the data (data shapes {shapes}): "
                         f"{type(err).__name__}: {err}") from err


def _runner(ex: Expectation, optimizer: optax.GradientTransformation, static: Any, batch_size: int | None,
            n: int, chunk: int) -> Callable:
    """One compiled chunk of `fit`'s step over the flat restart axis `[S * R]` (each restart with
    the data of its data set)."""
    step = _step.step_fn(ex, optimizer, static, batch_size, n, False, None)
    batched = jax.vmap(step, in_axes=(0, 0, None))

    @jax.jit
    def run(carry, data, total):
        return jax.lax.scan(lambda c, _: batched(c, data, total), carry, None, length=chunk)

    return run


def _train(name: str, ex: Expectation, optimizer: optax.GradientTransformation, run: Callable, dyn: Any,
           static: Any, data: tuple, keys: jax.Array, num_steps: int, batch_size: int | None, n: int,
           mesh: Mesh | None, progress: bool) -> tuple[_step.Carry, np.ndarray]:
    """Train every restart `[S * R]` with `run`; returns the final carries and the losses."""
    params0 = eqx.combine(jax.tree.map(lambda a: a[0], dyn), static)
    first = jax.tree.map(lambda d: d[0, :batch_size] if batch_size else d[0], data)
    with _plates.subsampling(n, batch_size) if batch_size else _step.nullcontext():
        state = ex.init_state(params0, *first)

    def carry_of(d, k):
        return _step.initial_carry(d, optimizer.init(d), k, state, n)

    carry = jax.tree.map(_step.strong, jax.vmap(carry_of)(dyn, keys))
    carry = _shard(carry, mesh, PartitionSpec(RESTARTS))
    data = _shard(data, mesh, PartitionSpec())
    bar, history = Progress(num_steps, 0, progress), []
    if bar.bar is not None:
        bar.bar.set_description(f"genvi.select {name}")
    try:
        while True:
            carry, (losses, done) = run(carry, data, jnp.array(num_steps, jnp.int32))
            history.append(np.where(np.asarray(done), np.asarray(losses), np.nan))
            steps, bad = np.asarray(carry.step), np.asarray(carry.bad)
            live = (steps < num_steps) & (bad < 0)
            last = history[-1][-1]
            bar.update(int(steps.max()), float(np.nanmean(last)) if np.isfinite(last).any() else math.nan)
            if not live.any():
                break
    finally:
        bar.close()
    return carry, np.concatenate(history)[:num_steps]


def _evaluator(ex: Expectation, static: Any, particles: int) -> Callable:
    """`(dyn, data, key) -> (mean, se)` of `particles` independent estimates, vmapped over the
    restarts; the particles run in a `lax.map` loop (a nested `vmap` would make XLA compile slowly)."""
    def one(dyn, data, key):
        params = eqx.combine(dyn, static)
        values = jax.lax.map(lambda k: ex.estimate(k, params, *data), jax.random.split(key, particles))
        se = jnp.std(values, ddof=1) / jnp.sqrt(particles) if particles > 1 else jnp.zeros(())
        return jnp.mean(values), se

    return jax.jit(jax.vmap(one))


def _evidence(model: Any, guide: Any, static: Any, particles: int) -> Callable:
    """`(dyn, data, key) -> (IWAE_K, delta-method se)` on the fitted guide, vmapped over restarts."""
    from genvi.objectives._weights import split  # objectives build on the core; import when used

    def one(dyn, data, key):
        model_params, guide_params = eqx.combine(dyn, static)

        def log_w(k):
            q = guide.simulate(k, guide_params, *data)
            return split(model.score(q.choices, model_params, *data), q, "select").log_w

        lw = jax.lax.map(log_w, jax.random.split(key, particles))
        bound = jnp.sum(logsumexp(lw, axis=0) - jnp.log(particles))
        norm = jax.nn.softmax(lw, axis=0)  # var(mean w) / mean(w)^2 = (K sum w~^2 - 1) / K
        var = jnp.sum(jnp.maximum(particles * jnp.sum(norm ** 2, axis=0) - 1.0, 0.0) / particles)
        return bound, jnp.sqrt(var)

    return jax.jit(jax.vmap(one))


class _Prepared(NamedTuple):
    name: str
    model: Any
    guide: Any
    dyn: Any  # trainable leaves, [S * R, ...]
    static: Any
    k_train: jax.Array
    k_eval: jax.Array
    k_evid: jax.Array


def _signature(tree: Any) -> tuple:
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, [(jnp.shape(a), jnp.result_type(a)) for a in leaves]


def _groups(prepared: list[_Prepared]) -> list[list[_Prepared]]:
    """Candidates that differ only in array values (same model, guide, static parts and shapes)
    train together in one compiled batch; the rest on their own."""
    groups: list[list[_Prepared]] = []
    for p in prepared:
        for g in groups:
            q = g[0]
            if (q.model is p.model or q.model == p.model) and (q.guide is p.guide or q.guide == p.guide) \
                    and _signature(q.dyn) == _signature(p.dyn) and eqx.tree_equal(q.static, p.static) is True:
                g.append(p)
                break
        else:
            groups.append([p])
    return groups


class _Parts(NamedTuple):
    objective: Expectation
    criterion: Expectation
    run: Callable
    evaluate: Callable
    evidence: Callable | None


def _build(objective: Callable, criterion: Callable, model: Any, guide: Any, optimizer: Any, static: Any,
           batch_size: int | None, n: int, chunk: int, eval_particles: int, evidence_particles: int) -> _Parts:
    ex, crit = objective(model, guide), criterion(model, guide)
    return _Parts(ex, crit, _runner(ex, optimizer, static, batch_size, n, chunk),
                  _evaluator(crit, static, eval_particles),
                  _evidence(model, guide, static, evidence_particles) if evidence_particles else None)


_cached_build = functools.lru_cache(maxsize=16)(_build)


def _parts(*args: Any) -> _Parts:
    """The compiled pieces for one candidate, reused across `select` calls with the same
    objective, model, guide, optimizer and static parameters (so re-running does not recompile)."""
    try:
        return _cached_build(*args)
    except TypeError:  # something unhashable (a static leaf): build afresh
        return _build(*args)


def _exclusions(name: str, ex: Expectation, static: Any, carry: _step.Carry, data: tuple, elbos: np.ndarray,
                batch_size: int | None, n: int, datasets: bool, offset: int = 0) -> np.ndarray:
    """Warn about every restart that failed; return the mask of kept restarts `[S, R]`."""
    bad = np.asarray(carry.bad)[offset:offset + elbos.size].reshape(elbos.shape)
    kept = np.isfinite(elbos)
    for s, r in zip(*np.nonzero((bad >= 0) | ~kept)):
        where = f"candidate {name!r}, restart {r}" + (f", data set {s}" if datasets else "")
        if bad[s, r] >= 0:
            b = offset + s * elbos.shape[1] + r
            one = jax.tree.map(lambda a: a[b], carry)
            err = _step.nonfinite(ex, static, batch_size, n, one, jax.tree.map(lambda d: d[b], data))
            why = f"training stopped at step {err.step}" + (f" (site {err.site!r} not finite)" if err.site else "")
        else:
            why = f"its final ELBO estimate is {elbos[s, r]}"
        warnings.warn(f"select: {where} is excluded: {why}; the other restarts are kept", SelectionWarning,
                      stacklevel=3)
        kept[s, r] = False
    return kept


@_step.blas_single_threaded
def select(candidates: Mapping[str, tuple] | Sequence[tuple], *data: Any,
           objective: Callable[[Any, Any], Expectation] | None = None,
           criterion: Callable[[Any, Any], Expectation] | None = None, restarts: int = 4, num_steps: int,
           key: jax.Array | int, optimizer: optax.GradientTransformation | None = None,
           batch_size: int | None = None, eval_particles: int = 256, evidence_particles: int = 256,
           chunk_size: int | None = None, progress: bool = True, mesh: Mesh | str | None = None,
           datasets: bool = False) -> SelectionResult | list[SelectionResult]:
    """Fit each candidate from `restarts` starts and choose the one with the largest final ELBO.

    **Arguments:**

    - `candidates`: a dict `name -> (model, guide, init)` (or a list of triples, named
      `"candidate i"`). `init` is the parameters `(model_params, guide_params)` or a factory
      `key -> params` (a plain function), which gives each restart its own start; with fixed
      parameters the restarts differ only in their gradient noise.
    - `*data`: the data, shared by every candidate (leading data axis; the ELBOs compare models
      of the same data).
    - `objective`: `(model, guide) -> Expectation` trained per candidate (default
      `genvi.objectives.elbo`; e.g. `functools.partial(elbo, analytic_kl=True)`).
    - `criterion`: `(model, guide) -> Expectation` whose estimate, averaged over
      `eval_particles` independent draws at the trained parameters, is the final ELBO (default:
      the plain ELBO).
    - `restarts`, `num_steps`, `optimizer` (default `optax.adam(1e-2)`), `batch_size`,
      `chunk_size`, `progress`: as in [`genvi.vi.fit`][], per restart.
    - `key`: an int or PRNG key; the same key gives the same result, each candidate and restart
      gets its own stream.
    - `evidence_particles`: particles of the IWAE evidence estimate (0 skips it).
    - `mesh`: `None`, `"auto"` or a `jax.sharding.Mesh` whose `"restarts"` (else `"data"`) axis
      carries the restarts (`restarts` must be a multiple of its size).
    - `datasets`: if True every data array has a leading axis of replicate data sets, all fitted
      at once (vectorised), and a list of results is returned, one per data set.

    **Returns:** a [`SelectionResult`][] (a list of them with `datasets=True`). Restarts whose
    training or final ELBO is non-finite are excluded with a [`SelectionWarning`][].
    """
    from genvi.objectives import elbo  # the objectives package builds on the core

    cands = _candidates(candidates)
    _step.check_args(num_steps, None, 1, "raise", None, chunk_size)
    for opt, value in (("restarts", restarts), ("eval_particles", eval_particles)):
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"select({opt}={value!r}): must be a positive integer")
    if not isinstance(evidence_particles, int) or evidence_particles < 0:
        raise ConfigError(f"select(evidence_particles={evidence_particles!r}): must be an integer >= 0")
    num_sets, n = _check_data(data, datasets)
    if batch_size is not None and (not isinstance(batch_size, int) or not 1 <= batch_size <= n):
        raise ConfigError(f"select(batch_size={batch_size!r}): must be an integer in [1, {n}] (the data's rows)")
    stacked = data if datasets else jax.tree.map(lambda d: jnp.asarray(d)[None], data)
    flat = jax.tree.map(lambda d: jnp.repeat(jnp.asarray(d), restarts, axis=0), stacked)  # [S * R, n, ...]
    mesh = _restart_axis(mesh, restarts)
    objective, criterion = objective or elbo, criterion or elbo
    optimizer = optimizer if optimizer is not None else _DEFAULT_OPTIMIZER
    key = jax.random.PRNGKey(key) if isinstance(key, int) else key
    chunk = chunk_size or min(num_steps, 100)

    grid = lambda k: jax.random.split(k, num_sets * restarts)  # noqa: E731  flat [S * R] keys
    prepared = []
    for index, (name, (model, guide, init)) in enumerate(cands.items()):
        k_init, *k_rest = jax.random.split(jax.random.fold_in(key, index), 4)
        prepared.append(_Prepared(name, model, guide, *_initial(name, init, grid(k_init)), *map(grid, k_rest)))
    out: list[dict[str, CandidateResult]] = [{} for _ in range(num_sets)]
    for group in _groups(prepared):
        head, size = group[0], len(group)
        cat = lambda *trees: jax.tree.map(lambda *a: jnp.concatenate(a), *trees)  # noqa: E731  [C * S * R]
        dyn, data_c = cat(*[g.dyn for g in group]), cat(*[flat] * size)
        parts = _parts(objective, criterion, head.model, head.guide, optimizer, head.static, batch_size, n, chunk,
                       eval_particles, evidence_particles)
        names = ", ".join(repr(g.name) for g in group)
        _probe(names, parts.objective, eqx.combine(jax.tree.map(lambda a: a[0], dyn), head.static),
               jax.tree.map(lambda d: d[0], flat))
        carry, losses = _train(names, parts.objective, optimizer, parts.run, dyn, head.static, data_c,
                               cat(*[g.k_train for g in group]), num_steps, batch_size, n, mesh, progress)
        trained = _shard(carry.params, mesh, PartitionSpec(RESTARTS))
        shaped = lambda a: np.asarray(a).reshape(size, num_sets, restarts)  # noqa: E731
        elbos, ses = map(shaped, parts.evaluate(trained, data_c, cat(*[g.k_eval for g in group])))
        evid = evid_se = np.full_like(elbos, np.nan)
        if parts.evidence is not None:
            evid, evid_se = map(shaped, parts.evidence(trained, data_c, cat(*[g.k_evid for g in group])))
        losses = losses.reshape(len(losses), size, num_sets, restarts)
        for c, g in enumerate(group):
            kept = _exclusions(g.name, parts.objective, g.static, carry, data_c, elbos[c], batch_size, n,
                               datasets, offset=c * num_sets * restarts)
            for s, result in enumerate(_collect(g, c, kept, (elbos, ses, evid, evid_se), carry.params, losses)):
                out[s][g.name] = result
    out = [{name: o[name] for name in cands} for o in out]  # the order given
    results = [_decide(c) for c in out]
    return results if datasets else results[0]


def _collect(g: _Prepared, c: int, kept: np.ndarray, estimates: tuple, params: Any, losses: np.ndarray
             ) -> list[CandidateResult]:
    """Candidate `c` of its group: one [`CandidateResult`][] per data set, excluded restarts NaN."""
    elbos, ses, evid, evid_se = (np.where(kept, e[c], np.nan) for e in estimates)
    num_sets, restarts = kept.shape
    out = []
    for s in range(num_sets):
        best = int(np.nanargmax(elbos[s])) if kept[s].any() else 0
        b = (c * num_sets + s) * restarts + best
        best_params = eqx.combine(jax.tree.map(lambda a: a[b], params), g.static)
        out.append(CandidateResult(g.name, elbos[s], ses[s], evid[s], evid_se[s],
                                   tuple(int(r) for r in np.nonzero(~kept[s])[0]), best_params, losses[:, c, s]))
    return out


def _decide(cands: dict[str, CandidateResult]) -> SelectionResult:
    """The winner (largest best final ELBO) and the candidates tied with it within standard error."""
    ok = {name: c for name, c in cands.items() if c.kept.any()}
    if not ok:
        raise FitError(f"select: every restart of every candidate ({sorted(cands)}) failed; see the warnings")
    for name in sorted(set(cands) - set(ok)):
        warnings.warn(f"select: candidate {name!r} has no finite restart and cannot win", SelectionWarning,
                      stacklevel=3)
    winner = max(ok, key=lambda name: ok[name].best)
    w = ok[winner]
    ties = tuple(name for name, c in ok.items()
                 if name != winner and w.best - c.best <= math.hypot(w.se, c.se))
    return SelectionResult(cands, winner, ties)
