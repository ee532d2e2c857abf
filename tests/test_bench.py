"""Smoke test of the benchmark dashboard's plumbing (no timing assertions).

Builds the smallest W6 cell (the Gaussian mixture with N = 100, K = 3, genvi and hand-written),
measures it with one repetition and checks the runner's report, and that genvi's enumerated
objective and the hand-written logsumexp agree on the ELBO (same mathematics; the values are
exact in the assignments, so at a near-deterministic guide their means agree).
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import _w_mixture  # noqa: E402
import run  # noqa: E402


def test_mixture_workload_runs_and_reports():
    workload = _w_mixture.build(100, 3, numpyro_impl=False)
    result = run.measure(workload, rounds=1, block=1, draws=0)
    assert set(result["per_step_s"]) == {"genvi", "hand-written"}
    assert all(t > 0 for t in result["per_step_s"].values())
    result.update(n=100, k=3)
    table = run.table({"W6 N=100 K=3": result})
    assert "| W6 N=100 K=3 | genvi |" in table and "| W6 N=100 K=3 | hand-written |" in table


def test_mixture_genvi_matches_hand_written_logsumexp():
    workload = _w_mixture.build(100, 3, numpyro_impl=False)
    (), (loc, _) = workload.meta["params"]
    params = ((), (loc, jnp.full(loc.shape, -12.0)))  # q(mu) ~ a point mass at loc
    data, objective, n = workload.meta["data"], workload.meta["objective"], 64
    ours = jax.vmap(lambda k: objective.estimate(k, params, data))(jax.random.split(jax.random.PRNGKey(0), n))
    hand = jax.vmap(lambda k: _w_mixture.hand_written_elbo(params, k, data))(jax.random.split(jax.random.PRNGKey(1), n))
    # the values differ only through log q(mu)'s -eps^2/2 terms; compare means within 5 standard errors
    se = np.sqrt(np.var(ours) / n + np.var(hand) / n)
    assert abs(np.mean(ours) - np.mean(hand)) < 5 * se


def test_scaling_verdict_accepts_affine_and_refuses_quadratic_growth():
    """W6's linearity check: a fixed cost plus a cost per point passes (its log-log slope is
    below 1), quadratic growth and a flat (no per-point work) time do not."""

    def verdicts(fn):
        results = {f"W6 N={n} K=3": {"n": n, "k": 3, "per_step_s": {"genvi": fn(n)}} for n in (100, 1000, 10000)}
        return run._scaling_verdicts(results)

    assert verdicts(lambda n: 2e-4 + 1.5e-7 * n)[0].startswith("PASS")
    assert verdicts(lambda n: 1e-4 + 1e-10 * n**2)[0].startswith("MISS")
    assert verdicts(lambda n: 2e-4)[0].startswith("MISS")


def test_scaling_verdict_judges_sublinear_growth_against_hand_written():
    """Times that grow less than linearly (more threads at large N, as both programs do on CPU)
    pass when genvi grows as hand-written does, and miss when genvi's ratio to it grows."""
    # genvi's and hand-written's seconds per step at K = 10 in stop 19's full run (RESULTS.md then)
    measured = {100: (115.3e-6, 152.4e-6), 1000: (453.8e-6, 652.0e-6), 10000: (2046.6e-6, 3321.5e-6)}

    def verdict(slower_at_large_n: float = 1.0) -> str:
        results = {f"W6 N={n} K=10": {"n": n, "k": 10, "per_step_s": {
            "genvi": g * (slower_at_large_n if n == 10000 else 1.0), "hand-written": h}}
            for n, (g, h) in measured.items()}
        return run._scaling_verdicts(results)[0]

    assert verdict().startswith("PASS")
    assert verdict(slower_at_large_n=1.3).startswith("MISS")


def test_per_step_ratio_pairs_rounds_and_takes_the_fastest_reference():
    """The per-step verdict divides genvi's time by the fastest reference's *in the same round*:
    a machine that slows down between rounds moves both, and the paired ratio stays put."""
    load = np.array([1.0, 3.0, 1.0, 5.0, 2.0])  # drifting load, round by round
    r = {"references": ["hand-written", "numpyro"],
         "per_round_s": {"genvi": list(1.1 * load), "hand-written": list(1.0 * load), "numpyro": list(1.5 * load)}}
    ratio, how = run.per_step_ratio(r)
    assert abs(ratio - 1.1) < 1e-12 and "paired" in how
    r["per_round_s"]["numpyro"] = list(0.5 * load[::-1])  # the fastest reference changes per round
    expected = np.median(1.1 * load / np.minimum(load, 0.5 * load[::-1]))
    assert abs(run.per_step_ratio(r)[0] - expected) < 1e-12


def test_interleaved_rounds_cycle_through_compiled_copies_and_report_their_spread():
    """A step given as several compiled copies runs copy `r % n` in round `r`, every copy is
    warmed up, and `copy_spread` reads the copies' medians back from the rounds."""
    from _timing import interleaved_rounds

    calls: list[str] = []

    def copy(tag):
        def step(state):
            calls.append(tag)
            return state + 1
        return step

    times = interleaved_rounds({"genvi": [copy("a"), copy("b"), copy("c")], "hand-written": copy("h")},
                               {"genvi": jnp.zeros(()), "hand-written": jnp.zeros(())}, rounds=6, block=2)
    assert [t for t in calls if t != "h"] == list("abc") + list("aabbccaabbcc")
    assert len(times["genvi"]) == 6
    r = {"copies": {"genvi": 3, "hand-written": 1},
         "per_round_s": {"genvi": [1.0, 2.0, 4.0, 1.0, 2.0, 4.0], "hand-written": [1.0] * 6}}
    assert abs(run.copy_spread(r, "genvi") - 3.0) < 1e-12
    assert run.copy_spread(r, "hand-written") is None


def test_median_interval_covers_the_median_at_its_stated_level():
    """The order-statistic interval for the median covers the true median of a skewed
    distribution in about 95% of 2000 simulated runs of 15 rounds (within 5 s.e.)."""
    rng = np.random.default_rng(0)
    true_median = np.log(2.0)  # of an exponential(1)
    hits = []
    for _ in range(2000):
        lo, hi = run.median_interval(list(rng.exponential(size=15)))
        hits.append(lo <= true_median <= hi)
    assert run.median_interval([1.0, 2.0]) is None
    coverage, k = np.mean(hits), 4  # n = 15: [x_(4), x_(12)], exact coverage 1 - 2 P(Bin <= 3)
    from scipy.stats import binom
    exact = 1 - 2 * binom.cdf(k - 1, 15, 0.5)
    assert exact >= 0.95
    assert abs(coverage - exact) < 5 * np.sqrt(exact * (1 - exact) / 2000)
