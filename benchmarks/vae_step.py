"""One training step of the digits VAE: genvi's `objectives.elbo` against the same maths by hand.

Encoder 64-200-(2x10), decoder 10-200-64 (tanh MLPs, equinox), batch 128, Adam. Both steps are
jitted and draw their minibatch on device; they are timed in one process with interleaved blocks.
This is workload W1 of `benchmarks/run.py` without NumPyro (the implementations live in
`_w_vae.py`). Prints the per-step and compile-time ratios (target: per step <= 1.05x hand-written).

    python benchmarks/vae_step.py [--rounds 30] [--block 50]
"""

from __future__ import annotations

import argparse
import json

from _timing import compile_seconds, interleaved
from _w_vae import build


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--block", type=int, default=50)
    args = parser.parse_args()

    impls = build(1, numpyro_impl=False).impls
    compiled, compile_time = {}, {}
    for name, impl in impls.items():
        compiled[name], compile_time[name] = compile_seconds(impl.step, impl.init)
    per_step = interleaved(compiled, {name: impl.init for name, impl in impls.items()},
                           rounds=args.rounds, block=args.block)

    ratio = per_step["genvi"] / per_step["hand-written"]
    compile_ratio = compile_time["genvi"] / compile_time["hand-written"]
    print("| implementation | per step (us) | compile (s) |")
    print("| --- | --- | --- |")
    for name in impls:
        print(f"| {name} | {per_step[name] * 1e6:.1f} | {compile_time[name]:.2f} |")
    print(f"per-step ratio genvi / hand-written: {ratio:.3f}  "
          f"({'PASS' if ratio <= 1.05 else 'MISS'}: target <= 1.05)")
    print(f"compile ratio genvi / hand-written: {compile_ratio:.2f}")
    result = {"per_step_s": per_step, "compile_s": compile_time, "ratio": ratio, "compile_ratio": compile_ratio}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
