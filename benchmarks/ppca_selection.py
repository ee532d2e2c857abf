"""ELBO-based choice of the PPCA dimension against Minka, BIC and Bayesian PCA (ARD).

Reproduces the illustration of Chérief-Abdellatif, "Consistency of ELBO maximization for model
selection" (AABI 2019): fit PPCA with k = 1..kmax components by maximising the ELBO (priors on
loadings, noise and latents; latents collapsed; mean-field guide; the loading prior scale learned
by type-II maximisation) and keep the k with the largest final ELBO. Data: d = 25, true k = 5.

- (a) clear signal: loadings 3 x orthonormal columns, N(0, 1) noise;
- (b) scikit-learn's "Model selection with Probabilistic PCA and Factor Analysis" data:
  orthonormal loadings (scale 1), sigma = 1, n = 500 (weak signal);
- (c) heteroscedastic: (b)'s signal, per-feature sigma ~ U[sigma/2, 3 sigma/2] (that example's);
- (d) Student-t noise: (a)'s signal, t with 3 degrees of freedom.

Every data set of one n is fitted at once (`select(..., datasets=True)`: restarts and seeds
vectorised). Prints the chosen-k distribution per method, the PASS/MISS targets, the sensitivity
to the loading prior scale and the ELBO-vs-k curve on scikit-learn's wine data.

    python benchmarks/ppca_selection.py [--quick]
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import functools
import multiprocessing
import sys
import time

import jax.numpy as jnp
import numpy as np
import optax

import genvi.models.ppca as ppca
import genvi.vi as vi
from genvi.objectives import elbo

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _ppca_baselines import ard_bayesian_pca, bic_ml_ppca, minka_mle  # noqa: E402

D, RANK = 25, 5
CELLS = {"a": "clear signal (loading scale 3)", "b": "sklearn weak signal (sigma = 1)",
         "c": "heteroscedastic noise", "d": "Student-t noise (df 3)"}
analytic = functools.partial(elbo, analytic_kl=True)


def generate(cell: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([ord(cell), n, seed])
    basis = np.linalg.svd(rng.normal(size=(D, D)))[0][:, :RANK]
    scale = 3.0 if cell in ("a", "d") else 1.0
    signal = rng.normal(size=(n, RANK)) @ (scale * basis).T
    if cell == "c":
        return signal + rng.normal(size=(n, D)) * (rng.random(D) + 0.5)
    if cell == "d":
        return signal + rng.standard_t(3, size=(n, D))
    return signal + rng.normal(size=(n, D))


PRIORS = {"learned (type-II)": "learned", "fixed small (0.1)": 0.1, "fixed broad (10)": 10.0}


def elbo_choices(x: np.ndarray, kmax: int, args, priors: tuple[str, ...] = ("learned (type-II)",)
                 ) -> dict[str, np.ndarray]:
    """Chosen k per data set (x: [S, n, d]) for each loading prior: one `select` call, every
    (prior, k, data set, restart) in one vectorised batch."""
    if args.group and len(x) > args.group:  # several smaller select calls (see --group)
        parts = [elbo_choices(x[i:i + args.group], kmax, args, priors) for i in range(0, len(x), args.group)]
        return {p: np.concatenate([part[p] for part in parts]) for p in priors}
    pooled = x.reshape(-1, x.shape[-1])
    cands = {f"{p}|{k}": ppca.candidate(k, pooled, prior_scale=PRIORS[p], width=kmax)
             for p in priors for k in range(1, kmax + 1)}
    batch = 250 if x.shape[1] > 250 else None  # minibatches (scaled N/B) keep n >= 500 affordable
    results = vi.select(cands, jnp.asarray(x, jnp.float32), objective=analytic, criterion=analytic,
                        restarts=args.restarts, num_steps=args.steps, key=0, optimizer=optax.adam(args.lr),
                        batch_size=batch, eval_particles=args.eval_particles, evidence_particles=0,
                        progress=False, datasets=True)
    out = {}
    for p in priors:  # the ELBO argmax over k, per prior
        best = np.array([[r[f"{p}|{k}"].best for k in range(1, kmax + 1)] for r in results])
        out[p] = np.nanargmax(best, axis=1) + 1
    return out


def classical(x: np.ndarray, kmax: int) -> dict[str, np.ndarray]:
    return {"Minka (sklearn mle)": np.array([minka_mle(xi) for xi in x]),
            "BIC (ML PPCA)": np.array([bic_ml_ppca(xi, kmax) for xi in x]),
            "ARD (Bishop 1999)": ard_bayesian_pca(x)}


def distribution(ks: np.ndarray) -> str:
    counts = collections.Counter(int(k) for k in ks)
    return " ".join(f"{k}:{c}" for k, c in sorted(counts.items()))


def fit_n(n: int, args) -> tuple[list[str], dict[str, np.ndarray]]:
    """Every method on every data set of size n (run in its own process with --jobs)."""
    cells = [c for c in CELLS if c != "b" or n == 500]
    x = np.stack([generate(c, n, s) for c in cells for s in range(args.seeds)])
    t = time.perf_counter()
    methods = {"ELBO (ours, learned prior scale)": elbo_choices(x, args.kmax, args)["learned (type-II)"],
               **classical(x, args.kmax)}
    print(f"n = {n}: {len(x)} data sets fitted in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    return cells, methods


def sensitivity(args, n: int = 500, cells: tuple[str, ...] = ("a", "b")) -> tuple[tuple, dict[str, np.ndarray]]:
    """The ELBO choice under each loading prior (fixed small, fixed broad, learned), one restart."""
    x = np.stack([generate(c, n, s) for c in cells for s in range(args.seeds)])
    one = argparse.Namespace(**{**vars(args), "restarts": 1})
    return cells, elbo_choices(x, args.kmax, one, tuple(PRIORS))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="3 seeds, n in {200, 500}, kmax 8, fewer steps")
    parser.add_argument("--seeds", type=int, help="override the seeds per cell")
    parser.add_argument("--steps", type=int, help="override the Adam steps per restart")
    parser.add_argument("--group", type=int, default=0,
                        help="data sets per select call (0: all at once); smaller batches avoid a jaxlib CPU "
                             "LAPACK hang seen with ~500 vmapped fits (README, 'Batched linear algebra on CPU')")
    parser.add_argument("--jobs", type=int, default=1, help="processes: each n, the sensitivity table and the wine curve can run in its own")
    args = parser.parse_args()
    seeds, ns, args.kmax = (3, (200, 500), 8) if args.quick else (10, (200, 500, 2000), 8)
    steps, args.restarts, args.lr, args.eval_particles = (600, 2, 0.02, 32) if args.quick else (400, 2, 0.02, 32)
    args.seeds, args.steps = args.seeds or seeds, args.steps or steps
    print(f"# PPCA model selection: d={D}, true k={RANK}, {args.seeds} seeds per cell, k = 1..{args.kmax}, "
          f"{args.restarts} restarts x {args.steps} Adam steps (lr {args.lr}), final ELBO from "
          f"{args.eval_particles} particles; n >= 500 trains on minibatches of 250\n")
    start, chosen = time.perf_counter(), {}
    wine_kmax = 8 if args.quick else 12
    with concurrent.futures.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        wine = pool.submit(wine_curve, args, wine_kmax)
        sens = pool.submit(sensitivity, args)
        done = {n: pool.submit(fit_n, n, args) for n in ns}
        print("| cell | n | method | chosen k (k:count) | median | P(k=5) |")
        print("| --- | ---: | --- | --- | ---: | ---: |")
        for n in ns:
            cells, methods = done[n].result()
            for i, c in enumerate(cells):
                part = slice(i * args.seeds, (i + 1) * args.seeds)
                for method, ks in methods.items():
                    chosen[(c, n, method)] = ks[part]
                    print(f"| {c}: {CELLS[c]} | {n} | {method} | {distribution(ks[part])} | "
                          f"{float(np.median(ks[part])):g} | {float(np.mean(ks[part] == RANK)):.0%} |", flush=True)
        report_targets(chosen, ns)
        sens_cells, choices = sens.result()
        print("\n## Sensitivity of the ELBO choice to the loading prior scale (n = 500, one restart)\n")
        print("| prior scale | " + " | ".join(f"{c}: {CELLS[c]}" for c in sens_cells) + " |")
        print("| --- |" + " --- |" * len(sens_cells))
        for label, ks in choices.items():
            parts = [distribution(ks[i * args.seeds:(i + 1) * args.seeds]) for i in range(len(sens_cells))]
            print(f"| {label} | " + " | ".join(parts) + " |")
        try:
            print(wine.result())
        except Exception as err:  # keep the tables above even if this part fails
            print(f"wine curve failed: {type(err).__name__}: {err}")
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


def report_targets(chosen: dict, ns: tuple) -> None:
    ours = "ELBO (ours, learned prior scale)"
    print("\n## Targets\n")
    for n in ns:
        hit = np.mean(chosen[("a", n, ours)] == RANK)
        print(f"{'PASS' if hit >= 0.9 else 'MISS'}: (a) n={n}: ELBO picks k=5 on {hit:.0%} of seeds (target >= 90%)")
    for c in ("c", "d"):
        for n in (200, 500):
            if ("c", n, ours) not in chosen:
                continue
            med = {m: abs(np.median(chosen[(c, n, m)]) - RANK) for m in (ours, "Minka (sklearn mle)", "BIC (ML PPCA)")}
            ok = med[ours] < med["Minka (sklearn mle)"] and med[ours] < med["BIC (ML PPCA)"]
            print(f"{'PASS' if ok else 'MISS'}: ({c}) n={n}: |median - 5|: ELBO {med[ours]:g}, "
                  f"Minka {med['Minka (sklearn mle)']:g}, BIC {med['BIC (ML PPCA)']:g} (target: ELBO closer than both)")


def wine_curve(args, kmax: int) -> str:
    """The ELBO-vs-k table on scikit-learn's wine data (standardised), and the plot saved."""
    from sklearn.datasets import load_wine

    x = load_wine().data
    x = (x - x.mean(0)) / x.std(0)
    cands = {f"k={k}": ppca.candidate(k, x, width=kmax) for k in range(1, kmax + 1)}
    res = vi.select(cands, jnp.asarray(x, jnp.float32), objective=analytic, criterion=analytic,
                    restarts=args.restarts, num_steps=args.steps, key=0, optimizer=optax.adam(args.lr),
                    eval_particles=args.eval_particles, evidence_particles=0, progress=False)
    ties = f" (tied within se: {', '.join(res.ties)})" if res.ties else ""
    res.plot().savefig("ppca_wine_elbo.png", dpi=120)
    return (f"\n## scikit-learn wine (n={len(x)}, d={x.shape[1]}, standardised): ELBO vs k\n\n{res.table()}\n\n"
            f"ELBO picks {res.winner}{ties}; Minka {minka_mle(x)}, BIC {bic_ml_ppca(x, kmax)}, "
            f"ARD {ard_bayesian_pca(x)}\nplot: ppca_wine_elbo.png")


if __name__ == "__main__":
    main()
