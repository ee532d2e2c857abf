"""Drift, diffusion and control functions: small equinox modules, or any callable of the same form.

- drift `b(t, x) -> (D,)`, diffusion `sigma(t, x) -> (D,)` (diagonal, positive);
- control `u(t, x, y, index) -> (D,)`: `y` is the (K, D) state of the OU processes, `index`
  the path's position in the data plate (per-path controls use it; networks may ignore it).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from genvi import ConfigError


class LinearDrift(eqx.Module):
    """b(t, x) = slope * x + offset (elementwise): the fractional Ornstein-Uhlenbeck drift.
    `trainable=False` stops its gradients (a fixed prior)."""

    slope: jax.Array
    offset: jax.Array
    trainable: bool = eqx.field(static=True, default=True)

    def __init__(self, slope, offset=0.0, trainable: bool = True):
        self.slope = jnp.asarray(slope, jnp.float32)
        self.offset = jnp.asarray(offset, jnp.float32)
        self.trainable = trainable

    def __call__(self, t, x):
        slope, offset = (self.slope, self.offset) if self.trainable else jax.lax.stop_gradient((self.slope, self.offset))
        return slope * x + offset


class ConstantDiffusion(eqx.Module):
    """sigma(t, x) = exp(log_scale), positive by construction; `scale` must be > 0.
    `trainable=False` stops its gradient."""

    log_scale: jax.Array
    trainable: bool = eqx.field(static=True, default=True)

    def __init__(self, scale, trainable: bool = True):
        self.trainable = trainable
        scale = np.asarray(scale, np.float64)
        if not np.all(scale > 0):
            raise ConfigError(f"ConstantDiffusion: scale must be positive, got {scale.tolist()}; "
                              "the diffusion of dX = b dt + sigma dB^H must be > 0")
        self.log_scale = jnp.log(jnp.asarray(scale, jnp.float32))

    def __call__(self, t, x):
        log_scale = self.log_scale if self.trainable else jax.lax.stop_gradient(self.log_scale)
        return jnp.broadcast_to(jnp.exp(log_scale), x.shape)


class MLPDrift(eqx.Module):
    """A neural drift b(t, x) = MLP([x, t])."""

    mlp: eqx.nn.MLP

    def __init__(self, dim: int, width: int = 32, depth: int = 2, *, key: jax.Array):
        self.mlp = eqx.nn.MLP(dim + 1, dim, width, depth, activation=jnp.tanh, key=key)

    def __call__(self, t, x):
        return self.mlp(jnp.concatenate([x, jnp.reshape(t, (1,))]))


class MLPDiffusion(eqx.Module):
    """A neural diagonal diffusion sigma(t, x) = softplus(MLP([x, t])) + floor, positive."""

    mlp: eqx.nn.MLP
    floor: float = eqx.field(static=True, default=1e-3)

    def __init__(self, dim: int, width: int = 16, depth: int = 1, floor: float = 1e-3, *, key: jax.Array):
        self.mlp = eqx.nn.MLP(dim + 1, dim, width, depth, activation=jnp.tanh, key=key)
        self.floor = floor

    def __call__(self, t, x):
        return jax.nn.softplus(self.mlp(jnp.concatenate([x, jnp.reshape(t, (1,))]))) + self.floor


def _zero_last_layer(mlp: eqx.nn.MLP) -> eqx.nn.MLP:
    last = mlp.layers[-1]
    last = eqx.tree_at(lambda l: (l.weight, l.bias), last, (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))
    return eqx.tree_at(lambda m: m.layers[-1], mlp, last)


class MLPControl(eqx.Module):
    """u(t, x, y) = MLP([x, y, t]) with a zero last layer, so the posterior starts at the prior."""

    mlp: eqx.nn.MLP

    def __init__(self, dim: int, num_processes: int, width: int = 32, depth: int = 2, *, key: jax.Array):
        mlp = eqx.nn.MLP(dim * (num_processes + 1) + 1, dim, width, depth, activation=jnp.tanh, key=key)
        self.mlp = _zero_last_layer(mlp)

    def __call__(self, t, x, y, index):
        return self.mlp(jnp.concatenate([x, y.ravel(), jnp.reshape(t, (1,))]))


class AffineControl(eqx.Module):
    """u_n(z) = scale_n * (offset[path, n] + gain[n] @ z) on each solver step n, z = (x, y) flattened.

    For a linear drift the exact posterior's control is affine in z, with a gain that depends
    only on the observation times and noise (shared by paths) and an offset that depends on the
    path's observations; this family contains the best Euler-chain control exactly (see
    `fbm_sde.family_optimum`). Zero at init.

    `floor` (with `obs_times`) preconditions it: scale_n = 1 / (tau_n + floor), tau_n the time from
    step n to the next observation. The optimal gain grows like 1/(remaining variance + noise^2)
    towards each observation (hundreds to thousands for precise data), which Adam, moving each
    parameter by about the learning rate per step, would take thousands of steps to reach; with
    the scale the trained parameters stay O(1). Without `floor`, scale_n = 1.
    """

    offset: jax.Array  # (paths, steps, D)
    gain: jax.Array  # (steps, D, D (K + 1))
    grid: tuple = eqx.field(static=True)
    scale: tuple = eqx.field(static=True)

    def __init__(self, grid, dim: int, num_processes: int, num_paths: int = 1, obs_times=None,
                 floor: float | None = None):
        self.grid = tuple(float(t) for t in grid)
        steps = len(self.grid) - 1
        self.offset = jnp.zeros((num_paths, steps, dim))
        self.gain = jnp.zeros((steps, dim, dim * (num_processes + 1)))
        self.scale = tuple(time_to_go_scale(self.grid, obs_times, floor).tolist()) if floor is not None else (1.0,) * steps

    def __call__(self, t, x, y, index):
        grid = jnp.asarray(self.grid[:-1], jnp.float32)
        n = jnp.clip(jnp.searchsorted(grid, t, side="right") - 1, 0, grid.shape[0] - 1)
        z = jnp.concatenate([x, y.ravel()])
        return jnp.asarray(self.scale, jnp.float32)[n] * (self.offset[index, n] + self.gain[n] @ z)

    def select_path(self, index) -> "AffineControl":
        """The control of path `index` alone (its offsets as path 0). `solve` calls this before the
        time loop: gathering `offset[index, n]` inside it, under the data plate's vmap, makes
        reverse mode accumulate a full (paths, steps) cotangent per path and step (17x slower
        for 32 paths x 1350 steps)."""
        return eqx.tree_at(lambda c: c.offset, self, self.offset[index][None])

    def effective(self) -> tuple[jax.Array, jax.Array]:
        """The control's per-step offset (paths, steps, D) and gain (steps, D, D (K + 1)), scale included."""
        s = jnp.asarray(self.scale, jnp.float32)
        return self.offset * s[None, :, None], self.gain * s[:, None, None]


def time_to_go_scale(grid, obs_times, floor: float) -> np.ndarray:
    """1 / (tau_n + floor) for each step n of `grid`, tau_n = next observation time - grid[n]."""
    if obs_times is None or not floor > 0:
        raise ConfigError(f"AffineControl: floor needs obs_times and floor > 0, got obs_times={obs_times}, floor={floor}")
    starts = np.asarray(grid, np.float64)[:-1]
    times = np.asarray(obs_times, np.float64)
    nxt = times[np.minimum(np.searchsorted(times, starts, side="right"), len(times) - 1)]
    return 1.0 / (np.maximum(nxt - starts, 0.0) + floor)
