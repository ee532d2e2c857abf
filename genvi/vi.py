"""Training and model selection: `fit`, `FitResult` (and, from the selection issue, `select`)."""

from ._fit import FitContext as FitContext
from ._fit import FitNonFinite as FitNonFinite
from ._fit import FitResult as FitResult
from ._fit import Strategy as Strategy
from ._fit import fit as fit
