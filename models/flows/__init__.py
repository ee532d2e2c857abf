"""Normalizing flows (Rezende & Mohamed 2015, and the modern flows) as genvi distributions.

A [`Flow`][] composes bijection layers over a base distribution; `flow(context)` is a NumPyro
distribution with `rsample` and an exact `log_prob`, so `sample("z", flow(x))` works at any
genvi site with REPARAM, and the flow (an equinox module) is an ordinary guide parameter.

Layers: `Planar` and `Radial` (the paper's, with its invertibility constraints and exact
inverses), `IAF` and `MAF` (MADE conditioner), `AffineCoupling` (RealNVP), `SplineCoupling`
(rational-quadratic splines), `Permute` / `Reverse`. All conditioners are equinox modules.

**Which library's bijector math.** FlowJAX 19 (equinox-based, maintained) rather than NumPyro's
transforms: NumPyro has no coupling or spline transforms and its autoregressive transforms are
tied to `stax` networks, while FlowJAX's `RationalQuadraticSpline` is a small, well-tested
equinox module we can parameterise from our own equinox conditioners. We use FlowJAX's spline
for `SplineCoupling` and write the rest ourselves, because FlowJAX's planar layer has no tanh
inverse (`NotImplementedError`), no JAX library has a radial flow, and the affine maps are two
lines. FlowJAX is imported only when a spline layer is built (`pip install 'genvi[flows]'`).

The 2-D energies of the paper's section 6.1 and an annealed training loop live in
`genvi.models.flows` too (`energy`, `log_normaliser`, `energy_model`, `fit_annealed`).
"""

from ._autoregressive import IAF as IAF
from ._autoregressive import MAF as MAF
from ._bijection import Bijection as Bijection
from ._bijection import Permute as Permute
from ._bijection import Reverse as Reverse
from ._coupling import AffineCoupling as AffineCoupling
from ._coupling import SplineCoupling as SplineCoupling
from ._flow import Flow as Flow
from ._flow import FlowDistribution as FlowDistribution
from ._made import MADE as MADE
from ._made import MaskedLinear as MaskedLinear
from ._planar import Planar as Planar
from ._radial import Radial as Radial
from ._energies import energy as energy
from ._energies import energy_model as energy_model
from ._energies import fit_annealed as fit_annealed
from ._energies import log_normaliser as log_normaliser
from ._energies import paper_schedule as paper_schedule
from ._stack import Stack as Stack
from ._stack import stack as stack
