"""The two XLA-CPU costs behind genvi's W4 fixes, each against its plain form in the same run.

1. A reduction over a trailing unit axis: NumPyro's `sum_rightmost` writes `reshape(x[..., None])`,
   which XLA fuses into a reduce over `[K, B, 64, 1]`; `genvi/_ir.py` folds the pair away.
2. Counter-based RNG on one key per element (`[K, B]` keys) against one key for the whole site.
   In isolation the two cost the same; inside W4's step the per-element form's threefry loops
   took about 3x longer (profile in `benchmarks/RESULTS.md`), which is why
   `genvi/_sitedist.py` draws NumPyro sites under a plate from one batched distribution.
3. Layer layout: W4's hand-written step with each layer written per point, `vmap(lambda z: w @ z)`,
   against the same step with `z @ w.T`. Small matrix-vector products alone time the same; in the
   whole step the per-point layout computes `[out, batch]` and transposes, which is why W4's
   programs (genvi's included) are all written `z @ w.T`.

    python benchmarks/xla_cpu_pitfalls.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from _timing import interleaved

K, B, P, H = 4, 128, 64, 16


def main() -> None:
    a, c = jnp.ones((K, B, P)), jnp.ones((K, B))
    p, key = jnp.full((K, B, H), 0.3), jax.random.PRNGKey(0)
    keys = jax.random.split(key, K * B).reshape(K, B, 2)
    cases = {  # (function, arguments): arguments, not closed-over constants, so XLA cannot fold them
        "reduce over a trailing unit axis": (lambda a, c: jnp.sum(a[..., None] * c[:, :, None, None], axis=(2, 3)), (a, c)),
        "plain reduce": (lambda a, c: jnp.sum(a * c[:, :, None], -1), (a, c)),
        "bernoulli, one key per element": (
            lambda k, q: jax.vmap(jax.vmap(lambda kk, qq: jax.random.bernoulli(kk, qq)))(k, q), (keys, p)),
        "bernoulli, one key": (lambda k, q: jax.random.bernoulli(k, q), (key, p)),
    }
    steps = {name: (lambda fn, args: lambda _state: fn(*args))(jax.jit(fn), args) for name, (fn, args) in cases.items()}
    times = interleaved(steps, dict.fromkeys(cases), rounds=9, block=100)
    for name, t in times.items():
        print(f"{name:34s} {t * 1e6:9.1f} us")
    names = list(cases)
    print(f"\ntrailing-unit-axis reduce / plain reduce: {times[names[0]] / times[names[1]]:.2f}x")
    print(f"per-element keys / one key:               {times[names[2]] / times[names[3]]:.2f}x")
    layouts = _layer_layouts()
    print(f"W4 hand-written step, per-point w @ z / z @ w.T: {layouts['per point'] / layouts['batched']:.2f}x "
          f"({layouts['per point'] * 1e6:.0f} vs {layouts['batched'] * 1e6:.0f} us)")


def _layer_layouts() -> dict[str, float]:
    """Per-step time of W4's hand-written training step in the two layer layouts."""
    import _w_sbn
    from _w_vae import digits
    from _workload import ascent_impl

    data, params = digits(), _w_sbn.init_params(jax.random.PRNGKey(0))
    impls = {name: ascent_impl(jax.value_and_grad(_w_sbn.hand_written_reinforce_loo(per_point=flag)),
                               params, data, _w_sbn.BATCH)
             for name, flag in (("batched", False), ("per point", True))}
    steps = {name: jax.jit(impl.step) for name, impl in impls.items()}
    states = {name: jax.block_until_ready(steps[name](impl.init)) for name, impl in impls.items()}
    return interleaved(steps, states, rounds=9, block=20)


if __name__ == "__main__":
    main()
