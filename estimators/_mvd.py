"""MVD: measure-valued derivatives (Pflug 1989; Mohamed et al. 2020, section 6).

The derivative of `E_q[k(x)]` in a parameter `theta` is written as a weighted difference of two
expectations, `c_theta (E_{q+}[k] - E_{q-}[k])`; genvi evaluates the continuation at coupled
values `x+` and `x-` and adds `(theta - stop_gradient(theta)) * c_theta * (k(x+) - k(x-))` to the
surrogate. The decompositions, per coordinate of the event:

| distribution | parameter | weight | `x+` | `x-` |
| --- | --- | --- | --- | --- |
| Bernoulli | probs | 1 | 1 | 0 |
| Categorical | probs_j | 1 | j | the sample |
| Poisson | rate | 1 | sample + 1 | the sample |
| Normal | loc | 1/(scale sqrt(2 pi)) | loc + scale W | loc - scale W, W ~ Weibull(sqrt 2, 2) |
| Normal | scale | 1/scale | loc + scale M, M ~ double-sided Maxwell | the sample |

Every coordinate costs its own evaluations of the rest of the program (vmapped), so MVD trades
compute for variance. Under a plate all elements are perturbed at once when the terms keep the
elements apart; when a term mixes them (a log-mean-exp over particles), each element is
perturbed on its own, which costs a factor of the number of elements.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as nd

from genvi._errors import EstimatorError
from genvi._site import Estimator, Outcome, SiteCall
from genvi._sitedist import SiteDist

sg = jax.lax.stop_gradient


@dataclasses.dataclass
class _Alternative:
    theta: jax.Array  # element-shaped, differentiable
    weight: jax.Array  # element-shaped
    plus: jax.Array  # site-shaped value
    minus: jax.Array | None  # site-shaped value, or None for the sample itself


def _base(d: nd.Distribution) -> nd.Distribution:
    return d.base_dist if isinstance(d, nd.Independent) else d


def _coordinates(dist: SiteDist) -> list[tuple]:
    """Index tuples of the event coordinates (one empty tuple for a scalar event)."""
    return [tuple(int(i) for i in idx) for idx in np.ndindex(*dist.event_shape)] if dist.event_shape else [()]


def _at(x: jax.Array, coord: tuple, value: jax.Array) -> jax.Array:
    index = (Ellipsis, *coord)
    return x.at[index].set(value[index] if jnp.ndim(value) else value)


def _param(dist: SiteDist, name: str) -> jax.Array:
    return dist.map(lambda d: getattr(_base(d), name))


def _bernoulli(dist, x, key):
    probs = _param(dist, "probs")
    one = jnp.ones_like(x)
    return [_Alternative(probs[(Ellipsis, *c)], jnp.ones(dist.element_shape), _at(x, c, one), _at(x, c, 0 * one))
            for c in _coordinates(dist)]


def _categorical(dist, x, key):
    if dist.event_shape:
        raise EstimatorError("MVD for Categorical supports sites without event dimensions")
    probs = _param(dist, "probs")
    return [_Alternative(probs[..., j], jnp.ones(dist.element_shape), jnp.full_like(x, j), None)
            for j in range(probs.shape[-1])]


def _poisson(dist, x, key):
    rate = _param(dist, "rate")
    return [_Alternative(rate[(Ellipsis, *c)], jnp.ones(dist.element_shape), _at(x, c, x + 1), None)
            for c in _coordinates(dist)]


def _normal(dist, x, key):
    loc, scale = _param(dist, "loc"), _param(dist, "scale")
    loc, scale = jnp.broadcast_to(loc, x.shape), jnp.broadcast_to(scale, x.shape)
    k1, k2, k3 = jax.random.split(key, 3)
    weibull = jnp.sqrt(2.0 * jax.random.exponential(k1, x.shape))
    maxwell = jnp.sqrt(2.0 * jax.random.gamma(k2, 1.5, x.shape)) * jax.random.rademacher(k3, x.shape)
    alts = []
    for c in _coordinates(dist):
        at = (Ellipsis, *c)
        mu, sigma = loc[at], scale[at]
        alts.append(_Alternative(mu, 1.0 / (sg(sigma) * math.sqrt(2 * math.pi)),
                                 _at(x, c, sg(loc + scale * weibull)), _at(x, c, sg(loc - scale * weibull))))
        alts.append(_Alternative(sigma, 1.0 / sg(sigma), _at(x, c, sg(loc + scale * maxwell)), None))
    return alts


_DECOMPOSITIONS: dict[type, Callable] = {
    nd.BernoulliProbs: _bernoulli, nd.BernoulliLogits: _bernoulli,
    nd.CategoricalProbs: _categorical, nd.CategoricalLogits: _categorical,
    nd.Poisson: _poisson, nd.Normal: _normal,
}


def _decomposition(dist: Any) -> Callable | None:
    return _DECOMPOSITIONS.get(type(_base(dist)))


class MeasureValued(Estimator):
    """Measure-valued derivative (use the instance `MVD`); see the module docstring."""

    def check(self, address: str, dist: Any) -> None:
        if _decomposition(dist) is None:
            raise EstimatorError(
                f"site {address!r}: MVD knows Bernoulli, Categorical, Poisson and Normal "
                f"(optionally .to_event), got {type(_base(dist)).__name__}; use REINFORCE or REPARAM"
            )

    def rule(self, call: SiteCall) -> Outcome:
        k_sample, k_alt = jax.random.split(call.key)
        x = sg(call.dist.sample(k_sample))
        alts = _decomposition(call.dist.element0())(call.dist, x, k_alt)
        first = jax.eval_shape(call.continue_, x)
        if all(call.factorises(key) for key in call.dependent(first)):
            masks = [None]  # perturb every element at once
        else:
            masks = [np.arange(call.dist.size).reshape(call.dist.element_shape) == e
                     for e in range(call.dist.size)]
        values, perturbations = [x], []
        for mask in masks:
            for a in alts:
                plus = len(values)
                values.append(_masked(mask, a.plus, x))
                minus = 0
                if a.minus is not None:
                    minus = len(values)
                    values.append(_masked(mask, a.minus, x))
                perturbations.append((mask, (a.theta - sg(a.theta)) * sg(a.weight), plus, minus))
        with call.branching(len(values)):
            outs = jax.vmap(call.continue_)(jnp.stack(values))
        first = jax.tree.map(lambda a: a[0], outs)
        dependent = set(call.dependent(first))
        terms = {}
        stacked = masks == [None] and _stacked(perturbations)
        for key, (value, surrogate) in outs.terms.items():
            v0, s0 = value[0], surrogate[0]
            if key in dependent and stacked:
                # all perturbations at once: O(1) operations per term rather than one chain of
                # operations per (coordinate, term) pair, which made compile time grow with both
                directions, plus, minus = stacked
                scales = jax.vmap(lambda d, key=key, shape=v0.shape: call.to_term(d, key, shape))(directions)
                s0 = s0 + jnp.sum(scales * sg(value[plus] - value[minus]), axis=0)
            elif key in dependent:
                for mask, direction, plus, minus in perturbations:
                    if mask is None:
                        scale = call.to_term(direction, key, v0.shape)
                    else:
                        scale = jnp.sum(jnp.where(mask, direction, 0.0))
                    s0 = s0 + scale * sg(value[plus] - value[minus])
            terms[key] = (v0, s0)
        return Outcome(terms, first.states)


def _stacked(perturbations: list) -> tuple[jax.Array, np.ndarray, np.ndarray]:
    """The perturbations' directions stacked (`[P, *element_shape]`) and their value indices."""
    directions = jnp.stack([jnp.asarray(d) for _, d, _, _ in perturbations])
    plus = np.array([p for _, _, p, _ in perturbations], dtype=np.int32)
    minus = np.array([m for _, _, _, m in perturbations], dtype=np.int32)
    return directions, plus, minus


def _masked(mask: np.ndarray | None, value: jax.Array, x: jax.Array) -> jax.Array:
    """`value` on the elements in `mask` (all when None), `x` elsewhere."""
    if mask is None:
        return value
    mask = mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))
    return jnp.where(mask, value, x)


MVD = MeasureValued()
