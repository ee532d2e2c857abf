"""Data for the family: the paper's synthetic surface and the FunBaT real-data folds.

The real data (US-TEMP and Beijing PM2.5, five random 80/20 folds) live in
`../shared/data/funbat/` beside the repository (see its README); `GENVI_FUNBAT_DATA` overrides
the directory. Entries are given by each mode's rank index; as in the paper's configs these are
used as continuous coordinates rescaled to [0, 1] (US-TEMP) or [0, 10] (Beijing).
"""

from __future__ import annotations

import os
import pathlib
from typing import NamedTuple

import numpy as np

from genvi import ConfigError

from ._spec import TensorData, tensor_data

FILES = {"us_temp": ("us_temp_15x95x267.npz", 1.0), "beijing": ("beijing_pm25_428x501x1461.npz", 10.0)}


def data_dir() -> pathlib.Path | None:
    """The FunBaT data directory: `$GENVI_FUNBAT_DATA`, else `../shared/data/funbat` next to the
    repository (or next to its parent, for git worktrees); `None` when absent."""
    env = os.environ.get("GENVI_FUNBAT_DATA")
    if env:
        return pathlib.Path(env) if pathlib.Path(env).is_dir() else None
    repo = pathlib.Path(__file__).resolve().parents[2]
    for base in (repo.parent, repo.parent.parent):
        cand = base / "shared" / "data" / "funbat"
        if cand.is_dir():
            return cand
    return None


class Fold(NamedTuple):
    """One train/test split: `train` (a `TensorData`), test coordinates and values, mode sizes."""

    train: TensorData
    test_coords: np.ndarray
    test_y: np.ndarray
    ndims: tuple[int, ...]


def load_funbat(name: str, fold: int = 0, *, root: str | os.PathLike | None = None, full_grid: bool = False) -> Fold:
    """Load fold `fold` (0-4) of `"us_temp"` or `"beijing"` with coordinates rescaled.

    `full_grid=True` puts every index value of the data set on each mode's grid, observed in
    this fold's training entries or not (`tensor_data(..., grids=...)`): the same posterior,
    and every fold then has the same shapes, so the compiled programs are reused across folds.
    """
    if name not in FILES:
        raise ConfigError(f"load_funbat: unknown data set {name!r}; choose one of {sorted(FILES)}")
    if not 0 <= fold <= 4:
        raise ConfigError(f"load_funbat: fold must be 0..4, got {fold!r}")
    base = pathlib.Path(root) if root is not None else data_dir()
    if base is None or not (base / FILES[name][0]).is_file():
        raise ConfigError(f"load_funbat: {FILES[name][0]} not found (looked in {base}); set GENVI_FUNBAT_DATA "
                          "to the directory holding the FunBaT .npz files")
    fname, scale = FILES[name]
    with np.load(base / fname) as z:
        ndims = tuple(int(v) for v in z["ndims"])
        parts = {k: z[f"fold{fold}_{k}"] for k in ("tr_ind", "tr_y", "te_ind", "te_y")}
    to_coord = lambda ind: scale * ind / np.maximum(np.asarray(ndims) - 1, 1)  # noqa: E731
    grids = [scale * np.arange(n) / max(n - 1, 1) for n in ndims]  # the same arithmetic as to_coord
    train = tensor_data(to_coord(parts["tr_ind"]), parts["tr_y"].reshape(-1), grids=grids if full_grid else None)
    return Fold(train, to_coord(parts["te_ind"]).astype(np.float32),
                parts["te_y"].reshape(-1).astype(np.float32), ndims)


def surface(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The paper's synthetic f(x, y) = sin²(2πx) cos(2πx) e^(−2y) sin(1.5πy)."""
    return np.sin(2 * np.pi * x) ** 2 * np.cos(2 * np.pi * x) * np.exp(-2 * y) * np.sin(1.5 * np.pi * y)


class Synthetic(NamedTuple):
    """`train`/`test` entries of a random grid and a fresh grid of never-seen coordinates."""

    train: TensorData
    test_coords: np.ndarray
    test_y: np.ndarray
    unseen_coords: np.ndarray
    unseen_y: np.ndarray


def synthetic_surface(seed: int = 0, size: int = 15, num_grids: int = 6, train_fraction: float = 0.5) -> Synthetic:
    """The paper's synthetic benchmark: `surface` on `num_grids` random `size`×`size` grids of
    [0, 1]² (coordinates uniform; the official notebook concatenates six), a random
    `train_fraction` of all entries for training, no noise; plus one more random grid (inside the
    training range) whose coordinates were never seen."""
    rng = np.random.default_rng(seed)
    coords = []
    for _ in range(num_grids):
        xs, ys = rng.uniform(0, 1, size), rng.uniform(0, 1, size)
        gx, gy = np.meshgrid(xs, ys, indexing="ij")
        coords.append(np.stack([gx.ravel(), gy.ravel()], 1))
    coords = np.concatenate(coords)
    vals = surface(coords[:, 0], coords[:, 1])
    perm = rng.permutation(len(vals))
    n_tr = int(round(train_fraction * len(vals)))
    tr, te = perm[:n_tr], perm[n_tr:]
    train = tensor_data(coords[tr], vals[tr])
    ux = rng.uniform(train.grids[0][0], train.grids[0][-1], size)
    uy = rng.uniform(train.grids[1][0], train.grids[1][-1], size)
    ugx, ugy = np.meshgrid(ux, uy, indexing="ij")
    unseen = np.stack([ugx.ravel(), ugy.ravel()], 1)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return Synthetic(train, f32(coords[te]), f32(vals[te]), f32(unseen), f32(surface(unseen[:, 0], unseen[:, 1])))
