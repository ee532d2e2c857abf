"""Timing helpers shared by the benchmark scripts: compile time and interleaved medians.

Machines here are noisy, so every comparison is measured in one process, in alternating blocks,
and reported as a ratio of medians.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


def compile_seconds(fn: Callable, *args: Any) -> tuple[Callable, float]:
    """Trace, lower and compile `jax.jit(fn)` for `args`; return the compiled function and seconds."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def interleaved(steps: dict[str, Callable[[Any], Any]], states: dict[str, Any], *, rounds: int,
                block: int, seed: int = 0) -> dict[str, float]:
    """Median seconds per call of each `state = step(state)`, run in shuffled alternating blocks."""
    per_round = interleaved_rounds(steps, states, rounds=rounds, block=block, seed=seed)
    return {name: statistics.median(ts) for name, ts in per_round.items()}


def interleaved_rounds(steps: dict[str, Callable[[Any], Any]], states: dict[str, Any], *, rounds: int,
                       block: int, seed: int = 0) -> dict[str, list[float]]:
    """Seconds per call of each step in each round (every round runs each step's block once, in a
    shuffled order), so that ratios can be paired within a round."""
    rng = random.Random(seed)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for name, step in steps.items():  # warm up
        states[name] = jax.block_until_ready(step(states[name]))
    for _ in range(rounds):
        order = list(steps)
        rng.shuffle(order)
        for name in order:
            state = states[name]
            start = time.perf_counter()
            for _ in range(block):
                state = steps[name](state)
            jax.block_until_ready(state)
            times[name].append((time.perf_counter() - start) / block)
            states[name] = state
    return times
