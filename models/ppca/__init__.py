"""Probabilistic PCA (Tipping & Bishop 1999) as genvi models, for ELBO-based choice of k.

`model`/`guide`: priors on the loadings, the noise variance and the latents (collapsed in closed
form), mean-field guide, learned loading prior scale; `candidate(k, x)` gives a
`genvi.vi.select` candidate. `fixed_model`/`fixed_guide`: fixed loadings with explicit latents
and the closed-form `marginal_log_likelihood`.
"""

from ._fixed import FixedLoadings as FixedLoadings
from ._fixed import LatentGuideParams as LatentGuideParams
from ._fixed import fixed_guide as fixed_guide
from ._fixed import fixed_init as fixed_init
from ._fixed import fixed_model as fixed_model
from ._fixed import marginal_log_likelihood as marginal_log_likelihood
from ._model import GuideParams as GuideParams
from ._model import ModelParams as ModelParams
from ._model import candidate as candidate
from ._model import guide as guide
from ._model import init as init
from ._model import model as model
