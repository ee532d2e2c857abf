"""Training runs for the scaling tests, importable by subprocesses (not collected by pytest)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import optax

import genvi
import genvi.models.vae as vae
import genvi.vi as vi
from genvi import gen, sample
from genvi.estimators import ENUM
from genvi.objectives import elbo, iwae

LOCS = jnp.array([-2.0, 0.0, 2.5])


@gen
def mix_point(log_w, x):
    z = sample("z", dist.Categorical(logits=log_w))
    sample("x", dist.Normal(LOCS[z], 1.0), obs=x)


@gen
def mix_point_guide(logits, x):
    sample("z", dist.Categorical(logits=logits * x), estimator=ENUM)


mix_model = genvi.vmap(mix_point, in_axes=(None, 0), plate="data")
mix_guide = genvi.vmap(mix_point_guide, in_axes=(None, 0), plate="data")


def mixture_data(n: int = 256) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (LOCS[rng.integers(0, 3, n)] + rng.normal(size=n)).astype(np.float32)


def run(workload: str, mesh, steps: int = 20, data=None) -> list[float]:
    """Losses of a short fit of `workload` ("vae", "iwae" or "enum") on `mesh`."""
    if workload in ("vae", "iwae"):
        train = data if data is not None else vae.binarized_digits()[0][:1024]
        objective = elbo(vae.model, vae.guide) if workload == "vae" else iwae(vae.model, vae.guide, particles=8)
        res = vi.fit(objective, vae.VAE(jax.random.PRNGKey(0)).params, jnp.asarray(train), num_steps=steps,
                     batch_size=128, key=1, progress=False, mesh=mesh, optimizer=optax.adam(1e-3))
    else:
        x = data if data is not None else mixture_data()
        res = vi.fit(elbo(mix_model, mix_guide), (jnp.zeros(3), jnp.ones(3)), jnp.asarray(x), num_steps=steps,
                     batch_size=64, key=1, progress=False, mesh=mesh, optimizer=optax.adam(0.05))
    return [float(v) for v in res.losses]


def process_shard(workload: str) -> list[float]:
    """Run in each of several processes: train on this process's shard with the global mesh."""
    count, index = jax.process_count(), jax.process_index()
    if workload == "enum":
        full = mixture_data()
    else:
        full = vae.binarized_digits()[0][:1024]
    shard = np.array_split(full, count)[index]
    return run(workload, "auto", steps=10, data=shard)


def all_runs() -> dict:
    """Every comparison of tests/test_scale.py, in one process with 8 simulated devices."""
    from jax.sharding import Mesh

    two_axes = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "particles"))
    out = {f"{w}_{m}": run(w, None if m == "one" else ("auto" if m == "auto" else two_axes), steps=10)
           for w, m in (("vae", "one"), ("vae", "auto"), ("enum", "one"), ("enum", "auto"),
                        ("iwae", "one"), ("iwae", "particles"))}
    try:
        vi.fit(elbo(mix_model, mix_guide), (jnp.zeros(3), jnp.ones(3)), jnp.asarray(mixture_data()),
               num_steps=2, batch_size=60, key=0, progress=False, mesh="auto")
    except genvi.ConfigError as err:
        out["uneven"] = str(err)
    return out


if __name__ == "__main__":  # XLA_FLAGS=--xla_force_host_platform_device_count=8 python scale_worker.py
    print(json.dumps(all_runs()))
