"""Variational EM for a linear prior: `fit` with the control reset to its exact optimum.

For `LinearDrift` + `ConstantDiffusion` the best `AffineControl` is known in closed form
(`optimal_control`, a Riccati recursion). Setting it before every step makes `fit`'s gradient
steps on the prior's parameters (H, and slope, offset or scale where trainable) variational EM:
by the envelope theorem the ELBO's gradient at the optimal control is the gradient of the
family's best ELBO, so those parameters climb it without the bias that an unconverged control
gives a jointly trained H (docs/fbm_sde.md, part iii).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx

from genvi import ConfigError
from genvi.vi import Strategy

from ._linear import optimal_control
from ._sde import PathConfig


class ExactControl(Strategy):
    """A `fit` strategy: every `every` steps, `params = (ObsModel, Posterior)` gets the exact
    optimal control for its current prior (the E-step); `fit`'s own steps are the M-step.

    **Arguments** (keywords): `config` (the `PathConfig` the model and guide use), `floor` (the control's
    time-to-go preconditioner, as in `AffineControl(floor=...)`), `every` (default 1).
    The observations are `fit`'s first data array, shape (paths, n_obs, 1). Start `fit` from
    `Posterior(sde, optimal_control(sde, config, obs, noise, floor), num_paths=paths)`: the
    strategy first runs after step `every`. `fit`'s optimiser also steps the control, which the
    next reset discards; the returned control is therefore one step past the optimum for the
    previous prior, so call `optimal_control` once more for the returned one.
    """

    config: PathConfig = eqx.field(static=True, kw_only=True)
    floor: float | None = eqx.field(static=True, default=None, kw_only=True)
    every: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        if not isinstance(self.every, int) or self.every < 1:
            raise ConfigError(f"ExactControl(every={self.every!r}): must be a positive integer (steps between resets)")

    def update(self, step: int, params: Any, opt_state: Any, context) -> tuple[Any, Any]:
        obs_model, posterior = params
        control = optimal_control(posterior.sde, self.config, context.data[0], float(obs_model.noise), self.floor)
        return (obs_model, eqx.tree_at(lambda p: p.control, posterior, control)), opt_state
