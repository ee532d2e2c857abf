"""Training and model selection: `fit`, `FitResult`, `select`, `SelectionResult`."""

from ._fit import FitContext as FitContext
from ._step import FitNonFinite as FitNonFinite
from ._fit import FitResult as FitResult
from ._fit import Strategy as Strategy
from ._fit import fit as fit
from ._select import SelectionWarning as SelectionWarning
from ._select import select as select
from ._selection import CandidateResult as CandidateResult
from ._selection import SelectionResult as SelectionResult
