"""Arrival generators: statistical checks with stated tolerances, all seeded.

Tolerances: a sample mean must lie within 4 standard errors of its parameter (a false
alarm about 6e-5 per check under the model), and KS tests must not reject at 1%.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import stats

from mark.core.workload.arrivals import (
    MMPPSample,
    mmpp_arrivals,
    mmpp_sample,
    mmpp_trace,
    poisson_arrivals,
    rate_to_counts,
    rates_to_trace,
    spread_trace,
    surge_rate,
)
from mark.core.workload.traces import Trace

Z = 4.0  # standard errors allowed

RATES = [2.0, 10.0, 40.0]
# asymmetric on purpose: a transposed matrix would fail the jump test
SWITCH = np.array([[0.0, 0.02, 0.01], [0.06, 0.0, 0.04], [0.15, 0.05, 0.0]])
LEAVE = SWITCH.sum(axis=1)  # 0.03, 0.10, 0.20 per second: mean dwell 33, 10 and 5 s


def test_poisson_gaps_are_exponential() -> None:
    rate, duration = 20.0, 5_000.0
    arrivals = poisson_arrivals(rate, duration, seed=11)
    assert np.all(np.diff(arrivals) >= 0) and arrivals[0] >= 0 and arrivals[-1] < duration
    n = arrivals.size
    assert abs(n - rate * duration) < Z * np.sqrt(rate * duration)
    gaps = np.diff(arrivals)
    assert stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue > 0.01


def test_ks_rejects_poisson_distributed_gaps() -> None:
    """The bug in the MArk code: Poisson-distributed gaps (in ms) are not exponential."""
    rate = 20.0
    bad_gaps = np.random.default_rng(11).poisson(1000 / rate, size=100_000) / 1000
    assert stats.kstest(bad_gaps, "expon", args=(0, 1 / rate)).pvalue < 1e-6


def test_generators_are_reproducible() -> None:
    a = poisson_arrivals(5.0, 100.0, seed=1)
    assert np.array_equal(a, poisson_arrivals(5.0, 100.0, seed=1))
    assert not np.array_equal(a, poisson_arrivals(5.0, 100.0, seed=2))
    b = mmpp_arrivals(RATES, SWITCH, 500.0, seed=np.random.default_rng(4))
    assert np.array_equal(b, mmpp_arrivals(RATES, SWITCH, 500.0, seed=np.random.default_rng(4)))
    assert poisson_arrivals(0.0, 10.0, seed=1).size == 0


@pytest.fixture(scope="module")
def mmpp() -> MMPPSample:
    return mmpp_sample(RATES, SWITCH, 200_000.0, seed=2024)


def test_mmpp_dwell_times_match_switch_rates(mmpp: MMPPSample) -> None:
    dwell = mmpp.dwell_s()[:-1]  # the last visit is cut off by the end
    states = mmpp.states[:-1]
    for i, q in enumerate(LEAVE):
        d = dwell[states == i]
        assert d.size > 1000
        assert abs(d.mean() - 1 / q) < Z * (1 / q) / np.sqrt(d.size)
        assert stats.kstest(d, "expon", args=(0, 1 / q)).pvalue > 0.01


def test_mmpp_jumps_follow_the_matrix(mmpp: MMPPSample) -> None:
    src, dst = mmpp.states[:-1], mmpp.states[1:]
    assert np.all(src != dst)
    for i in range(3):
        out = dst[src == i]
        for j in range(3):
            if i == j:
                continue
            p = SWITCH[i, j] / LEAVE[i]
            p_hat = np.mean(out == j)
            assert abs(p_hat - p) < Z * np.sqrt(p * (1 - p) / out.size)


def test_mmpp_per_state_rates(mmpp: MMPPSample) -> None:
    arrivals = mmpp.arrivals
    assert np.all(np.diff(arrivals) >= 0)
    visit = np.searchsorted(mmpp.entry_s, arrivals, side="right") - 1
    state_of_arrival = mmpp.states[visit]
    dwell = mmpp.dwell_s()
    for i, lam in enumerate(RATES):
        t_i = dwell[mmpp.states == i].sum()
        n_i = np.sum(state_of_arrival == i)
        assert abs(n_i / t_i - lam) < Z * np.sqrt(lam * t_i) / t_i


def test_mmpp_trace_counts_follow_the_same_path() -> None:
    duration = 50_000
    sample = mmpp_sample(RATES, SWITCH, duration, seed=9)
    trace = mmpp_trace(RATES, SWITCH, duration, seed=9)  # same seed: same state path
    assert (len(trace), trace.step_s) == (duration, 1)
    # seconds lying wholly inside one visit have Poisson(rate of that state) counts
    ends = np.append(sample.entry_s[1:], duration)
    sec = np.arange(duration)
    visit = np.searchsorted(sample.entry_s, sec, side="right") - 1
    whole = sec + 1 <= ends[visit]
    for i, lam in enumerate(RATES):
        c = trace.counts[whole & (sample.states[visit] == i)]
        assert abs(c.mean() - lam) < Z * np.sqrt(lam / c.size)


def test_mmpp_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="3x3"):
        mmpp_arrivals(RATES, np.zeros((2, 2)), 10.0, seed=0)
    with pytest.raises(ValueError, match="non-negative"):
        mmpp_arrivals([1.0, -1.0], np.ones((2, 2)), 10.0, seed=0)
    with pytest.raises(ValueError, match="initial_state"):
        mmpp_arrivals(RATES, SWITCH, 10.0, seed=0, initial_state=3)


def test_spread_trace_keeps_counts_and_is_uniform_within_steps() -> None:
    rng = np.random.default_rng(5)
    trace = Trace(rng.poisson(30, size=3_000), 60, "minutes")
    arrivals = spread_trace(trace, seed=5)
    assert np.all(np.diff(arrivals) >= 0)
    step = (arrivals // 60).astype(np.int64)
    assert np.array_equal(np.bincount(step, minlength=len(trace)), trace.counts)
    frac = arrivals / 60 - step
    assert stats.kstest(frac, "uniform").pvalue > 0.01
    assert np.array_equal(arrivals, spread_trace(trace, seed=5))


def test_spread_trace_17_million_arrivals_is_fast() -> None:
    counts = np.full(604_800, 17_000_000 // 604_800)
    counts[: 17_000_000 - counts.sum()] += 1
    trace = Trace(counts, 1, "week")
    t0 = time.perf_counter()
    arrivals = spread_trace(trace, seed=1)
    elapsed = time.perf_counter() - t0
    assert arrivals.size == 17_000_000
    assert elapsed < 10.0, f"{elapsed:.1f} s for 17M arrivals"  # ~1 s on a laptop core


def test_spread_trace_refuses_peak_traces() -> None:
    with pytest.raises(ValueError, match="peak"):
        spread_trace(Trace(np.ones(10), 1, "x").resample(5, "peak"), seed=0)


@pytest.mark.parametrize("factor", [1.75, 2.0])
def test_surge_rate(factor: float) -> None:
    base = np.full(100, 10.0)
    out = surge_rate(base, at_s=20, length_s=30, factor=factor)
    assert np.all(out[20:50] == 10.0 * factor)
    assert np.all(out[:20] == 10.0) and np.all(out[50:] == 10.0)
    assert np.all(base == 10.0)  # input untouched
    # per-minute series, window covering half of two steps: time-weighted factor
    per_min = surge_rate(np.ones(4), at_s=90, length_s=60, factor=factor, step_s=60)
    np.testing.assert_allclose(per_min, [1, 1 + (factor - 1) / 2, 1 + (factor - 1) / 2, 1])


def test_surge_becomes_a_trace() -> None:
    rates = surge_rate(np.full(4000, 50.0), at_s=1000, length_s=2000, factor=1.75)
    trace = rates_to_trace(rates, seed=3)
    before, during = trace.counts[:1000], trace.counts[1000:3000]
    assert abs(before.mean() - 50.0) < Z * np.sqrt(50.0 / before.size)
    assert abs(during.mean() - 87.5) < Z * np.sqrt(87.5 / during.size)
    assert np.array_equal(rate_to_counts(rates, seed=3), trace.counts)
    with pytest.raises(ValueError):
        rate_to_counts(np.array([-1.0]), seed=0)
