"""Gradient estimators: one module per strategy, each a rule over the site and its continuation.

| estimator | serves | gradient |
| --- | --- | --- |
| `REPARAM` | reparameterisable distributions | pathwise |
| `REINFORCE(baseline=...)` | any distribution | score function, Rao-Blackwellised |
| `ENUM` | finite supports | exact |
| `MVD` | Bernoulli, Categorical, Poisson, Normal | measure-valued derivative |
| `DETACHED` | any | none: for objectives that add their own score term (VIMCO, wake-sleep) |

Write your own by subclassing `Estimator` (a `rule(call)`) or `LocalEstimator` (`draw` and
`adjust`); nothing in the interpreter changes.
"""

from genvi._site import Estimator as Estimator
from genvi._site import LocalEstimator as LocalEstimator
from genvi._site import Outcome as Outcome
from genvi._site import SiteCall as SiteCall
from genvi._site import magic_box as magic_box

from ._baselines import Baseline as Baseline
from ._baselines import Learned as Learned
from ._baselines import LeaveOneOut as LeaveOneOut
from ._baselines import RunningMean as RunningMean
from ._default import default_estimator as default_estimator
from ._detached import DETACHED as DETACHED
from ._detached import Detached as Detached
from ._enum import ENUM as ENUM
from ._enum import Enum as Enum
from ._mvd import MVD as MVD
from ._mvd import MeasureValued as MeasureValued
from ._reinforce import REINFORCE as REINFORCE
from ._reinforce import Reinforce as Reinforce
from ._reparam import REPARAM as REPARAM
from ._reparam import Reparam as Reparam
