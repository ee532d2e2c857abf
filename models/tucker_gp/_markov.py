"""`GaussMarkov`: a NumPyro distribution over a whole Gauss-Markov state path.

`x_i = T_i x_(i−1) + b_i + L_i ε_i`, `ε_i ~ N(0, I)`, `x_(−1) = 0`, i = 0 … n−1, event shape
(n, D). With `T = A`, `b = 0`, `L = chol(Q)` it is a mode's state-space GP prior (`from_prior`);
with free `T, b, L` it is the structured variational family of the VI route (a Markov Gaussian
parameterised by per-step conditional means and covariance Choleskys, O(n D³) to sample and
score, reparameterised). The KL between two of them is registered with NumPyro's
`kl_divergence`, so `elbo(..., analytic_kl=True)` uses it in closed form:
`KL = Σ_i E_q(x_(i−1)) KL(q(x_i | x_(i−1)) ‖ p(x_i | x_(i−1)))`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.distributions.kl import kl_divergence

from ._kalman import PathPosterior
from ._ssm import ModePrior


def _tril_inv(L: jax.Array) -> jax.Array:
    eye = jnp.broadcast_to(jnp.eye(L.shape[-1], dtype=L.dtype), L.shape)
    return jax.scipy.linalg.solve_triangular(L, eye, lower=True)


class GaussMarkov(dist.Distribution):
    """A Gaussian over a path of n states of size D with first-order Markov structure.

    **Arguments:** `trans` (n, D, D) (`trans[0]` unused), `loc` (n, D), `scale_tril` (n, D, D)
    lower-triangular with positive diagonal.
    """

    arg_constraints = {"trans": constraints.real, "loc": constraints.real, "scale_tril": constraints.real}
    support = constraints.independent(constraints.real, 2)
    reparametrized_params = ["trans", "loc", "scale_tril"]
    pytree_data_fields = ("trans", "loc", "scale_tril")

    def __init__(self, trans: jax.Array, loc: jax.Array, scale_tril: jax.Array, *, validate_args=None):
        self.trans, self.loc, self.scale_tril = trans, loc, scale_tril
        super().__init__(batch_shape=(), event_shape=loc.shape[-2:], validate_args=validate_args)

    @classmethod
    def from_prior(cls, prior: ModePrior, jitter: float = 1e-6) -> "GaussMarkov":
        """The state-space GP prior of a mode as a path distribution."""
        D = prior.Q.shape[-1]
        scale = jnp.max(jnp.diagonal(prior.Pinf))
        L = jnp.linalg.cholesky(prior.Q + jitter * scale * jnp.eye(D, dtype=prior.Q.dtype))
        return cls(prior.A, jnp.zeros(prior.A.shape[:2], prior.A.dtype), L)

    def sample(self, key, sample_shape=()):
        n, D = self.event_shape
        eps = jax.random.normal(key, tuple(sample_shape) + (n, D), self.loc.dtype)

        def step(x, inp):
            T, b, L, e = inp
            x = jnp.einsum("ij,...j->...i", T, x) + b + jnp.einsum("ij,...j->...i", L, e)
            return x, x

        x0 = jnp.zeros(tuple(sample_shape) + (D,), self.loc.dtype)
        _, xs = jax.lax.scan(step, x0, (self.trans, self.loc, self.scale_tril, jnp.moveaxis(eps, -2, 0)))
        return jnp.moveaxis(xs, 0, -2)

    def log_prob(self, value):
        n, D = self.event_shape
        prev = jnp.concatenate([jnp.zeros_like(value[..., :1, :]), value[..., :-1, :]], axis=-2)
        resid = value - jnp.einsum("nij,...nj->...ni", self.trans, prev) - self.loc
        z = jnp.einsum("nij,...nj->...ni", _tril_inv(self.scale_tril), resid)
        logdet = jnp.sum(jnp.log(jnp.abs(jnp.diagonal(self.scale_tril, axis1=-2, axis2=-1))))
        return -0.5 * jnp.sum(z**2, axis=(-2, -1)) - logdet - 0.5 * n * D * jnp.log(2 * jnp.pi)

    def marginals(self) -> PathPosterior:
        """Means, covariances and lag-one cross-covariances of the path (a forward recursion)."""
        S = self.scale_tril @ jnp.swapaxes(self.scale_tril, -1, -2)

        def step(carry, inp):
            m, P = carry
            T, b, Si = inp
            m_new, P_new = T @ m + b, T @ P @ T.T + Si
            return (m_new, 0.5 * (P_new + P_new.T)), (m_new, P_new, P @ T.T)

        D = self.event_shape[1]
        init = (jnp.zeros(D, self.loc.dtype), jnp.zeros((D, D), self.loc.dtype))
        _, (m, P, cross_prev) = jax.lax.scan(step, init, (self.trans, self.loc, S))
        cross = jnp.concatenate([cross_prev[1:], jnp.zeros_like(cross_prev[:1])])  # Cov(x_i, x_(i+1))
        return PathPosterior(m, P, cross)

    @property
    def mean(self):
        return self.marginals().mean


@kl_divergence.register(GaussMarkov, GaussMarkov)
def _kl_gauss_markov(q: GaussMarkov, p: GaussMarkov) -> jax.Array:
    marg = q.marginals()
    D = q.event_shape[1]
    prev_m = jnp.concatenate([jnp.zeros((1, D), q.loc.dtype), marg.mean[:-1]])
    prev_P = jnp.concatenate([jnp.zeros((1, D, D), q.loc.dtype), marg.cov[:-1]])
    Lp_inv = _tril_inv(p.scale_tril)
    dT = q.trans - p.trans
    v = jnp.einsum("nij,nj->ni", dT, prev_m) + q.loc - p.loc
    w = jnp.einsum("nij,nj->ni", Lp_inv, v)
    B = Lp_inv @ dT  # (n, D, D)
    trace_mean = jnp.einsum("nij,njk,nik->n", B, prev_P, B)
    trace_cov = jnp.sum((Lp_inv @ q.scale_tril) ** 2, axis=(-2, -1))
    logdet = (jnp.sum(jnp.log(jnp.abs(jnp.diagonal(p.scale_tril, axis1=-2, axis2=-1))), -1)
              - jnp.sum(jnp.log(jnp.abs(jnp.diagonal(q.scale_tril, axis1=-2, axis2=-1))), -1))
    return jnp.sum(0.5 * (trace_cov + trace_mean + jnp.sum(w**2, -1) - D) + logdet)
