"""A Brownian path with its increments drawn up front on the solver's fixed grid.

diffrax's `VirtualBrownianTree` answers any query by descending a binary tree (about 25x the cost
of the whole Euler step here); `UnsafeBrownianPath` is fast but refuses reverse-mode autodiff.
With fixed steps the solver only ever asks for increments between grid points, so drawing them
once, `W(t_{n+1}) - W(t_n) ~ N(0, t_{n+1} - t_n)`, and answering by lookup is exact, cheap and
differentiable. Between grid points W is linearly interpolated (never queried by Euler/Milstein).
"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp


class GridBrownianPath(diffrax.AbstractBrownianPath):
    """Brownian motion sampled on `grid` (shape (n + 1,)) with values `values` (shape (n + 1, D))."""

    grid: jax.Array
    values: jax.Array
    levy_area: type = diffrax.BrownianIncrement

    def __init__(self, grid, shape: tuple[int, ...], *, key: jax.Array):
        self.grid = jnp.asarray(grid, jnp.float32)
        steps = jax.random.normal(key, (self.grid.shape[0] - 1, *shape))
        steps = steps * jnp.sqrt(jnp.diff(self.grid)).reshape((-1,) + (1,) * len(shape))
        self.values = jnp.concatenate([jnp.zeros((1, *shape)), jnp.cumsum(steps, axis=0)])

    @property
    def t0(self):
        return self.grid[0]

    @property
    def t1(self):
        return self.grid[-1]

    def _at(self, t):
        flat = self.values.reshape(self.values.shape[0], -1)
        out = jax.vmap(lambda column: jnp.interp(t, self.grid, column), in_axes=1)(flat)
        return out.reshape(self.values.shape[1:])

    def evaluate(self, t0, t1=None, left: bool = True, use_levy: bool = False):
        if use_levy:
            raise ValueError("GridBrownianPath has no Levy area; use brownian='virtual'")
        if t1 is None:
            return self._at(t0)
        return self._at(t1) - self._at(t0)
