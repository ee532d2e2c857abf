"""Objectives: variational bounds written as `@expectation` programs, each to be maximised.

Each module is short and doubles as an example of writing your own objective.
"""

from ._elbo import elbo as elbo
from ._iwae import iwae as iwae
from ._renyi import renyi as renyi
from ._vimco import leave_one_out_bounds as leave_one_out_bounds
from ._vimco import vimco as vimco
from ._wake_sleep import p_wake as p_wake
from ._wake_sleep import q_wake as q_wake
from ._wake_sleep import rws as rws
