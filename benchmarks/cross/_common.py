"""Shared by the cross-environment runners: digits, tanh MLPs and Adam in plain JAX.

These scripts run in their own virtual environments (GenJAX needs jax 0.5.3; Pyro needs torch),
where genvi, equinox and optax may be absent, so the networks and the optimiser are written
here in plain JAX; the hand-written baseline and the library under test use the same ones.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _timing import compile_seconds, interleaved  # noqa: E402,F401

BATCH, HIDDEN, LATENT, DATA_DIM = 128, 200, 10, 64
LOG_2PI = float(np.log(2 * np.pi))


def binarized_digits() -> np.ndarray:
    """The same train split as `genvi.models.vae.binarized_digits` (pixels >= 8, seed-0 permutation)."""
    from sklearn.datasets import load_digits

    x = (load_digits().data >= 8).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    return x[order[int(round(0.2 * len(x))):]]


def mlp_init(key, sizes):
    """`[(W, b), ...]` for a tanh MLP (Glorot-uniform-like scale)."""
    layers = []
    for k, (m, n) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
        lim = 1.0 / np.sqrt(m)
        layers.append((jax.random.uniform(k, (m, n), minval=-lim, maxval=lim), jnp.zeros(n)))
    return tuple(layers)


def mlp(layers, x):
    for w, b in layers[:-1]:
        x = jnp.tanh(x @ w + b)
    w, b = layers[-1]
    return x @ w + b


def vae_params(seed: int = 0):
    """`(decoder, encoder)`: 10-200-64 and 64-200-20 tanh MLPs."""
    kd, ke = jax.random.split(jax.random.PRNGKey(seed))
    return mlp_init(kd, (LATENT, HIDDEN, DATA_DIM)), mlp_init(ke, (DATA_DIM, HIDDEN, 2 * LATENT))


def hand_written_elbo(params, key, x):
    """The VAE's ELBO summed over a batch, written directly in JAX."""
    decoder, encoder = params
    loc, log_scale = jnp.split(mlp(encoder, x), 2, axis=-1)
    eps = jax.random.normal(key, loc.shape)
    z = loc + jnp.exp(log_scale) * eps
    logits = mlp(decoder, z)
    log_lik = jnp.sum(x * logits - jax.nn.softplus(logits))
    log_prior = jnp.sum(-0.5 * z ** 2 - 0.5 * LOG_2PI)
    log_q = jnp.sum(-0.5 * eps ** 2 - log_scale - 0.5 * LOG_2PI)
    return log_lik + log_prior - log_q


def adam(lr: float = 1e-3, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
    """`(init, update)` of Adam on pytrees; `update(grads, state, params) -> (params, state)` descends."""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return zeros, zeros, jnp.zeros((), jnp.int32)

    def update(grads, state, params):
        m, v, t = state
        t = t + 1
        m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
        v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        params = jax.tree.map(lambda p, m, v: p - lr * (m / c1) / (jnp.sqrt(v / c2) + eps), params, m, v)
        return params, (m, v, t)

    return init, update


def descent_step(loss_grad, data, seed: int = 1):
    """`(step, init_state)`: `loss_grad(params, key, batch) -> grads` of a loss, Adam, batch drawn on device."""
    init, update = adam()
    n = data.shape[0]

    def step(state):
        params, opt_state, key = state
        key, k_batch, k_est = jax.random.split(key, 3)
        batch = data[jax.random.randint(k_batch, (BATCH,), 0, n)]
        grads = loss_grad(params, k_est, batch)
        params, opt_state = update(grads, opt_state, params)
        return params, opt_state, key

    def make_init(params):
        return params, init(params), jax.random.PRNGKey(seed)

    return step, make_init


def report(name: str, per_step: dict, compile_time: dict, baseline: str, extra: dict, out: Path | None):
    """Print the markdown table and ratios to `baseline`; write JSON to `out`."""
    print("| implementation | per step (us) | vs " + baseline + " | first call (s) |")
    print("| --- | --- | --- | --- |")
    for impl in per_step:
        print(f"| {impl} | {per_step[impl] * 1e6:.1f} | {per_step[impl] / per_step[baseline]:.2f}x | "
              f"{compile_time.get(impl, float('nan')):.2f} |")
    result = {"name": name, "per_step_s": per_step, "compile_s": compile_time, "baseline": baseline,
              "ratios": {impl: per_step[impl] / per_step[baseline] for impl in per_step}, **extra}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        print(f"wrote {out}")
    return result
