"""Binarised 8x8 digits, shipped with scikit-learn (no download)."""

from __future__ import annotations

import numpy as np


def binarized_digits(test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`(train, test)` float32 arrays of shape `[n, 64]`: pixels >= 8 (of 16) are 1.

    The split is a fixed random permutation (`seed`); needs scikit-learn (`pip install genvi[dev]`).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("binarized_digits needs scikit-learn: pip install 'genvi[dev]'") from err
    x = (load_digits().data >= 8).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    return x[order[n_test:]], x[order[:n_test]]
