"""The variational autoencoder of Kingma & Welling (2014) / Rezende et al. (2014) on binary data.

A Bernoulli decoder with a standard-normal prior and an amortised diagonal-Gaussian guide, both
as genvi generative functions over a `"data"` plate, with equinox MLPs; plus the binarised
scikit-learn digits the benchmarks and the demo train on.
"""

from ._data import binarized_digits as binarized_digits
from ._vae import VAE as VAE
from ._vae import guide as guide
from ._vae import model as model
from ._vae import point as point
from ._vae import point_guide as point_guide
