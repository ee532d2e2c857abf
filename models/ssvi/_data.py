"""The benchmark data: scikit-learn's bundled digits and breast-cancer sets, fixed 80/20 splits."""

from __future__ import annotations

import numpy as np

from genvi import ConfigError


def classification_split(name: str, *, seed: int = 0, test_fraction: float = 0.2):
    """`(x_train, y_train, x_test, y_test)` of `"digits"` or `"breast_cancer"`, float32 features
    standardised with the training statistics, int32 labels; the split is fixed by `seed`.
    (scikit-learn, a dev dependency, is imported here, not when the family is.)"""
    from sklearn import datasets

    loaders = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer}
    if name not in loaders:
        raise ConfigError(f"classification_split({name!r}): choose one of {sorted(loaders)}")
    x, y = loaders[name](return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    x = ((x - mean) / std).astype(np.float32)
    y = y.astype(np.int32)
    return x[train], y[train], x[test], y[test]
