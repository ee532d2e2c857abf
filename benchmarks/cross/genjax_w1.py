"""W1 in GenJAX 0.10.3 (in its own venv, beside jax 0.5.3), normalised by hand-written JAX there.

Two GenJAX programs of the digits VAE (reparameterised ELBO, batch 128, Adam), both with
`genjax.vi.ELBO` and a `genjax.marginal` guide using `genjax.vi.mv_normal_diag_reparam`:

- "genjax (examples layout)": one data point per program, the gradient estimator `jax.vmap`ped
  over the batch, as GenJAX's VAE examples do;
- "genjax (one batched program)": one program over the whole batch (`[B, L]` latents).

The baseline is the same ELBO written directly in JAX, in this same process and jax version,
with the same plain-JAX MLPs and Adam. Ratios compare with genvi's W1 ratio to its own hand-
written baseline (`benchmarks/run.py`), so they stay comparable across jax versions.

    bash benchmarks/cross/setup.sh genjax
    /tmp/genjax-venv/bin/python benchmarks/cross/genjax_w1.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import genjax
import jax
import jax.numpy as jnp
from _common import (BATCH, LATENT, binarized_digits, compile_seconds, descent_step, hand_written_elbo,
                     interleaved, mlp, report, vae_params)
from genjax import ChoiceMapBuilder as C
from genjax.inference.vi import ELBO, mv_normal_diag_reparam


_TREEDEF: dict = {}


def _unflattening(make_target):
    """GenJAX 0.10.3's `expectation` calls `make_target` with the flattened leaves of the
    arguments; rebuild `(decoder, encoder, x)` from them (the structure is recorded at call time)."""

    def wrapped(*leaves):
        return make_target(*jax.tree.unflatten(_TREEDEF["args"], leaves))

    return wrapped


def _record(args):
    _TREEDEF["args"] = jax.tree.structure(args)
    return args


def per_point_programs():
    """The examples layout: a model and a marginal guide of one data point."""

    @genjax.gen
    def model(decoder, encoder, x):
        z = genjax.mv_normal_diag(jnp.zeros(LATENT), jnp.ones(LATENT)) @ "z"
        genjax.bernoulli(mlp(decoder, z)) @ "x"

    @genjax.marginal()
    @genjax.gen
    def guide(target):
        _, encoder, x = target.args
        loc, log_scale = jnp.split(mlp(encoder, x), 2)
        mv_normal_diag_reparam(loc, jnp.exp(log_scale)) @ "z"

    grad_one = ELBO(guide, _unflattening(lambda decoder, encoder, x:
                                         genjax.Target(model, (decoder, encoder, x), C["x"].set(x))))

    def loss_grad(params, key, batch):
        decoder, encoder = params
        keys = jax.random.split(key, batch.shape[0])
        g_dec, g_enc, _ = jax.vmap(grad_one, in_axes=(0, (None, None, 0)))(
            keys, _record((decoder, encoder, batch)))
        # per-point gradients of -ELBO_n; the batch loss is their sum
        return jax.tree.map(lambda g: jnp.sum(g, 0), (g_dec, g_enc))

    return loss_grad


def batched_programs():
    """One program over the whole batch: `[B, L]` latents, `[B, 64]` pixels."""

    @genjax.gen
    def model(decoder, encoder, x):
        z = genjax.mv_normal_diag(jnp.zeros((x.shape[0], LATENT)), jnp.ones((x.shape[0], LATENT))) @ "z"
        genjax.bernoulli(mlp(decoder, z)) @ "x"

    @genjax.marginal()
    @genjax.gen
    def guide(target):
        _, encoder, x = target.args
        loc, log_scale = jnp.split(mlp(encoder, x), 2, axis=-1)
        mv_normal_diag_reparam(loc, jnp.exp(log_scale)) @ "z"

    grad_all = ELBO(guide, _unflattening(lambda decoder, encoder, x:
                                         genjax.Target(model, (decoder, encoder, x), C["x"].set(x))))

    def loss_grad(params, key, batch):
        g_dec, g_enc, _ = grad_all(key, _record((*params, batch)))
        return g_dec, g_enc

    return loss_grad


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path, default=Path(__file__).resolve().parent.parent / "results" / "genjax_w1.json")
    args = parser.parse_args()
    rounds, block = (7, 10) if args.quick else (25, 30)
    data = jnp.asarray(binarized_digits())
    params = vae_params()
    hand_grad = jax.grad(lambda p, k, x: -hand_written_elbo(p, k, x))
    impls = {"hand-written JAX": hand_grad, "genjax (examples layout)": per_point_programs(),
             "genjax (one batched program)": batched_programs()}
    compiled, compile_time, states = {}, {}, {}
    for name, loss_grad in impls.items():
        step, make_init = descent_step(loss_grad, data)
        states[name] = make_init(params)
        compiled[name], compile_time[name] = compile_seconds(step, states[name])
    per_step = interleaved(compiled, states, rounds=rounds, block=block)
    return report("genjax_w1", per_step, compile_time, "hand-written JAX",
                  {"jax": jax.__version__, "genjax": genjax.__version__ if hasattr(genjax, "__version__") else "0.10.3",
                   "batch": BATCH, "rounds": rounds, "block": block}, args.json)


if __name__ == "__main__":
    main()
