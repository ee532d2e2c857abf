"""Shared test set-up: fixed keys, warnings as errors, the Monte Carlo assertion and a jaxpr walk."""

from __future__ import annotations

from collections.abc import Iterator

import jax
import numpy as np
import pytest

from genvi import _jax_compat

# STYLE.md asks for strict dtype and rank promotion in tests; neither can be switched on globally
# because NumPyro's own distributions rely on both implicit promotions (bool with int arrays in
# Bernoulli, rank promotion in constraint checks). genvi checks the shapes of observations and
# choices itself instead (tests/test_errors.py). Warnings are errors (pyproject.toml).


@pytest.fixture
def key() -> jax.Array:
    return jax.random.PRNGKey(0)


def tree_allclose(a, b, rtol: float = 1e-5, atol: float = 1e-6) -> bool:
    """Whether two pytrees have the same structure and close leaves."""
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    return ta == tb and all(np.allclose(x, y, rtol=rtol, atol=atol) for x, y in zip(la, lb))


def assert_unbiased(samples, exact, sigmas: float = 5.0, min_draws: int = 10_000) -> None:
    """Each leaf's sample mean lies within `sigmas` standard errors (from the samples) of exact.

    The standard error is floored at 1e-6 relative so zero-variance estimators (ENUM) are held
    to float precision instead of dividing by zero.
    """
    for s, e in zip(jax.tree.leaves(samples), jax.tree.leaves(exact)):
        s = np.asarray(s, dtype=np.float64)
        assert s.shape[0] >= min_draws, f"only {s.shape[0]} draws"
        mean = s.mean(0)
        se = s.std(0) / np.sqrt(s.shape[0])
        tol = sigmas * se + 1e-5 * (1 + np.abs(np.asarray(e)))
        err = np.abs(mean - np.asarray(e))
        assert np.all(err <= tol), f"mean {mean} vs exact {np.asarray(e)}: error {err} > {tol} (se {se})"


def assert_same_mean(a, b, sigmas: float = 5.0) -> None:
    """Two sets of draws have the same mean within `sigmas` combined standard errors."""
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        se = np.sqrt(x.var(0) / x.shape[0] + y.var(0) / y.shape[0])
        err = np.abs(x.mean(0) - y.mean(0))
        assert np.all(err <= sigmas * se + 1e-7), f"means {x.mean(0)} and {y.mean(0)} differ by {err} > {sigmas} x {se}"


def draws(fn, key: jax.Array, n: int):
    """`n` independent evaluations of `fn(key)`, vmapped and jitted."""
    return jax.jit(jax.vmap(fn))(jax.random.split(key, n))


def all_eqns(jaxpr) -> Iterator:
    """Every equation of `jaxpr` and, depth first, of the sub-jaxprs its equations hold."""
    for eqn in jaxpr.eqns:
        yield eqn
        for inner in _jax_compat.jaxprs_in_params(eqn.params):
            yield from all_eqns(inner)
