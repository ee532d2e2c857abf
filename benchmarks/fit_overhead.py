"""`vi.fit` per-step time against a hand-written jitted optax loop, on the digits VAE.

Both run the same objective (`elbo` of the digits VAE, batch 128, Adam); the hand-written loop
calls one jitted step per Python iteration, `fit` runs compiled chunks of steps. Per-step times
exclude compilation: `fit` is timed between its first and last chunk (a callback records the
time), the loop after a warm-up call. Repetitions alternate; medians are compared.
Target: fit <= 1.0x the hand-written loop.

    python benchmarks/fit_overhead.py [--steps 2000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import optax
from _w_vae import BATCH
from _workload import ascent_impl

import genvi.models.vae as vae
import genvi.vi as vi
from genvi.objectives import elbo


def time_fit(objective, params, data, steps: int) -> float:
    stamps: list[tuple[int, float]] = []

    def stamp(step, params, losses):
        stamps.append((step, time.perf_counter()))

    vi.fit(objective, params, data, optimizer=optax.adam(1e-3), num_steps=steps, batch_size=BATCH, key=0,
           progress=False, callbacks=[stamp], chunk_size=100)
    (s0, t0), (s1, t1) = stamps[0], stamps[-1]
    return (t1 - t0) / (s1 - s0)


def time_loop(objective, params, data, steps: int) -> float:
    """The hand-written loop: W1's genvi step (`_w_vae`) jitted and called once per iteration."""
    impl = ascent_impl(lambda p, k, x: objective.value_and_grad_estimate(k, p, x), params, data, BATCH, seed=0)
    step = jax.jit(impl.step)
    state = jax.block_until_ready(step(impl.init))
    start = time.perf_counter()
    for _ in range(steps):
        state = step(state)
    jax.block_until_ready(state)
    return (time.perf_counter() - start) / steps


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    train, _ = vae.binarized_digits()
    data = jnp.asarray(train)
    params = vae.VAE(jax.random.PRNGKey(0)).params
    objective = elbo(vae.model, vae.guide)
    fit_times, loop_times = [], []
    for _ in range(args.repeats):
        fit_times.append(time_fit(objective, params, data, args.steps))
        loop_times.append(time_loop(objective, params, data, args.steps))
    fit_s, loop_s = statistics.median(fit_times), statistics.median(loop_times)
    ratio = fit_s / loop_s
    print("| loop | per step (us) |")
    print("| --- | --- |")
    print(f"| genvi.vi.fit (chunks of 100) | {fit_s * 1e6:.1f} |")
    print(f"| hand-written jitted optax loop | {loop_s * 1e6:.1f} |")
    print(f"fit / hand-written: {ratio:.3f}  ({'PASS' if ratio <= 1.0 else 'MISS'}: target <= 1.0)")
    result = {"fit_s": fit_s, "loop_s": loop_s, "ratio": ratio}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
