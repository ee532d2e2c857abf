"""Functional Bayesian Tucker decomposition with GP factors (FunBaT; Fang et al., ICLR 2024).

Continuous-indexed tensor data: `y = vec(W)ᵀ (u¹(t₁) ⊗ … ⊗ u^K(t_K)) + ε`, each mode's R latent
functions with Matérn GP priors in state-space form. Two inference routes share the model code:
`fit_ep` (the paper's conditional EP with per-mode Kalman smoothing) and `fit_vi` (genvi's
ELBO with a structured Gauss-Markov variational family, trained by `genvi.vi.fit`).
"""

from ._data import load_funbat as load_funbat
from ._data import synthetic_surface as synthetic_surface
from ._ep import EPResult as EPResult
from ._ep import EPState as EPState
from ._ep import fit_ep as fit_ep
from ._interp import interpolate as interpolate
from ._kalman import PathPosterior as PathPosterior
from ._kalman import smooth as smooth
from ._markov import GaussMarkov as GaussMarkov
from ._posterior import TuckerPosterior as TuckerPosterior
from ._spec import TensorData as TensorData
from ._spec import TuckerGP as TuckerGP
from ._spec import check_grid as check_grid
from ._spec import tensor_data as tensor_data
from ._ssm import ModePrior as ModePrior
from ._ssm import StateSpace as StateSpace
from ._ssm import matern_kernel as matern_kernel
from ._ssm import matern_sde as matern_sde
from ._ssm import mode_prior as mode_prior
from ._vi import VIResult as VIResult
from ._vi import entry_values as entry_values
from ._vi import factors as factors
from ._vi import fit_vi as fit_vi
from ._vi import guide as guide
from ._vi import guide_factors as guide_factors
from ._vi import init_guide as init_guide
from ._vi import model as model
from ._vi import vi_posterior as vi_posterior
