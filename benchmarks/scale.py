"""`fit` on a mesh of 1, 2, 4 and 8 simulated CPU devices: per-step time and memory per device.

This checks the mechanics of sharding (the minibatch split over the `"data"` axis, parameters
replicated, XLA's gradient all-reduce), not speed: simulated CPU devices share this machine's
cores, so per-step time does not fall with more devices here. On a machine with several
accelerators the same script (without the simulation flag) measures real scaling.

    python benchmarks/scale.py [--steps 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

WORKER = r"""
import json, sys, time
import jax, jax.numpy as jnp, equinox as eqx, optax
from jax.sharding import NamedSharding, PartitionSpec as P, Mesh
import numpy as np
import genvi.models.vae as vae, genvi.vi as vi
from genvi.objectives import elbo
steps = int(sys.argv[1])
train = jnp.asarray(vae.binarized_digits()[0][:1024])
objective = elbo(vae.model, vae.guide)
params = vae.VAE(jax.random.PRNGKey(0)).params
stamps = []
vi.fit(objective, params, train, num_steps=steps, batch_size=128, key=0, progress=False, mesh="auto",
       chunk_size=50, callbacks=[lambda s, p, l: stamps.append((s, time.perf_counter()))])
per_step = (stamps[-1][1] - stamps[0][1]) / (stamps[-1][0] - stamps[0][0])
mesh = Mesh(np.array(jax.devices()), ("data",))
batch = jax.device_put(train[:128], NamedSharding(mesh, P("data")))
dyn, static = eqx.partition(params, eqx.is_inexact_array)
fn = lambda d, x: objective.value_and_grad_estimate(jax.random.PRNGKey(0), eqx.combine(d, static), x)
mem = jax.jit(fn).lower(dyn, batch).compile().memory_analysis()
print(json.dumps({"devices": len(jax.devices()), "per_step_s": per_step,
                  "temp_bytes": getattr(mem, "temp_size_in_bytes", None),
                  "argument_bytes": getattr(mem, "argument_size_in_bytes", None)}))
"""


def main() -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    rows = []
    for devices in (1, 2, 4, 8):
        env = {**os.environ, "JAX_PLATFORMS": "cpu",
               "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", WORKER, str(args.steps)], env=env, capture_output=True,
                             text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["wall_s"] = time.perf_counter() - start
        rows.append(row)
    print("| devices | per step (ms) | temp memory per device (KiB) | arguments (KiB) |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['devices']} | {r['per_step_s'] * 1e3:.2f} | {r['temp_bytes'] / 1024:.0f} | "
              f"{r['argument_bytes'] / 1024:.0f} |")
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
