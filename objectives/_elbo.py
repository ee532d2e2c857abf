"""The evidence lower bound, `E_q[log p(x, z) - log q(z)]`."""

from __future__ import annotations

from genvi import Expectation, GenerativeFunction, expectation


def elbo(model: GenerativeFunction, guide: GenerativeFunction) -> Expectation:
    """The ELBO of `model` with variational family `guide`, as an objective program.

    Both are called as `model(model_params, *data)` and `guide(guide_params, *data)`; the
    objective's arguments are `((model_params, guide_params), *data)`. Every guide site uses its
    own estimator (REPARAM by default where possible).
    """

    @expectation
    def elbo_program(params, *data):
        model_params, guide_params = params
        trace = guide.sim(guide_params, *data)
        return model.log_density(trace.choices, model_params, *data) - trace.log_density

    return elbo_program
