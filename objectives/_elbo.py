"""The evidence lower bound, `E_q[log p(x, z) - log q(z)]`, with its usual variants.

- `particles=K` averages K independent ELBO estimates (a vmapped particle axis).
- `stl=True` ("sticking the landing", Roeder et al. 2017): the guide density is evaluated with
  its parameters' gradient stopped, which removes the zero-mean score term from reparameterised
  gradients (still unbiased; lower variance near the optimum).
- `analytic_kl=True` (like NumPyro's `TraceMeanField_ELBO`): for each latent site whose guide and
  model distributions have a registered closed-form KL (`numpyro.distributions.kl_divergence`),
  `log p(z_s | ...) - log q(z_s | ...)` is replaced by `-KL(q_s || p_s)` given the sampled parents;
  other sites keep the Monte Carlo term.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from numpyro.distributions.kl import kl_divergence

from genvi import Expectation, GenerativeFunction, Trace, expectation
from genvi._trace import sum_arrays

from ._common import stop
from ._weights import check_particles, particles as run_particles


def _kl(q: Trace, p: Trace, addr: str) -> jax.Array | None:
    """Closed-form KL(q_s || p_s) summed over the site's elements (scaled), or None."""
    rq, rp = q.site_distributions[addr], p.site_distributions[addr]
    levels = len(dict(q.plates).get(addr, ()))

    def one(lq, lp):
        return jnp.sum(kl_divergence(jax.tree.unflatten(rq.treedef, lq), jax.tree.unflatten(rp.treedef, lp)))

    for _ in range(levels):
        one = jax.vmap(one)
    try:
        total = jnp.sum(one(rq.leaves, rp.leaves))
    except NotImplementedError:
        return None
    return total * dict(q.scales).get(addr, 1.0)


def _elbo_terms(p: Trace, q: Trace, q_density: Trace, analytic_kl: bool) -> jax.Array:
    if not analytic_kl:
        return p.log_density - q_density.log_density
    latents = set(q.choices.addresses())
    closed = {a: kl for a in latents if (kl := _kl(q, p, a)) is not None}
    log_p = sum_arrays(v for a, v in p.site_log_densities.flat().items() if a not in closed)
    log_q = sum_arrays(v for a, v in q_density.site_log_densities.flat().items() if a not in closed)
    return log_p - log_q - sum_arrays(closed.values()) if closed else log_p - log_q


def elbo(model: GenerativeFunction, guide: GenerativeFunction, *, particles: int = 1,
         stl: bool = False, analytic_kl: bool = False) -> Expectation:
    """The ELBO of `model` with variational family `guide`, as an objective program.

    Both are called as `model(model_params, *data)` and `guide(guide_params, *data)`; the
    objective's arguments are `((model_params, guide_params), *data)`. Every guide site uses its
    own estimator (REPARAM by default where possible). Options: see the module docstring.
    """
    check_particles("elbo", particles)

    @expectation
    def elbo_program(params, *data):
        model_params, guide_params = params

        def one():
            q = guide.sim(guide_params, *data)
            p = model.score(q.choices, model_params, *data)
            q_density = guide.score(q.choices, stop(guide_params), *data) if stl else q
            return _elbo_terms(p, q, q_density, analytic_kl)

        return one() if particles == 1 else jnp.mean(run_particles(one, particles))

    return elbo_program
