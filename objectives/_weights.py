"""Log importance weights for multi-sample objectives, per plate element where the bound allows.

For a guide trace `q` and the model scored at its choices `p`, a particle's log weight is
`log p(x, z) - log q(z)`. When every site of both programs lies in one outer named plate
(all latents are *local*: a VAE's `z_n`), the weight factorises over the plate's elements and
multi-sample bounds are formed per element, `sum_n log mean_k w_nk`: tighter, and unbiased under
minibatching because the bound is a sum over elements (each element's weight is computed
unscaled and the N/B factor applied outside the log). Otherwise (a *global* latent) particles
are joint: `log mean_k w_k` with `w_k` the whole trace's weight; that bound does not decompose
over a subsampled plate, so it is refused under minibatching rather than computed biased.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

import genvi
from genvi import ConfigError, GenerativeFunction, Trace


class Weights(NamedTuple):
    """Log weights of one particle: `log_p - log_q`, per element (`[N]`) or joint (scalar).

    `log_p` and `log_q` are kept apart so objectives can differentiate them differently.
    """

    log_p: jax.Array
    log_q: jax.Array
    scale: float  # applied outside per-element bounds (N/B under minibatching), 1 for joint

    @property
    def log_w(self) -> jax.Array:
        return self.log_p - self.log_q


def _plate_layout(*traces: Trace) -> tuple[str | None, float]:
    """The shared outer named plate of every site (and its scale), or `(None, 1)`."""
    outer, scales = set(), set()
    for trace in traces:
        plates, scale = dict(trace.plates), dict(trace.scales)
        for addr in trace.site_log_densities.flat():
            names = plates.get(addr, ())
            outer.add(names[0] if names else None)
            scales.add(scale.get(addr, 1.0))
    if len(outer) == 1 and None not in outer and len(scales) == 1:
        return outer.pop(), scales.pop()
    return None, 1.0


def _per_element(trace: Trace, scale: float) -> jax.Array:
    total = 0.0
    for leaf in trace.site_log_densities.flat().values():
        total = total + jnp.reshape(leaf, (leaf.shape[0], -1)).sum(-1) / scale
    return total


def weights(model: GenerativeFunction, guide: GenerativeFunction, model_params: Any,
            guide_params: Any, data: tuple, *, objective: str,
            guide_density: Callable[[Trace], Trace] | None = None) -> tuple[Weights, Trace]:
    """One particle: `guide.sim`, the model scored at its choices, and the log weights.

    `guide_density(trace) -> trace` may rescore the guide (STL and DReG stop its parameters'
    gradient). Returns the weights and the guide trace.
    """
    q = guide.sim(guide_params, *data)
    p = model.score(q.choices, model_params, *data)
    return split(p, guide_density(q) if guide_density is not None else q, objective), q


def split(p: Trace, q: Trace, objective: str) -> Weights:
    """The log weights of model trace `p` against guide trace `q`, per element or joint."""
    plate, scale = _plate_layout(p, q)
    if plate is not None:
        return Weights(_per_element(p, scale), _per_element(q, scale), scale)
    if any(s != 1.0 for tr in (p, q) for _, s in tr.scales):
        latents = sorted(q.choices.addresses())
        raise ConfigError(
            f"{objective}: the multi-sample bound over latents {latents} (not all local to one data "
            "plate) does not decompose over a subsampled plate, so minibatching would bias it; "
            "train on the full data (batch_size=None), make every latent local to the plate, or use elbo"
        )
    return Weights(p.log_density, q.log_density, 1.0)


def particles(fn: Callable[[], Any], count: int) -> Any:
    """`count` independent particles of `fn()` stacked on a leading axis (`genvi.vmap`)."""
    return genvi.vmap(fn, axis_size=count)()


def log_mean_exp(x: jax.Array, axis: int = 0) -> jax.Array:
    return logsumexp(x, axis=axis) - jnp.log(x.shape[axis])


def check_particles(name: str, particles: Any) -> None:
    if not isinstance(particles, int) or particles < 1:
        raise ConfigError(f"{name}(particles={particles!r}): particles must be an integer >= 1")
