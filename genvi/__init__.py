"""genvi: programmable variational inference in JAX.

Models and variational families are generative functions (`@gen`); objectives are programs
(`@expectation`); each random choice picks its unbiased gradient estimator.
"""

from ._choicemap import ChoiceMap as ChoiceMap
from ._combinators import Scan as Scan
from ._combinators import Vmap as Vmap
from ._combinators import scan as scan
from ._combinators import vmap as vmap
from ._errors import AddressError as AddressError
from ._errors import ConfigError as ConfigError
from ._errors import DomainError as DomainError
from ._errors import EstimatorError as EstimatorError
from ._errors import FitError as FitError
from ._errors import GenviError as GenviError
from ._errors import ShapeError as ShapeError
from ._expectation import Expectation as Expectation
from ._expectation import expectation as expectation
from ._gen import GenCall as GenCall
from ._gen import GenerativeFunction as GenerativeFunction
from ._gen import GenFn as GenFn
from ._gen import factor as factor
from ._gen import gen as gen
from ._gen import sample as sample
from ._collapse import Collapse as Collapse
from ._collapse import collapse as collapse
from ._marginal import Marginal as Marginal
from ._marginal import Normalize as Normalize
from ._marginal import marginal as marginal
from ._marginal import normalize as normalize
from ._draw import rsample_and_log_prob as rsample_and_log_prob
from ._numpyro import NumPyroFunction as NumPyroFunction
from ._numpyro import from_numpyro as from_numpyro
from ._predictive import predictive as predictive
from ._tfp import TFPDistribution as TFPDistribution
from ._tfp import tfp_distribution as tfp_distribution
from ._trace import DistRecord as DistRecord
from ._trace import Trace as Trace

__version__ = "0.1.0"
