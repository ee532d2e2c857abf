"""Repository-wide pytest set-up: notebooks run at small size under the test command."""

import os

# Notebooks read GENVI_SMALL to shrink data and steps; nbmake kernels inherit the environment.
os.environ.setdefault("GENVI_SMALL", "1")
