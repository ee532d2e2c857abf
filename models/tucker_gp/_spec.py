"""The model specification and the entry data both inference routes share.

`TuckerGP` holds the static choices (ranks, kernel and its hyperparameters per mode, CP or Tucker
core, priors). `tensor_data(coords, y)` turns continuous coordinates into each mode's sorted
unique grid plus integer positions: duplicates are merged into one state (one unique coordinate,
one state of the chain, however many entries share it), unsorted input is sorted.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from genvi import ConfigError, ShapeError

from ._ssm import KERNELS, ModePrior, StateSpace, check_kernel, matern_sde, mode_prior


def _per_mode(value, k: int, name: str) -> tuple:
    vals = tuple(value) if isinstance(value, (tuple, list)) else (value,) * k
    if len(vals) != k:
        raise ShapeError(f"TuckerGP: {name} has {len(vals)} entries but ranks has {k} modes; give one per mode")
    return vals


class TuckerGP(eqx.Module):
    """Functional Bayesian Tucker decomposition (FunBaT): `y = vec(W)ᵀ ⊗_k u^k(t_k) + ε`.

    **Arguments:**

    - `ranks`: R_k per mode, e.g. `(3, 3, 3)`; the number of modes K is its length.
    - `kernel`: `"matern12"`, `"matern32"` or `"matern52"` (one, or one per mode).
    - `lengthscale`, `variance`: the Matérn hyperparameters (one, or one per mode), fixed.
    - `cp`: the CP special case (W the superdiagonal all-ones tensor; all ranks equal).
    - `core_var`: prior variance of each core entry, `vec(W) ~ N(0, core_var I)`.
    - `a0`, `b0`: `τ ~ Gamma(a0, b0)`, the noise precision.
    """

    ranks: tuple[int, ...] = eqx.field(static=True)
    kernel: tuple[str, ...] = eqx.field(static=True)
    lengthscale: tuple[float, ...] = eqx.field(static=True)
    variance: tuple[float, ...] = eqx.field(static=True)
    cp: bool = eqx.field(static=True)
    core_var: float = eqx.field(static=True)
    a0: float = eqx.field(static=True)
    b0: float = eqx.field(static=True)

    def __init__(self, ranks, *, kernel="matern32", lengthscale=0.1, variance=1.0, cp: bool = False,
                 core_var: float = 1.0, a0: float = 1.0, b0: float = 1.0):
        given = ranks
        ranks = tuple(ranks) if isinstance(ranks, (tuple, list)) else ()
        if not ranks:
            raise ConfigError("TuckerGP: ranks must be a non-empty tuple of ints >= 1, one per mode, "
                              f"e.g. (3, 3, 3); got {given!r}")
        for k, r in enumerate(ranks):
            if not isinstance(r, (int, np.integer)) or isinstance(r, bool) or r < 1:
                raise ConfigError(f"TuckerGP: rank of mode {k} must be an int >= 1, got {r!r}")
        if cp and len(set(ranks)) != 1:
            raise ConfigError(f"TuckerGP(cp=True): a CP model has one rank for every mode, got ranks={ranks}")
        K = len(ranks)
        self.ranks = tuple(int(r) for r in ranks)
        self.kernel = _per_mode(kernel, K, "kernel")
        self.lengthscale = tuple(float(v) for v in _per_mode(lengthscale, K, "lengthscale"))
        self.variance = tuple(float(v) for v in _per_mode(variance, K, "variance"))
        for k in range(K):
            check_kernel(self.kernel[k], self.lengthscale[k], self.variance[k], f"TuckerGP mode {k}")
        for name, v in (("core_var", core_var), ("a0", a0), ("b0", b0)):
            if not (np.isfinite(v) and v > 0):
                raise ConfigError(f"TuckerGP: {name} must be positive and finite, got {v!r}")
        self.cp, self.core_var, self.a0, self.b0 = bool(cp), float(core_var), float(a0), float(b0)

    @property
    def num_modes(self) -> int:
        return len(self.ranks)

    def state_dim(self, k: int) -> int:
        """D_k = R_k × d_k, the state size of mode k's chain."""
        return self.ranks[k] * KERNELS[self.kernel[k]]

    def sde(self, k: int, dtype=jnp.float32) -> StateSpace:
        return matern_sde(self.kernel[k], self.lengthscale[k], self.variance[k], dtype)

    def priors(self, grids, dtype=jnp.float32) -> list[ModePrior]:
        """Each mode's Gauss-Markov prior over its grid of unique coordinates."""
        return [mode_prior(self.sde(k, dtype), g, self.ranks[k]) for k, g in enumerate(grids)]


class TensorData(NamedTuple):
    """Entries of a continuous-indexed tensor, ready for either route.

    `grids[k]` (n_k,) sorted unique coordinates of mode k; `index` (N, K) int32 positions into
    them; `y` (N,) values; `coords` (N, K) the original coordinates.
    """

    grids: tuple[np.ndarray, ...]
    index: np.ndarray
    y: np.ndarray
    coords: np.ndarray


def check_coords(coords, num_modes: int | None, where: str) -> np.ndarray:
    """Validate an (N, K) coordinate array: finite, two-dimensional, K modes."""
    c = np.asarray(coords)
    if c.ndim != 2:
        raise ShapeError(f"{where}: coordinates must be an (entries, modes) array, got shape {c.shape}")
    if num_modes is not None and c.shape[1] != num_modes:
        raise ShapeError(f"{where}: coordinates have {c.shape[1]} modes (columns) but the model has "
                         f"{num_modes} (len(ranks)); give one column per mode")
    if not np.issubdtype(c.dtype, np.number):
        raise ShapeError(f"{where}: coordinates must be numeric, got dtype {c.dtype}")
    bad = ~np.isfinite(c)
    if bad.any():
        modes = sorted(set(np.nonzero(bad)[1].tolist()))
        raise ConfigError(f"{where}: {int(bad.sum())} coordinates are NaN or infinite (modes {modes}, first "
                          f"at entry {int(np.nonzero(bad.any(1))[0][0])}); drop or impute those entries")
    return c.astype(np.float64)


def tensor_data(coords, y, *, num_modes: int | None = None, grids=None, dtype=np.float32) -> TensorData:
    """Sort and merge each mode's coordinates into a grid; map entries to grid positions.

    **Arguments:** `coords` (N, K) continuous coordinates (any order, duplicates allowed);
    `y` (N,) values; `num_modes` the model's K, checked if given; `grids` optional explicit
    grids, one strictly increasing array per mode holding every coordinate of that mode (a
    superset of the observed ones: states at unobserved grid points leave the GP prior of the
    observed ones unchanged, so the posterior is the same; fixed grids let data sets of the
    same index set share shapes and hence compiled programs).
    """
    c = check_coords(coords, num_modes, "tensor_data")
    yv = np.asarray(y)
    if yv.shape != (c.shape[0],):
        raise ShapeError(f"tensor_data: y must have shape ({c.shape[0]},) to match the coordinates' "
                         f"{c.shape[0]} entries, got {yv.shape}")
    if not np.all(np.isfinite(yv)):
        raise ConfigError(f"tensor_data: y has {int((~np.isfinite(yv)).sum())} NaN or infinite values")
    if c.shape[0] == 0:
        raise ShapeError("tensor_data: no entries given")
    if grids is not None and len(grids) != c.shape[1]:
        raise ShapeError(f"tensor_data: {len(grids)} grids given for {c.shape[1]} modes; give one grid per mode")
    out_grids, index = [], []
    for k in range(c.shape[1]):
        if grids is None:
            g, inv = np.unique(c[:, k], return_inverse=True)  # sorts and merges duplicates
        else:
            g = check_grid(grids[k], f"tensor_data grids[{k}]").astype(dtype).astype(np.float64)
            inv = np.clip(np.searchsorted(g, c[:, k].astype(dtype)), 0, len(g) - 1)
            missing = g[inv] != c[:, k].astype(dtype)
            if missing.any():
                i = int(np.nonzero(missing)[0][0])
                raise ConfigError(f"tensor_data: {int(missing.sum())} coordinates of mode {k} are not on grids[{k}] "
                                  f"(first: entry {i}, {c[i, k]!r}); give a grid holding every coordinate")
        out_grids.append(g.astype(dtype))
        index.append(inv.reshape(-1).astype(np.int32))
    return TensorData(tuple(out_grids), np.stack(index, 1), yv.astype(dtype), c.astype(dtype))


def check_grid(grid, where: str) -> np.ndarray:
    """A grid given directly (not built by `tensor_data`) must be finite and strictly increasing."""
    g = np.asarray(grid, dtype=np.float64)
    if g.ndim != 1 or g.size == 0:
        raise ShapeError(f"{where}: a grid is a non-empty 1-D array, got shape {g.shape}")
    if not np.all(np.isfinite(g)):
        raise ConfigError(f"{where}: grid has NaN or infinite coordinates")
    steps = np.diff(g)
    if np.any(steps <= 0):
        i = int(np.nonzero(steps <= 0)[0][0])
        kind = "a duplicate" if steps[i] == 0 else "unsorted"
        raise ConfigError(f"{where}: grid must be strictly increasing but is {kind} at positions {i}, {i + 1} "
                          f"({g[i]!r}, {g[i + 1]!r}); build it with tensor_data(...), which sorts and merges")
    return g
