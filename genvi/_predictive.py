"""Posterior predictive sampling: guide sites from the guide, the rest from the model."""

from __future__ import annotations

from typing import Any

import jax

from . import _handlers as H
from ._choicemap import ChoiceMap
from ._errors import ConfigError
from ._gen import GenerativeFunction, _as_key, _top


def predictive(model: GenerativeFunction, guide: GenerativeFunction, params: Any, *data: Any,
               num_samples: int, key: jax.Array | int) -> dict[str, jax.Array]:
    """Draw `num_samples` joint samples of every site, vectorised.

    Latent sites the guide covers come from the guide (run with `guide_params` and `data`);
    every other site of the model, observed ones included, is drawn from the model given them,
    so observed addresses hold posterior-predictive replicates of the data.

    **Arguments:** `params = (model_params, guide_params)` as for objectives.

    **Returns:** a dict from full address to an array with a leading `num_samples` axis.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ConfigError(f"predictive(num_samples={num_samples!r}): must be a positive integer")
    model_params, guide_params = params

    def one(k):
        k_guide, k_model = jax.random.split(k)
        guide_trace = guide.simulate(k_guide, guide_params, *data)
        handler = H.Predict((k_model, guide_trace.choices))
        _top(model, handler, (model_params, *data))
        out = dict(guide_trace.choices.flat())
        out.update(ChoiceMap(handler.choices).flat())
        return out

    return jax.vmap(one)(jax.random.split(_as_key(key), num_samples))
