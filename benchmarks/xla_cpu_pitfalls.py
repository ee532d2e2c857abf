"""The two XLA-CPU costs behind genvi's W4 fixes, each against its plain form in the same run.

1. A reduction over a trailing unit axis: NumPyro's `sum_rightmost` writes `reshape(x[..., None])`,
   which XLA fuses into a reduce over `[K, B, 64, 1]`; `genvi/_ir.py` folds the pair away.
2. Counter-based RNG on one key per element (`[K, B]` keys) against one key for the whole site.
   In isolation the two cost the same; inside W4's step the per-element form's threefry loops
   took about 3x longer (profile in `benchmarks/RESULTS.md`), which is why
   `genvi/_sitedist.py` draws NumPyro sites under a plate from one batched distribution.

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


if __name__ == "__main__":
    main()
