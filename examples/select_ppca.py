"""Choose the number of principal components of your data by ELBO (probabilistic PCA).

Fits PPCA with k = 1..kmax components (priors on loadings, noise and latents; the loading prior
scale learned), from several restarts each, and keeps the k with the largest final ELBO
(`genvi.vi.select`). Prints the table (best and mean ± se of the final ELBO, IWAE evidence) and
saves the ELBO-vs-k plot.

    python examples/select_ppca.py --csv my_data.csv [--kmax 10] [--out ppca_select.png]
    python examples/select_ppca.py                  # generated data: d = 25, true k = 5

The CSV holds one row per observation and one numeric column per feature (a header row is
skipped if it is not numeric); columns are standardised before fitting.
"""

from __future__ import annotations

import argparse
import functools
import pathlib

import jax.numpy as jnp
import numpy as np
import optax

import genvi.models.ppca as ppca
import genvi.vi as vi
from genvi import ConfigError, ShapeError
from genvi.objectives import elbo


def load(path: str | None, seed: int = 0) -> np.ndarray:
    if path is None:
        rng = np.random.default_rng(seed)
        basis = np.linalg.qr(rng.normal(size=(25, 25)))[0][:, :5]
        return rng.normal(size=(500, 5)) @ (3 * basis).T + rng.normal(size=(500, 25))
    if not pathlib.Path(path).is_file():
        raise ConfigError(f"--csv {path!r}: no such file")
    text = pathlib.Path(path).read_text().splitlines()
    first = text[0].split(",") if text else []
    try:
        [float(v) for v in first]
        skip = 0
    except ValueError:
        skip = 1  # a header
    x = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2)
    if not np.all(np.isfinite(x)):
        raise ShapeError(f"--csv {path!r}: {int((~np.isfinite(x)).sum())} missing or non-finite entries; "
                         "impute or drop them first")
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", help="rows = observations, columns = numeric features")
    parser.add_argument("--kmax", type=int, default=10)
    parser.add_argument("--restarts", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--out", default="ppca_select.png")
    args = parser.parse_args()
    x = load(args.csv)
    n, d = x.shape
    if not 1 <= args.kmax < d:
        raise ConfigError(f"--kmax {args.kmax}: must be between 1 and d - 1 = {d - 1}")
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    x = jnp.asarray(x, jnp.float32)
    print(f"data: {n} rows x {d} features ({args.csv or 'generated, true k = 5'})")
    objective = functools.partial(elbo, analytic_kl=True)
    candidates = {k: ppca.candidate(k, x, width=args.kmax) for k in range(1, args.kmax + 1)}  # one batch
    result = vi.select(candidates, x, objective=objective, criterion=objective, restarts=args.restarts,
                       num_steps=args.steps, key=0, optimizer=optax.adam(args.lr), eval_particles=128,
                       evidence_particles=256)
    print(result.table().replace("| candidate |", "| k |"))
    ties = f"; tied within standard error: k = {', '.join(map(str, result.ties))}" if result.ties else ""
    print(f"\nchosen: k = {result.winner}{ties}")
    fig = result.plot()
    fig.axes[0].set_xlabel("k (components)")
    fig.savefig(args.out, dpi=120)
    print(f"plot: {args.out}")


if __name__ == "__main__":
    main()
