"""Scaling out across processes: `initialize` and `launch_local` (see `genvi/_distributed.py`)."""

from ._distributed import initialize as initialize
from ._distributed import launch_local as launch_local
