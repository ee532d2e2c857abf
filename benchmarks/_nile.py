"""The Nile series for `fbm_nile.py`: loading, held-out splits, and held-out predictive summaries.

The data are statsmodels' bundled Nile flows (annual volume at Aswan, 10^8 m^3, 1871-1970, 100
values; Cobb 1978), read offline. Time is put on [0, 1] as t = (year - 1871) / 99, and flows are
standardised with the *training* points' mean and sd (no held-out information leaks into it).
"""

from __future__ import annotations

import numpy as np
import scipy.special

SPLITS = ("interp", "forecast")


def load_nile() -> tuple[np.ndarray, np.ndarray]:
    """(years, flows), both float64 of shape (100,)."""
    import statsmodels.api as sm

    data = sm.datasets.nile.load_pandas().data
    return data["year"].to_numpy(np.float64), data["volume"].to_numpy(np.float64)


def split_indices(n: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices of a series of length n.

    `"interp"`: every 5th point held out, starting at the third (indices 2, 7, ...), so the first
    and last points stay in training and the time span (and so the MA-fBM horizon) is unchanged.
    `"forecast"`: the last n // 5 points held out (1951-1970 for the Nile).
    """
    idx = np.arange(n)
    if kind == "interp":
        held = idx[idx % 5 == 2]
    elif kind == "forecast":
        held = idx[n - n // 5:]
    else:
        raise ValueError(f"split kind must be one of {SPLITS}, got {kind!r}")
    return np.setdiff1d(idx, held), held


def nile_split(kind: str) -> dict:
    """The standardised series, times on [0, 1] and the split, as a dict of float64 arrays."""
    years, flows = load_nile()
    train, held = split_indices(len(years), kind)
    mean, sd = flows[train].mean(), flows[train].std(ddof=1)
    times = (years - years[0]) / (years[-1] - years[0])
    return dict(years=years, flows=flows, z=(flows - mean) / sd, times=times, train=train, held=held,
                mean=mean, sd=sd)


def log_mean_exp(values: np.ndarray, axis: int = 0) -> np.ndarray:
    values = np.asarray(values, np.float64)
    return scipy.special.logsumexp(values, axis=axis) - np.log(values.shape[axis])


def predictive_summary(log_lik: np.ndarray) -> dict:
    """Held-out predictive log-likelihood from per-sample, per-point log densities.

    `log_lik[s, j] = log p(o_j | X_s(t_j))` for posterior samples s = 1..S and held-out points j.
    Returns the joint estimate log (1/S) sum_s prod_j p(o_j | X_s) of log p(o_held | o_train)
    with its Monte-Carlo standard error (delta method: sd(w) / (sqrt(S) mean(w)) for w the
    sample weights), and the pointwise values log (1/S) sum_s p(o_j | X_s) (their sum is the
    "lppd"; their differences between two models give a paired s.e. over held-out points).
    """
    log_lik = np.asarray(log_lik, np.float64)
    S = log_lik.shape[0]
    joint = log_lik.sum(1)
    w = np.exp(joint - joint.max())
    pointwise = log_mean_exp(log_lik, 0)
    return dict(joint=float(log_mean_exp(joint)), joint_se=float(w.std(ddof=1) / (np.sqrt(S) * w.mean())),
                pointwise=pointwise, lppd=float(pointwise.sum()), ess=float(w.sum() ** 2 / np.sum(w**2)))


def gaussian_log_density(obs: np.ndarray, mean: np.ndarray, sd: float | np.ndarray) -> np.ndarray:
    return -0.5 * np.log(2 * np.pi * sd**2) - 0.5 * ((obs - mean) / sd) ** 2
