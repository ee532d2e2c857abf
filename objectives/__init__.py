"""Objectives: variational bounds written as `@expectation` programs (each is to be maximised)."""

from ._elbo import elbo as elbo
from ._iwae import iwae as iwae
