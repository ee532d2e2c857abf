"""Speed: fitting the same flow to the same target with genvi and with FlowJAX, same process.

Target: the paper's U1 energy (2-D). Flows: planar K = 8 (tanh), and 4 rational-quadratic
spline coupling layers (8 knots on [-4, 4], conditioner 32 units, 1 hidden layer) with a
reversal after each; base N(0, I); ELBO with 100 draws per step; Adam 1e-3.

- genvi: `vi.fit(elbo(model, guide, particles=100), ...)`, per-step time from the time between
  `fit`'s compiled 100-step chunks (callbacks), compile excluded.
- FlowJAX: `flowjax.train.fit_to_key_based_loss(..., loss_fn=ElboLoss(target, 100))` on
  FlowJAX's own `Planar` / `coupling_flow` (its Python loop runs one jitted step per call),
  per-step time after a warm-up call (compile excluded).

Both run in alternating rounds; the ratio of medians is printed. Both score their draws in the
same forward pass: FlowJAX's `ElboLoss` with `sample_and_log_prob`, genvi because a site carries
its draw's log density (`genvi.rsample_and_log_prob`, which uses the flow's own
`sample_and_log_prob`), so neither runs the flow's inverse.

    python benchmarks/flows_speed.py [--rounds 3] [--steps 1000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as nd
import optax
from numpyro.distributions import constraints

import genvi.models.flows as flows
import genvi.vi as vi
from genvi import factor, gen, sample
from genvi.objectives import elbo

U1 = flows.energy("U1")
PARTICLES = 100


@gen
def target(_):
    z = sample("z", nd.ImproperUniform(constraints.real_vector, (), (2,)))
    factor("energy", -U1(z))


@gen
def guide(flow):
    sample("z", flow())


def genvi_flow(kind: str, key: jax.Array) -> flows.Flow:
    keys = jax.random.split(key, 8)
    if kind == "planar K=8":
        return flows.Flow(2, [flows.stack(lambda k: flows.Planar(2, key=k), keys)])
    layers = []
    for k in keys[:4]:
        layers += [flows.SplineCoupling(2, key=k, knots=8, interval=4.0, hidden=32, depth=1), flows.Reverse(2)]
    return flows.Flow(2, layers)


def flowjax_flow(kind: str, key: jax.Array):
    from flowjax.bijections import Planar, RationalQuadraticSpline, Scan
    from flowjax.distributions import StandardNormal, Transformed
    from flowjax.flows import coupling_flow

    if kind == "planar K=8":
        layers = eqx.filter_vmap(lambda k: Planar(k, dim=2))(jax.random.split(key, 8))
        return Transformed(StandardNormal((2,)), Scan(layers))
    return coupling_flow(key, base_dist=StandardNormal((2,)), transformer=RationalQuadraticSpline(knots=8, interval=4.0),
                         flow_layers=4, nn_width=32, nn_depth=1, nn_activation=jnp.tanh, invert=False)


def time_genvi(flow, steps: int) -> float:
    stamps = []
    vi.fit(elbo(target, guide, particles=PARTICLES), (None, flow), optimizer=optax.adam(1e-3), num_steps=steps,
           key=0, progress=False, chunk_size=100, callbacks=[lambda *_: stamps.append(time.perf_counter())])
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]  # the first chunk's time includes the compile
    return statistics.median(gaps) / 100


def time_flowjax(flow, steps: int, loss) -> float:
    from flowjax.train import fit_to_key_based_loss

    fit_to_key_based_loss(jax.random.key(0), flow, loss_fn=loss, steps=5, optimizer=optax.adam(1e-3),
                          show_progress=False)  # compile (cached for the timed call)
    start = time.perf_counter()
    fit_to_key_based_loss(jax.random.key(1), flow, loss_fn=loss, steps=steps, optimizer=optax.adam(1e-3),
                          show_progress=False)
    return (time.perf_counter() - start) / steps


def main() -> None:
    from flowjax.train.losses import ElboLoss

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    print(f"U1 target, {PARTICLES} draws per step, {args.steps} steps per timing, {args.rounds} alternating rounds\n")
    print(f"{'flow':22s} {'genvi ms/step':>14s} {'FlowJAX ms/step':>16s} {'ratio genvi/FlowJAX':>20s}")
    for kind in ("planar K=8", "spline coupling x4"):
        ours, theirs = genvi_flow(kind, jax.random.PRNGKey(0)), flowjax_flow(kind, jax.random.PRNGKey(0))
        loss = ElboLoss(lambda z: -U1(z), PARTICLES)
        times = {"genvi": [], "flowjax": []}
        for _ in range(args.rounds):
            times["genvi"].append(time_genvi(ours, args.steps))
            times["flowjax"].append(time_flowjax(theirs, args.steps, loss))
        g, f = statistics.median(times["genvi"]), statistics.median(times["flowjax"])
        print(f"{kind:22s} {1e3 * g:14.3f} {1e3 * f:16.3f} {g / f:19.2f}x", flush=True)


if __name__ == "__main__":
    main()
