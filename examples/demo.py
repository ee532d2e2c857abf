"""genvi demo: a VAE on scikit-learn's binarised digits, trained with several objectives/estimators.

Prints a table (objective, estimator, final train ELBO, held-out IWAE-100 bound, seconds) and
saves `demo_vae.png` with prior samples and test reconstructions. About a minute on 2 CPU cores.

    python examples/demo.py [--steps 3000] [--out demo_vae.png]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import genvi
import genvi.models.vae as vae
import genvi.vi as vi
from genvi.estimators import MVD, REINFORCE, REPARAM
from genvi.objectives import elbo, iwae

CONFIGS = [
    ("ELBO", "REPARAM", lambda: elbo(vae.model, vae.guide), 1.0),
    ("IWAE-8", "REPARAM", lambda: iwae(vae.model, vae.guide, particles=8), 1.0),
    ("ELBO", "REINFORCE + LOO", lambda: elbo(vae.model, vae.guide).with_estimators({"z": REINFORCE(baseline="loo")}), 0.5),
    ("ELBO", "MVD", lambda: elbo(vae.model, vae.guide).with_estimators({"z": MVD}), 0.2),
]


def per_point(objective, key, params, data, chunk=120):
    """Average objective per data point, over the whole set in chunks (exact sum of plate terms)."""
    total = 0.0
    for i, start in enumerate(range(0, len(data), chunk)):
        total += float(objective.estimate(jax.random.fold_in(key, i), params, jnp.asarray(data[start:start + chunk])))
    return total / len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--out", default="demo_vae.png")
    args = parser.parse_args()

    train, test = vae.binarized_digits()
    print(f"digits: {len(train)} train, {len(test)} test, 64 binary pixels; batch 128, Adam 3e-3")
    heldout = iwae(vae.model, vae.guide, particles=100)
    rows, best = [], None
    for name, estimator, make, fraction in CONFIGS:
        steps = max(100, int(args.steps * fraction))
        net = vae.VAE(jax.random.PRNGKey(0))
        start = time.perf_counter()
        res = vi.fit(make(), net.params, jnp.asarray(train), optimizer=optax.adam(3e-3), num_steps=steps,
                     batch_size=128, key=1, progress=False)
        seconds = time.perf_counter() - start
        train_elbo = per_point(elbo(vae.model, vae.guide), jax.random.PRNGKey(2), res.params, train)
        test_iwae = per_point(heldout, jax.random.PRNGKey(3), res.params, test)
        rows.append((name, estimator, steps, train_elbo, test_iwae, seconds))
        if name == "IWAE-8":
            best = res.params
    print()
    print("| objective | estimator | steps | train ELBO / point | held-out IWAE-100 / point | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, estimator, steps, train_elbo, test_iwae, seconds in rows:
        print(f"| {name} | {estimator} | {steps} | {train_elbo:.2f} | {test_iwae:.2f} | {seconds:.1f} |")
    save_figure(best, test, args.out)
    print(f"\nsaved prior samples and test reconstructions to {args.out}")


def save_figure(params, test, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    decoder, _ = params
    samples = vae.model.simulate(jax.random.PRNGKey(4), decoder, jnp.zeros((8, 64))).choices["z"]
    prior_means = jax.nn.sigmoid(jax.vmap(decoder)(samples))
    test = test[::45][:8]  # spread over the test set
    recon = genvi.predictive(vae.model, vae.guide, params, jnp.asarray(test), num_samples=1, key=5)
    recon_means = jax.nn.sigmoid(jax.vmap(decoder)(recon["z"][0]))
    fig, axes = plt.subplots(3, 8, figsize=(8, 3.3))
    for j in range(8):
        for i, (row, title) in enumerate(((prior_means, "prior samples"), (test, "test digits"),
                                          (recon_means, "reconstructions"))):
            axes[i, j].imshow(np.asarray(row[j]).reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
            axes[i, j].axis("off")
            if j == 0:
                axes[i, j].set_title(title, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
