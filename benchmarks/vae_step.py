"""One training step of the digits VAE: genvi's `objectives.elbo` against the same maths by hand.

Encoder 64-200-(2x10), decoder 10-200-64 (tanh MLPs, equinox), batch 128, Adam. Both steps are
jitted and draw their minibatch on device; they are timed in one process with interleaved blocks.
Prints the per-step and compile-time ratios (target: per step <= 1.05x hand-written).

    python benchmarks/vae_step.py [--rounds 30] [--block 50]
"""

from __future__ import annotations

import argparse
import json

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from _timing import compile_seconds, interleaved

import genvi.models.vae as vae
from genvi.objectives import elbo

BATCH = 128


def hand_written_elbo(params, key, x):
    """The same ELBO as `elbo(vae.model, vae.guide)`, written directly in JAX."""
    decoder, encoder = params
    loc, log_scale = jnp.split(jax.vmap(encoder)(x), 2, axis=-1)
    eps = jax.random.normal(key, loc.shape)
    z = loc + jnp.exp(log_scale) * eps
    logits = jax.vmap(decoder)(z)
    log_lik = jnp.sum(x * logits - jax.nn.softplus(logits))
    log_prior = jnp.sum(-0.5 * z ** 2 - 0.5 * jnp.log(2 * jnp.pi))
    log_q = jnp.sum(-0.5 * eps ** 2 - log_scale - 0.5 * jnp.log(2 * jnp.pi))
    return log_lik + log_prior - log_q


def make_step(value_and_grad, data, optimizer, static):
    n = data.shape[0]

    def step(carry):
        params, opt_state, key = carry
        key, k_batch, k_est = jax.random.split(key, 3)
        batch = data[jax.random.randint(k_batch, (BATCH,), 0, n)]
        value, grads = value_and_grad(eqx.combine(params, static), k_est, batch)
        grads = jax.tree.map(jnp.negative, eqx.filter(grads, eqx.is_inexact_array))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, key

    return step


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--block", type=int, default=50)
    args = parser.parse_args()

    train, _ = vae.binarized_digits()
    data = jnp.asarray(train)
    net = vae.VAE(jax.random.PRNGKey(0))
    params, static = eqx.partition(net.params, eqx.is_inexact_array)
    optimizer = optax.adam(1e-3)
    objective = elbo(vae.model, vae.guide)

    steps = {
        "genvi": make_step(lambda p, k, x: objective.value_and_grad_estimate(k, p, x), data, optimizer, static),
        "hand-written": make_step(eqx.filter_value_and_grad(hand_written_elbo), data, optimizer, static),
    }
    init = (params, optimizer.init(params), jax.random.PRNGKey(1))
    compiled, compile_time = {}, {}
    for name, step in steps.items():
        compiled[name], compile_time[name] = compile_seconds(step, init)
    per_step = interleaved(compiled, {name: init for name in steps}, rounds=args.rounds, block=args.block)

    ratio = per_step["genvi"] / per_step["hand-written"]
    compile_ratio = compile_time["genvi"] / compile_time["hand-written"]
    print("| implementation | per step (us) | compile (s) |")
    print("| --- | --- | --- |")
    for name in steps:
        print(f"| {name} | {per_step[name] * 1e6:.1f} | {compile_time[name]:.2f} |")
    print(f"per-step ratio genvi / hand-written: {ratio:.3f}  "
          f"({'PASS' if ratio <= 1.05 else 'MISS'}: target <= 1.05)")
    print(f"compile ratio genvi / hand-written: {compile_ratio:.2f}")
    result = {"per_step_s": per_step, "compile_s": compile_time, "ratio": ratio, "compile_ratio": compile_ratio}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
