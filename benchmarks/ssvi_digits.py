"""SSVI (Li, Miao, Qiu, Zhang, ICLR 2024) on scikit-learn's digits and breast-cancer sets.

An MLP 64-128-128-10 (30-128-128-2 for breast cancer), every layer sparse, fixed 80/20 split,
trained with `genvi.vi.fit` (Adam 3e-3, minibatches of 128, the SSVI ELBO with the local
reparameterisation trick, KL scale 1 and a linear KL warm-up over the first quarter). The seeds'
networks of each row are stacked (`ssvi.stack`) and trained by one vmapped `fit` (they share the
minibatch order; their initialisations and noise differ). Rows, each over the seeds:

- dense mean-field VI (density 1);
- SSVI at densities 10%, 5%, 2% (remove by SNR(|theta|), add by |dL/dmu|, alpha = 0.3, every 100
  steps until 75% of training);
- a static random mask at the same densities (the same training without the swaps);
- dense VI pruned once after training by |mu|/sigma to the same densities.

Columns: accuracy with posterior-mean weights, and accuracy, NLL and ECE (15 bins) of the
posterior predictive with S weight samples; active weights; training FLOPs relative to dense VI
(analytic, from the active counts, dense add-step gradients included). Targets (digits): SSVI 5%
>= 94% accuracy and >= 5 points above the static 5% mask; SSVI 10% within 3 points of dense VI.

    python benchmarks/ssvi_digits.py [--quick] [--seeds 3] [--steps 1500]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import optax

import genvi.models.ssvi as ssvi
import genvi.vi as vi

DENSITIES = (0.10, 0.05, 0.02)
PAPER = ("paper (CIFAR-10/100, ResNet-18; abstract): 10-20x compression with < 3% accuracy drop, "
         "up to 20x fewer training FLOPs than dense VI")


def train(data, sizes, density, alpha, seeds, steps, objective, optimizer, every, batch):
    """One `fit` of the seeds' networks stacked (vmapped, one compile); returns the trained nets
    and the number of add steps that swapped weights."""
    x, y = data
    net = ssvi.stack([ssvi.mlp(jax.random.PRNGKey(seed), sizes, density, init_sigma=1e-3) for seed in seeds])
    strategy = ssvi.SSVI(total_steps=steps, every=every, alpha=alpha, criterion="snr_abs")
    result = vi.fit(objective, net, x, y, optimizer=optimizer, num_steps=steps, batch_size=batch,
                    key=0, strategy=strategy, progress=False)
    add_steps = sum(1 for t in range(every, steps, every) if any(strategy.counts(t, net)))
    return ssvi.unstack(result.params), add_steps


def evaluate(net, x, y, samples, seed):
    mean = ssvi.metrics(ssvi.predict(net, x), y)
    pred = ssvi.metrics(ssvi.predict(net, x, samples=samples, key=jax.random.PRNGKey(1000 + seed)), y)
    return {"acc_mean": mean["accuracy"], "acc": pred["accuracy"], "nll": pred["nll"], "ece": pred["ece"],
            "active": net.active}


def run_dataset(name, sizes, seeds, steps, samples, every, batch):
    xtr, ytr, xte, yte = ssvi.classification_split(name)
    objective = ssvi.elbo(kl_scale=1.0, warmup_steps=steps // 4)
    optimizer = optax.adam(3e-3)
    args = ((xtr, ytr), sizes)
    rows: dict[str, list[dict]] = {}
    start = time.time()
    dense, _ = train(*args, 1.0, 0.0, seeds, steps, objective, optimizer, every, batch)
    dense_flops = ssvi.training_flops(dense[0], steps=steps, batch_size=batch)
    rows["dense VI"] = [{**evaluate(n, xte, yte, samples, s), "flops": 1.0} for n, s in zip(dense, seeds)]
    for d in DENSITIES:
        for label, alpha in (("SSVI", 0.3), ("static mask", 0.0)):
            nets, adds = train(*args, d, alpha, seeds, steps, objective, optimizer, every, batch)
            flops = ssvi.training_flops(nets[0], steps=steps, batch_size=batch, add_steps=adds) / dense_flops
            rows[f"{label} {d:.0%}"] = [{**evaluate(n, xte, yte, samples, s), "flops": flops}
                                        for n, s in zip(nets, seeds)]
        rows[f"dense VI pruned {d:.0%}"] = [{**evaluate(ssvi.prune(n, d, criterion="snr"), xte, yte, samples, s),
                                             "flops": 1.0} for n, s in zip(dense, seeds)]
        print(f"  [{name}] density {d:.0%} done at {time.time() - start:.0f} s", flush=True)
    return rows


def table(name, rows, seeds, samples):
    print(f"\n{name}: {len(seeds)} seed(s), mean ± sd; predictive with S={samples} weight samples")
    print(f"| method | acc (mean w) | acc (S) | NLL (S) | ECE (S) | active weights | train FLOPs vs dense |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    order = ["dense VI"] + [f"{m} {d:.0%}" for d in DENSITIES for m in ("SSVI", "static mask", "dense VI pruned")]
    for label in order:
        r = rows[label]
        f = lambda key, scale=1.0, fmt=".2f": (  # noqa: E731
            f"{scale * np.mean([x[key] for x in r]):{fmt}} ± {scale * np.std([x[key] for x in r]):{fmt}}")
        print(f"| {label} | {f('acc_mean', 100, '.1f')} | {f('acc', 100, '.1f')} | {f('nll', 1, '.3f')} | "
              f"{f('ece', 1, '.3f')} | {r[0]['active']} | {np.mean([x['flops'] for x in r]):.3f} |")


def targets(rows):
    acc = lambda label: 100 * np.mean([x["acc"] for x in rows[label]])  # noqa: E731
    checks = [
        ("SSVI 5% accuracy >= 94%", acc("SSVI 5%") >= 94.0, f"{acc('SSVI 5%'):.1f}%"),
        ("SSVI 5% >= static 5% + 5 points", acc("SSVI 5%") >= acc("static mask 5%") + 5.0,
         f"{acc('SSVI 5%'):.1f} vs {acc('static mask 5%'):.1f}"),
        ("SSVI 10% within 3 points of dense VI", acc("SSVI 10%") >= acc("dense VI") - 3.0,
         f"{acc('SSVI 10%'):.1f} vs {acc('dense VI'):.1f}"),
    ]
    print("\nTargets (digits, predictive accuracy):")
    for what, ok, seen in checks:
        print(f"  {'PASS' if ok else 'MISS'}  {what}: {seen}")
    print(f"\n{PAPER}")
    for d in (0.10, 0.05):
        r = rows[f"SSVI {d:.0%}"]
        drop = acc("dense VI") - acc(f"SSVI {d:.0%}")
        print(f"ours (digits MLP): SSVI {d:.0%}: {1 / d:.0f}x compression, accuracy drop {drop:+.1f} points, "
              f"{1 / np.mean([x['flops'] for x in r]):.1f}x fewer training FLOPs")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 600 steps")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args()
    seeds = range(1 if args.quick else args.seeds)
    steps = 600 if args.quick else args.steps
    every = 50 if args.quick else 100
    for name, sizes in (("digits", (64, 128, 128, 10)), ("breast_cancer", (30, 128, 128, 2))):
        rows = run_dataset(name, sizes, seeds, steps, args.samples, every, 128)
        table(name, rows, seeds, args.samples)
        if name == "digits":
            targets(rows)


if __name__ == "__main__":
    main()
