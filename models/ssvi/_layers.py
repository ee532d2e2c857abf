"""Sparse mean-field Gaussian layers with the local reparameterisation trick.

A layer's weight `W` (shape `(out, in)` for a dense layer, `(out, in, kh, kw)` for a
convolution) has a posterior `q(W_i) = N(mu_i, softplus(rho_i)^2)` over a support `index` of
fixed size `k`; every weight off the support is exactly zero (a point mass at 0, so it adds no
KL). Only the active entries are stored (`index`, `mu`, `rho`: `k` numbers each), so memory
scales with the density. The forward pass builds the dense mean and variance views by scattering
the active values into zeros, then gives the mean and variance of the pre-activations
(Kingma et al. 2015, "local reparameterisation"): for a dense layer and input `h`,
`E[W h] = M h + b` and `Var[W h] = S (h * h)`, `M`, `S` the dense views of `mu` and `sigma^2`.

`probe` is an optional dense array added to the mean weight; it is zero-valued and present only
when SSVI's add step asks for `dL/dW` at every position (active or not), so dense gradients are
computed at add steps and never during ordinary training steps.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from genvi import ConfigError


def active_count(density: float, size: int, what: str) -> int:
    """The support size `round(density * size)`; a `ConfigError` if it is out of range or empty."""
    if not isinstance(density, (int, float)) or not 0.0 < float(density) <= 1.0:
        raise ConfigError(f"{what}: density={density!r} must lie in (0, 1]")
    k = int(round(float(density) * size))
    if k < 1:
        raise ConfigError(f"{what}: density={density!r} keeps round({density} * {size}) = 0 of its {size} "
                          f"weights; the layer is too small for this density, raise it to at least {1 / size:.2g}")
    return k


class SparseWeights(eqx.Module):
    """The sparse posterior of one weight tensor; subclasses say how it meets the input."""

    index: Int[Array, " k"]
    mu: Float[Array, " k"]
    rho: Float[Array, " k"]
    bias: Float[Array, " out"]
    shape: tuple[int, ...] = eqx.field(static=True)
    prior_scale: float = eqx.field(static=True)
    probe: Float[Array, "..."] | None = None

    @property
    def size(self) -> int:
        """The number of weights of the dense tensor."""
        return math.prod(self.shape)

    @property
    def active(self) -> int:
        """The support size `k` (the last axis: stacked layers, see `stack`, share it)."""
        return int(self.index.shape[-1])

    @property
    def sigma(self) -> Float[Array, " k"]:
        return jax.nn.softplus(self.rho)

    def dense(self, values: Float[Array, " k"]) -> Float[Array, "..."]:
        """`values` scattered onto the support of a zero tensor of the weight's shape."""
        return jnp.zeros(self.size, values.dtype).at[self.index].set(values).reshape(self.shape)

    def mask(self) -> jax.Array:
        """The support as a boolean tensor of the weight's shape."""
        return jnp.zeros(self.size, bool).at[self.index].set(True).reshape(self.shape)

    def mean_weight(self) -> Float[Array, "..."]:
        w = self.dense(self.mu)
        return w if self.probe is None else w + self.probe

    def sample_weight(self, key: jax.Array) -> Float[Array, "..."]:
        """A draw of the whole weight tensor: `mu + sigma * eps` on the support, 0 elsewhere."""
        return self.dense(self.mu + self.sigma * jax.random.normal(key, self.mu.shape, self.mu.dtype))

    def kl(self) -> jax.Array:
        """`KL(q || p)` summed over the active weights, prior `N(0, prior_scale^2)` per weight."""
        var_ratio = (self.sigma / self.prior_scale) ** 2
        return 0.5 * jnp.sum(var_ratio + (self.mu / self.prior_scale) ** 2 - 1.0 - jnp.log(var_ratio))

    def with_probe(self) -> "SparseWeights":
        """This layer with a zero dense `probe` on its mean weight (for the add step's gradient)."""
        return eqx.tree_at(lambda s: s.probe, self, jnp.zeros(self.mu.shape[:-1] + self.shape, self.mu.dtype),
                           is_leaf=lambda x: x is None)

    def moments(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Mean and variance of the pre-activations for one input `h` (no batch axis)."""
        raise NotImplementedError

    def apply(self, weight: jax.Array, h: jax.Array) -> jax.Array:
        """The deterministic pre-activation `W h + b` for a given dense weight (prediction)."""
        raise NotImplementedError


class SparseLinear(SparseWeights):
    """A sparse Bayesian dense layer, weight shape `(out, in)`; input `(in,)`, output `(out,)`."""

    def moments(self, h):
        mean = self.mean_weight() @ h + self.bias
        var = self.dense(self.sigma ** 2) @ (h * h)
        return mean, var

    def apply(self, weight, h):
        return weight @ h + self.bias


def _conv(w: jax.Array, h: jax.Array, padding: str) -> jax.Array:
    return jax.lax.conv_general_dilated(h[None], w, (1, 1), padding, dimension_numbers=("NCHW", "OIHW", "NCHW"))[0]


class SparseConv2d(SparseWeights):
    """A sparse Bayesian 2-D convolution (stride 1), weight `(out, in, kh, kw)`; input
    `(in, H, W)` (channels first), output `(out, H', W')`."""

    padding: str = eqx.field(static=True, default="SAME")

    def moments(self, h):
        mean = _conv(self.mean_weight(), h, self.padding) + self.bias[:, None, None]
        var = _conv(self.dense(self.sigma ** 2), h * h, self.padding)
        return mean, var

    def apply(self, weight, h):
        return _conv(weight, h, self.padding) + self.bias[:, None, None]


def _init(cls, key: jax.Array, shape: tuple[int, ...], fan_in: int, density: float, prior_scale: float,
          init_sigma: float, what: str, **extra) -> SparseWeights:
    """A random support of `round(density * size)` weights, He-scaled means for its fan-in."""
    if not prior_scale > 0:
        raise ConfigError(f"{what}: prior_scale={prior_scale!r} must be positive")
    if not init_sigma > 0:
        raise ConfigError(f"{what}: init_sigma={init_sigma!r} must be positive")
    size = math.prod(shape)
    k = active_count(density, size, what)
    k_index, k_mu = jax.random.split(key)
    index = jnp.sort(jax.random.choice(k_index, size, (k,), replace=False)).astype(jnp.int32)
    scale = math.sqrt(2.0 / max(1.0, density * fan_in))
    mu = scale * jax.random.normal(k_mu, (k,))
    rho = jnp.full((k,), math.log(math.expm1(init_sigma)))
    return cls(index, mu, rho, jnp.zeros(shape[0]), shape, float(prior_scale), **extra)


def sparse_linear(key: jax.Array, in_features: int, out_features: int, density: float, *,
                  prior_scale: float = 1.0, init_sigma: float = 1e-3) -> SparseLinear:
    """A [`SparseLinear`][] with a uniformly random support of `round(density * out * in)` weights."""
    return _init(SparseLinear, key, (out_features, in_features), in_features, density, prior_scale, init_sigma,
                 f"sparse_linear({in_features} -> {out_features})")


def sparse_conv2d(key: jax.Array, in_channels: int, out_channels: int, kernel: int, density: float, *,
                  prior_scale: float = 1.0, init_sigma: float = 1e-3, padding: str = "SAME") -> SparseConv2d:
    """A [`SparseConv2d`][] with a random support of `round(density * out * in * kernel^2)` weights."""
    return _init(SparseConv2d, key, (out_channels, in_channels, kernel, kernel), in_channels * kernel * kernel,
                 density, prior_scale, init_sigma, f"sparse_conv2d({in_channels} -> {out_channels}, {kernel}x{kernel})",
                 padding=padding)
