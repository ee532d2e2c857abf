"""Variational inference for SDEs driven by fractional noise (Daems, Opper, Crevecoeur, Birdal, ICLR 2024)."""

from ._mafbm import approximation_error as approximation_error
from ._mafbm import exp_gammaincc as exp_gammaincc
from ._mafbm import fbm_second_moment as fbm_second_moment
from ._mafbm import gamma_grid as gamma_grid
from ._mafbm import omega_system as omega_system
from ._mafbm import optimal_omega as optimal_omega
from ._mafbm import stationary_covariance as stationary_covariance
