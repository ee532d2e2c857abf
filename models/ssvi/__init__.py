"""Sparse-subspace Bayesian neural networks (SSVI; Li, Miao, Qiu, Zhang, ICLR 2024).

A mean-field Gaussian posterior over a sparse support of fixed size per layer (off-support
weights exactly zero), trained with the local reparameterisation trick and an alternating
remove-and-add strategy that `genvi.vi.fit` runs between its compiled chunks.
"""

from ._criteria import CRITERIA as CRITERIA
from ._criteria import abs_mean as abs_mean
from ._criteria import abs_mu as abs_mu
from ._criteria import criterion as criterion
from ._criteria import snr as snr
from ._criteria import snr_abs as snr_abs
from ._data import classification_split as classification_split
from ._flops import step_flops as step_flops
from ._flops import training_flops as training_flops
from ._layers import SparseConv2d as SparseConv2d
from ._layers import SparseLinear as SparseLinear
from ._layers import SparseWeights as SparseWeights
from ._layers import sparse_conv2d as sparse_conv2d
from ._layers import sparse_linear as sparse_linear
from ._net import SparseBNN as SparseBNN
from ._net import elbo as elbo
from ._net import guide as guide
from ._net import kl_weight as kl_weight
from ._net import likelihood as likelihood
from ._net import mlp as mlp
from ._net import point_guide as point_guide
from ._net import point_likelihood as point_likelihood
from ._net import stack as stack
from ._net import unstack as unstack
from ._predict import metrics as metrics
from ._predict import predict as predict
from ._predict import prune as prune
from ._strategy import SSVI as SSVI
from ._strategy import layers_of as layers_of
