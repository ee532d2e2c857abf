"""A sparse Bayesian network, its guide over pre-activations, likelihood and ELBO program.

**Why a custom objective and not `objectives.elbo(model, guide)`.** With the local
reparameterisation trick the guide's random choices are the pre-activations `b_l` of each data
point (REPARAM Normal sites in the `"data"` plate, mean and variance from the sparse `mu`,
`sigma^2`), not the weights. They have no counterpart in the Bayesian model, whose latent is the
weight tensor `theta`; the ELBO is

    E_q[sum_n log p(y_n | b_{L,n})] - KL(q(theta) || p(theta)),

where the first term has the same expectation whether the weights are shared across the
minibatch or (as here) drawn independently per data point, and the KL has a closed form over the
active weights. `elbo(model, guide)` would score every guide choice under the model, which has no
density for pre-activations; so the SSVI ELBO is this six-line `@expectation` program: sample the
guide, score the observations under `likelihood` (a `"data"` plate, so `fit` scales it by N/B
under minibatching) and subtract the analytic, unscaled KL, weighted by the warm-up schedule.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import Array, Int

import genvi
from genvi import ConfigError, Expectation, expectation, gen, sample

from ._layers import SparseWeights, sparse_linear


class SparseBNN(eqx.Module):
    """A feed-forward stack of sparse Bayesian layers with ReLUs between them.

    `step` is the training step the last strategy update saw; the KL warm-up of [`elbo`][] reads
    it (an integer leaf: `fit` carries it but does not train it).
    """

    layers: tuple[SparseWeights, ...]
    step: Int[Array, ""]
    flatten_after: int = eqx.field(static=True, default=-1)  # flatten the features after this layer

    def kl(self) -> jax.Array:
        """`KL(q || p)` over all active weights of all layers."""
        return sum((layer.kl() for layer in self.layers), jnp.zeros(()))

    @property
    def active(self) -> int:
        return sum(layer.active for layer in self.layers)

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)


def mlp(key: jax.Array, sizes: Sequence[int], density: float | Sequence[float], *, prior_scale: float = 1.0,
        init_sigma: float = 1e-3) -> SparseBNN:
    """A [`SparseBNN`][] MLP, e.g. `sizes=(64, 128, 128, 10)`; `density` per layer or for all."""
    if len(sizes) < 2:
        raise ConfigError(f"mlp(sizes={tuple(sizes)!r}): give at least input and output sizes")
    densities = [density] * (len(sizes) - 1) if isinstance(density, (int, float)) else list(density)
    if len(densities) != len(sizes) - 1:
        raise ConfigError(f"mlp: {len(densities)} densities for {len(sizes) - 1} layers; give one per layer or one")
    keys = jax.random.split(key, len(densities))
    layers = tuple(sparse_linear(k, i, o, d, prior_scale=prior_scale, init_sigma=init_sigma)
                   for k, i, o, d in zip(keys, sizes[:-1], sizes[1:], densities))
    return SparseBNN(layers, jnp.array(0, jnp.int32))


def _activation(net: SparseBNN, l: int, b: jax.Array) -> jax.Array:
    h = jax.nn.relu(b)
    return h.reshape(-1) if l == net.flatten_after else h


@gen
def point_guide(net: SparseBNN, x: jax.Array) -> jax.Array:
    """One data point: the pre-activations `b_l ~ N(mean_l(h), var_l(h))` layer by layer
    (sites `"b0"`, `"b1"`, ...); returns the output layer's pre-activations (the logits)."""
    h = x
    last = len(net.layers) - 1
    for l, layer in enumerate(net.layers):
        mean, var = layer.moments(h)
        b = sample(f"b{l}", dist.Normal(mean, jnp.sqrt(var + 1e-16)).to_event(mean.ndim))
        h = b if l == last else _activation(net, l, b)
    return h


@gen
def point_likelihood(logits: jax.Array, y: jax.Array) -> None:
    """`y ~ Categorical(softmax(logits))` for one data point."""
    sample("y", dist.Categorical(logits=logits), obs=y)


guide = genvi.vmap(point_guide, in_axes=(None, 0), plate="data")
likelihood = genvi.vmap(point_likelihood, in_axes=(0, 0), plate="data")
_stacked_guide = genvi.vmap(guide, in_axes=(0, None))
_stacked_likelihood = genvi.vmap(likelihood, in_axes=(0, None))


def stack(nets: Sequence[SparseBNN]) -> SparseBNN:
    """Independent networks of one architecture and density (e.g. one per seed) as one
    [`SparseBNN`][] whose array leaves gain a leading copy axis: [`elbo`][] then sums their ELBOs
    (so each copy gets its own gradient: one compiled `fit` trains them all) and the
    [`SSVI`][] strategy updates each copy's support separately."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *nets)


def unstack(net: SparseBNN) -> list[SparseBNN]:
    """The copies of a stacked network ([`stack`][])."""
    return [jax.tree.map(lambda a: a[i], net) for i in range(net.step.shape[0])]


def kl_weight(step: jax.Array, kl_scale: float, warmup_steps: int) -> jax.Array:
    """`kl_scale * min(1, step / warmup_steps)` (linear KL warm-up; `kl_scale` with no warm-up)."""
    if warmup_steps <= 0:
        return jnp.asarray(kl_scale, jnp.float32)
    return kl_scale * jnp.minimum(1.0, step.astype(jnp.float32) / warmup_steps)


def elbo(*, kl_scale: float = 1.0, warmup_steps: int = 0) -> Expectation:
    """The SSVI ELBO (to maximise), called as `objective(net, x, y)`: the expected log likelihood
    under the locally reparameterised guide minus `kl_weight(net.step, ...) * KL(q || p)`
    (summed over the copies of a stacked `net`).

    **Arguments:**

    - `kl_scale`: the KL's final weight (1 is the ELBO; smaller down-weights the prior, as BNN
      papers commonly do).
    - `warmup_steps`: the KL weight rises linearly from 0 over this many steps (read from
      `net.step`, which the [`SSVI`][] strategy advances every `every` steps).
    """
    if not kl_scale >= 0:
        raise ConfigError(f"elbo(kl_scale={kl_scale!r}): must be non-negative")
    if not isinstance(warmup_steps, int) or warmup_steps < 0:
        raise ConfigError(f"elbo(warmup_steps={warmup_steps!r}): must be a non-negative integer")

    @expectation
    def ssvi_elbo(net, x, y):
        stacked = net.step.ndim == 1
        q = (_stacked_guide if stacked else guide).sim(net, x)
        log_lik = (_stacked_likelihood if stacked else likelihood).log_density({}, q.retval, y)
        kl = jax.vmap(SparseBNN.kl)(net) if stacked else net.kl()
        return log_lik - jnp.sum(kl_weight(net.step, kl_scale, warmup_steps) * kl)

    return ssvi_elbo
