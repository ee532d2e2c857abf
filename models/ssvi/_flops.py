"""Training FLOPs of sparse BNNs, counted analytically from the active weights.

Per example and layer, the local-reparameterisation forward pass costs two multiply-adds per
active weight and output position (one for the mean with `mu`, one for the variance with
`sigma^2`), i.e. `4 k p` FLOPs with `p` the output positions per weight (1 for a dense layer,
`H' W'` for a convolution); the backward pass twice that, so a training step costs
`3 * 4 * sum_l k_l p_l` per example. Each SSVI add step also needs one dense gradient
(`3 * 4 * sum_l size_l p_l` per example of its minibatch). Element-wise work (activations,
noise, the KL) is ignored: it is linear in the layer widths, not in the weights.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._net import SparseBNN


def step_flops(net: SparseBNN, batch_size: int, positions: Sequence[int] | None = None, dense: bool = False) -> float:
    """FLOPs of one training step on `batch_size` examples; `dense=True` counts every weight."""
    positions = positions or [1] * len(net.layers)
    per = sum((layer.size if dense else layer.active) * p for layer, p in zip(net.layers, positions))
    return 12.0 * batch_size * per


def training_flops(net: SparseBNN, *, steps: int, batch_size: int, add_steps: int = 0,
                   positions: Sequence[int] | None = None) -> float:
    """Total training FLOPs: `steps` sparse steps plus `add_steps` dense gradient evaluations."""
    return steps * step_flops(net, batch_size, positions) + add_steps * step_flops(net, batch_size, positions, True)
