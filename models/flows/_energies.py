"""The 2-D unnormalised energies of Rezende & Mohamed (2015), Table 1, and how to fit a flow to
them with the paper's annealed objective.

`p(z) ∝ exp(-U(z))` with

- `U1 = ½((|z| - 2) / 0.4)² - log(exp(-½((z1 - 2) / 0.6)²) + exp(-½((z1 + 2) / 0.6)²))`
- `U2 = ½((z2 - w1(z1)) / 0.4)²`
- `U3 = -log(exp(-½((z2 - w1) / 0.35)²) + exp(-½((z2 - w1 + w2) / 0.35)²))`
- `U4 = -log(exp(-½((z2 - w1) / 0.4)²) + exp(-½((z2 - w1 + w3) / 0.35)²))`

with `w1 = sin(2π z1 / 4)`, `w2 = 3 exp(-½((z1 - 1) / 0.6)²)`, `w3 = 3 σ((z1 - 1) / 0.3)`.
U2–U4 do not confine `z1` (they are not normalisable); `energy(name, confined=True)` adds
`z1² / (2·2²)` (a N(0, 2²) factor on `z1`), which makes them proper so that
`KL(q‖p) = -ELBO + log Z` is defined (U1 is proper and left as it is).

The annealed objective is genvi's own `elbo` on a model whose only term is
`factor("energy", -beta * U(z))` with `beta` the model's parameter: `fit_annealed` passes
`beta_t = min(1, 0.01 + t / 10000)` (the paper's schedule) at each step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd
import optax
from numpyro.distributions import constraints

from genvi import ConfigError, Expectation, factor, gen, sample

_NAMES = ("U1", "U2", "U3", "U4")


def _w1(z):
    return jnp.sin(2.0 * jnp.pi * z[..., 0] / 4.0)


def _w2(z):
    return 3.0 * jnp.exp(-0.5 * ((z[..., 0] - 1.0) / 0.6) ** 2)


def _w3(z):
    return 3.0 * jax.nn.sigmoid((z[..., 0] - 1.0) / 0.3)


def _u1(z):
    r = jnp.sqrt(jnp.sum(z ** 2, -1))
    modes = jnp.logaddexp(-0.5 * ((z[..., 0] - 2.0) / 0.6) ** 2, -0.5 * ((z[..., 0] + 2.0) / 0.6) ** 2)
    return 0.5 * ((r - 2.0) / 0.4) ** 2 - modes


def _u2(z):
    return 0.5 * ((z[..., 1] - _w1(z)) / 0.4) ** 2


def _u3(z):
    a = -0.5 * ((z[..., 1] - _w1(z)) / 0.35) ** 2
    b = -0.5 * ((z[..., 1] - _w1(z) + _w2(z)) / 0.35) ** 2
    return -jnp.logaddexp(a, b)


def _u4(z):
    a = -0.5 * ((z[..., 1] - _w1(z)) / 0.4) ** 2
    b = -0.5 * ((z[..., 1] - _w1(z) + _w3(z)) / 0.35) ** 2
    return -jnp.logaddexp(a, b)


_ENERGIES = dict(zip(_NAMES, (_u1, _u2, _u3, _u4)))


def energy(name: str, confined: bool = False) -> Callable[[jax.Array], jax.Array]:
    """The energy `U(z)` (`z` of shape `[..., 2]`); `confined=True` adds `z1²/8` to U2–U4."""
    if name not in _ENERGIES:
        raise ConfigError(f"energy: name must be one of {_NAMES}, got {name!r}")
    u = _ENERGIES[name]
    if not confined or name == "U1":
        return u
    return lambda z: u(z) + z[..., 0] ** 2 / 8.0


def log_normaliser(u: Callable[[jax.Array], jax.Array], half_width: float = 14.0, n: int = 2801) -> float:
    """`log ∫ exp(-U(z)) dz` by a 2-D Riemann sum on `[-half_width, half_width]²` (`n²` points;
    the integrands are smooth and negligible at the edges, so the sum is accurate to ~1e-6)."""
    grid = np.linspace(-half_width, half_width, n)
    cell = (grid[1] - grid[0]) ** 2
    z2 = jnp.asarray(grid, jnp.float32)
    rows = jax.jit(jax.vmap(lambda z1: jax.scipy.special.logsumexp(-u(jnp.stack([jnp.full_like(z2, z1), z2], -1)))))
    return float(jax.scipy.special.logsumexp(rows(jnp.asarray(grid, jnp.float32))) + np.log(cell))


def energy_model(u: Callable[[jax.Array], jax.Array]):
    """A genvi model `model(beta)` for `p(z) ∝ exp(-beta U(z))`: an improper flat site `"z"` and a
    factor. `elbo(energy_model(u), guide)` is then the paper's annealed objective
    `E_q[-beta U(z) - log q(z)]` (the model parameter `beta` is not trained: its gradient is
    stopped)."""

    @gen
    def model(beta):
        z = sample("z", nd.ImproperUniform(constraints.real_vector, (), (2,)))
        factor("energy", -jax.lax.stop_gradient(beta) * u(z))

    return model


def paper_schedule(t: jax.Array) -> jax.Array:
    """`beta_t = min(1, 0.01 + t / 10000)` (Rezende & Mohamed 2015, section 6.1)."""
    return jnp.minimum(1.0, 0.01 + t / 10000.0)


def fit_annealed(objective: Expectation, guide_params: Any, *, num_steps: int, key: jax.Array | int,
                 optimizer: optax.GradientTransformation | None = None,
                 schedule: Callable[[jax.Array], jax.Array] = paper_schedule, chunk: int = 500):
    """Maximise `objective((schedule(t), guide_params))` by gradient ascent with an annealed
    model parameter; returns `(guide_params, losses)` (losses = -objective per step).

    A short `lax.scan` loop around `objective.value_and_grad_estimate` (`genvi.vi.fit` keeps its
    objective's arguments fixed, and the schedule changes the model's at every step).
    """
    if num_steps < 1:
        raise ConfigError(f"fit_annealed: num_steps must be >= 1, got {num_steps}")
    optimizer = optimizer if optimizer is not None else optax.adam(1e-3)
    key = jax.random.PRNGKey(key) if isinstance(key, int) else key
    dynamic, static = eqx.partition(guide_params, eqx.is_inexact_array)

    def step(carry, t):
        params, opt_state, key = carry
        key, sub = jax.random.split(key)
        beta = schedule(t.astype(jnp.float32))
        value, grads = objective.value_and_grad_estimate(sub, (beta, eqx.combine(params, static)))
        grads = eqx.filter(grads[1], eqx.is_inexact_array)
        updates, opt_state = optimizer.update(jax.tree.map(jnp.negative, grads), opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, key), -value

    run = jax.jit(lambda carry, ts: jax.lax.scan(step, carry, ts))
    carry, losses = (dynamic, optimizer.init(dynamic), key), []
    for start in range(0, num_steps, chunk):
        carry, chunk_losses = run(carry, jnp.arange(start, min(start + chunk, num_steps)))
        losses.append(np.asarray(chunk_losses))
    return eqx.combine(carry[0], static), np.concatenate(losses)
