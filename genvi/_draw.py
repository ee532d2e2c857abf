"""A reparameterised draw together with its log density, computed in one pass.

A program scores its own latent draws (`log q(z)` in every objective). Computed from the value,
that density undoes the draw: a Gaussian divides `z - loc` by the scale it just multiplied, a
full-rank Gaussian solves the triangular system it just multiplied by, a flow runs its inverse.
Computed from the draw's noise it costs almost nothing, and XLA cannot find that rewrite itself
(floating-point division does not cancel multiplication). The value and the density are the same
functions of the parameters as before, so every gradient is unchanged.

`rsample_and_log_prob(dist, key)` dispatches on the distribution's class: a distribution with a
`sample_and_log_prob(key, sample_shape)` method (FlowJAX's name, and genvi's flows) uses it;
NumPyro's Normal, MultivariateNormal, Independent and TransformedDistribution are registered
here; any other class draws with `rsample` and scores with `log_prob`. Register more with
`genvi.rsample_and_log_prob.register(cls)`.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpyro.distributions as nd
from numpyro.distributions.util import sum_rightmost

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)  # a Python float: importing genvi must not start a JAX backend


@functools.singledispatch
def rsample_and_log_prob(dist: Any, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One reparameterised draw of `dist` (shape `batch + event`) and its log density (`batch`)."""
    own = getattr(dist, "sample_and_log_prob", None)
    if own is not None:
        return own(key)
    x = dist.rsample(key)
    return x, dist.log_prob(x)


def _standard_normal(dist: Any, key: jax.Array) -> jax.Array:
    """The noise NumPyro's Gaussians draw: the same key gives the same value as `dist.rsample`."""
    return jax.random.normal(key, tuple(dist.batch_shape) + tuple(dist.event_shape))


@rsample_and_log_prob.register
def _(dist: nd.Normal, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    eps = _standard_normal(dist, key)
    return dist.loc + eps * dist.scale, -0.5 * eps**2 - jnp.log(jnp.sqrt(2 * jnp.pi) * dist.scale)


@rsample_and_log_prob.register
def _(dist: nd.MultivariateNormal, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    eps = _standard_normal(dist, key)
    tril = dist.scale_tril
    x = dist.loc + jnp.squeeze(jnp.matmul(tril, eps[..., None]), axis=-1)
    half_log_det = jnp.sum(jnp.log(jnp.diagonal(tril, axis1=-2, axis2=-1)), -1)
    return x, -0.5 * jnp.sum(eps**2, -1) - half_log_det - tril.shape[-1] * _HALF_LOG_2PI


@rsample_and_log_prob.register
def _(dist: nd.Independent, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    base = dist.base_dist
    x, log_p = rsample_and_log_prob(base, key)
    return x, sum_rightmost(log_p, dist.reinterpreted_batch_ndims)


@rsample_and_log_prob.register
def _(dist: nd.TransformedDistribution, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    # Forward through the transforms keeping each input, then NumPyro's own log-density
    # bookkeeping (`TransformedDistribution.log_prob` with intermediates), with no inverse.
    base = dist.base_dist
    x, base_log_p = rsample_and_log_prob(base, key)
    steps = []
    for transform in dist.transforms:
        y, inter = transform.call_with_intermediates(x)
        steps.append((transform, x, y, inter))
        x = y
    event_dim, log_p = len(dist.event_shape), 0.0
    for transform, inp, out, inter in reversed(steps):
        batch_ndim = event_dim - transform.codomain.event_dim
        log_p = log_p - sum_rightmost(transform.log_abs_det_jacobian(inp, out, inter), batch_ndim)
        event_dim = transform.domain.event_dim + batch_ndim
    return x, log_p + sum_rightmost(base_log_p, event_dim - len(base.event_shape))
