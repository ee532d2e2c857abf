"""Prediction (posterior-mean weights or S weight samples), metrics and one-shot pruning."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from genvi import ConfigError

from ._criteria import criterion as get_criterion
from ._layers import active_count
from ._net import SparseBNN, _activation


def _forward(net: SparseBNN, weights: list[jax.Array], x: jax.Array) -> jax.Array:
    """Logits of a batch `x` (leading data axis) for given dense weight tensors."""

    def one(h):
        last = len(net.layers) - 1
        for l, (layer, w) in enumerate(zip(net.layers, weights)):
            b = layer.apply(w, h)
            h = b if l == last else _activation(net, l, b)
        return h

    return jax.vmap(one)(x)


@eqx.filter_jit
def predict(net: SparseBNN, x: jax.Array, *, samples: int = 0, key: jax.Array | None = None) -> jax.Array:
    """Class probabilities for a batch `x`, shape `(N, classes)`.

    `samples=0`: with the posterior-mean weights. `samples=S > 0`: the Monte Carlo posterior
    predictive, the mean of `softmax` over `S` draws of the whole weight vector (`key` needed);
    inactive weights are exactly zero in every draw.
    """
    if samples == 0:
        return jax.nn.softmax(_forward(net, [layer.dense(layer.mu) for layer in net.layers], x), axis=-1)
    if key is None:
        raise ConfigError(f"predict(samples={samples}): weight samples need key=")

    def draw(k):
        keys = jax.random.split(k, len(net.layers))
        return jax.nn.softmax(_forward(net, [layer.sample_weight(kk) for layer, kk in zip(net.layers, keys)], x), -1)

    return jnp.mean(jax.lax.map(draw, jax.random.split(key, samples)), axis=0)


def metrics(probs: jax.Array, y: jax.Array, bins: int = 15) -> dict[str, float]:
    """Accuracy, mean negative log likelihood (nats) and expected calibration error.

    ECE (Guo et al. 2017): the confidences `max_c p_c` fall into `bins` equal-width bins of
    [0, 1]; ECE = `sum_b (n_b / N) |accuracy_b - confidence_b|`.
    """
    probs, y = np.asarray(probs, np.float64), np.asarray(y)
    conf, pred = probs.max(-1), probs.argmax(-1)
    correct = (pred == y).astype(np.float64)
    nll = -np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)))
    which = np.minimum((conf * bins).astype(int), bins - 1)
    ece = sum(abs(correct[which == b].mean() - conf[which == b].mean()) * np.mean(which == b)
              for b in range(bins) if np.any(which == b))
    return {"accuracy": float(correct.mean()), "nll": float(nll), "ece": float(ece)}


def prune(net: SparseBNN, density: float, *, criterion: str = "snr") -> SparseBNN:
    """Keep, in every layer, the `round(density * size)` active weights of highest score (once,
    after training: the "prune a dense VI posterior" baseline)."""
    score_fn = get_criterion(criterion)
    layers = []
    for l, layer in enumerate(net.layers):
        k = active_count(density, layer.size, f"prune: layer {l} ({'x'.join(map(str, layer.shape))})")
        if k > layer.active:
            raise ConfigError(f"prune(density={density}): layer {l} has only {layer.active} active weights, "
                              f"fewer than the {k} asked for")
        top = jnp.sort(jnp.argsort(-score_fn(layer.mu, layer.sigma), stable=True)[:k])
        layers.append(eqx.tree_at(lambda s: (s.index, s.mu, s.rho), layer,
                                  (layer.index[top], layer.mu[top], layer.rho[top])))
    return eqx.tree_at(lambda n: n.layers, net, tuple(layers))
