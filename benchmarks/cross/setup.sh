#!/usr/bin/env bash
# Make the two cross-environment virtual environments, outside the repository.
#   GenJAX 0.10.3 installs only beside jax 0.5.3; Pyro runs on torch 2.13.0 (its CPU wheel is the
#   only quick one: other versions pull gigabytes of CUDA wheels). Neither is a dependency of genvi.
#   Usage: bash benchmarks/cross/setup.sh [genjax|pyro|all]   (venvs in $GENJAX_VENV, $PYRO_VENV)
set -euo pipefail
GENJAX_VENV=${GENJAX_VENV:-/tmp/genjax-venv}
PYRO_VENV=${PYRO_VENV:-/tmp/pyro-venv}
what=${1:-all}
if [[ $what == genjax || $what == all ]]; then
  python3.11 -m venv "$GENJAX_VENV"
  "$GENJAX_VENV/bin/pip" install -q genjax==0.10.3 jax==0.5.3 jaxlib==0.5.3 scikit-learn
fi
if [[ $what == pyro || $what == all ]]; then
  python3.11 -m venv "$PYRO_VENV"
  # jax in the same venv gives the hand-written JAX baseline in the same process as Pyro.
  "$PYRO_VENV/bin/pip" install -q torch==2.13.0 pyro-ppl jax scikit-learn
fi
