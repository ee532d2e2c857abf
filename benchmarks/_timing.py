"""Timing helpers shared by the benchmark scripts: compile time and interleaved medians.

Machines here are noisy, so every comparison is measured in one process, in alternating blocks,
and reported as a ratio of medians.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Sequence
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


def interleaved_rounds(steps: dict[str, Callable[[Any], Any] | Sequence[Callable[[Any], Any]]],
                       states: dict[str, Any], *, rounds: int, block: int,
                       seed: int = 0) -> dict[str, list[float]]:
    """Seconds per call of each step in each round (every round runs each step's block once, in a
    shuffled order), so that ratios can be paired within a round.

    A step may be a sequence of separately compiled copies of one program: round `r` runs copy
    `r % len(copies)`. Identical executables differ by several percent on CPU (where the machine
    code and its buffers land), so cycling through copies averages that out instead of letting
    one lucky or unlucky compilation decide a ratio."""
    rng = random.Random(seed)
    copies = {name: list(step) if isinstance(step, Sequence) else [step] for name, step in steps.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for name, fns in copies.items():  # warm up every copy
        for fn in fns:
            states[name] = jax.block_until_ready(fn(states[name]))
    for r in range(rounds):
        order = list(steps)
        rng.shuffle(order)
        for name in order:
            step = copies[name][r % len(copies[name])]
            state = states[name]
            start = time.perf_counter()
            for _ in range(block):
                state = step(state)
            jax.block_until_ready(state)
            times[name].append((time.perf_counter() - start) / block)
            states[name] = state
    return times
