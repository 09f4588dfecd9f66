"""Service times vary in the simulator while spill predicts with the profiled means, as the
live front end does: a request kept on an instance can then miss the SLO."""

from __future__ import annotations

import numpy as np
import pytest

from mark.core import queueing
from mark.core.errors import ConfigError
from mark.core.profiles import DEFAULT_SERVICE_CV, load_profile, parse_profile
from mark.sim.simulator import simulate
from provisioner import Slo

SLO = Slo(200, 98)


def test_factors_have_mean_one_the_spread_asked_and_a_floor() -> None:
    f = np.array([queueing.service_factor(queueing.log_sd(0.1), 7, b) for b in range(200_000)])
    assert f.mean() == pytest.approx(1.0, abs=0.002)
    assert f.std() / f.mean() == pytest.approx(0.1, rel=0.03)
    assert f.min() >= queueing.factor_floor(0.1) - 1e-12
    assert f.min() < 0.8 and f.max() > 1.25  # it does spread
    again = [queueing.service_factor(queueing.log_sd(0.1), 7, b) for b in range(5)]
    assert list(f[:5]) == again  # a hash of (seed, batch): deterministic
    other = [queueing.service_factor(queueing.log_sd(0.1), 8, b) for b in range(5)]
    assert list(f[:5]) != other
    assert queueing.service_factor(0.0, 7, 3) == 1.0


def test_profiles_carry_a_documented_default_spread() -> None:
    assert load_profile("minilm").service_cv == DEFAULT_SERVICE_CV == 0.1
    p = parse_profile({"model": "m", "service_cv": 0.25,
                       "instances": {"c5.large": {"batch_ms": {"1": 10.0}}}})
    assert p.service_cv == 0.25 and p.to_json()["service_cv"] == 0.25
    with pytest.raises(ConfigError, match="service_cv"):
        parse_profile({"model": "m", "service_cv": -1,
                       "instances": {"c5.large": {"batch_ms": {"1": 10.0}}}})


@pytest.fixture(scope="module")
def busy_counts() -> np.ndarray:
    # one c5.large near its capacity, so batches queue behind each other
    rng = np.random.default_rng(4)
    return rng.poisson(330.0, size=600).astype(np.int64)


def _iaas_misses(r) -> int:  # type: ignore[no-untyped-def]
    kept = ~r.spilled & np.isfinite(r.latencies_s)
    return int((r.latencies_s[kept] > SLO.latency_s).sum())


def test_exact_service_times_never_miss_on_an_instance(busy_counts: np.ndarray) -> None:
    r = simulate(busy_counts, "mark", slo=SLO, types=("c5.large",), seed=3, timeline=False,
                 service_cv=0.0)
    assert r.spill_share > 0  # the budget binds: spill is deciding
    assert _iaas_misses(r) == 0


def test_varying_service_times_make_kept_requests_miss(busy_counts: np.ndarray) -> None:
    r = simulate(busy_counts, "mark", slo=SLO, types=("c5.large",), seed=3, timeline=False,
                 service_cv=0.3)
    assert r.extra["service_cv"] == 0.3
    assert _iaas_misses(r) > 0  # predicted within the budget, served late
    assert r.slo_attainment < 1.0
    again = simulate(busy_counts, "mark", slo=SLO, types=("c5.large",), seed=3,
                     timeline=False, service_cv=0.3)
    np.testing.assert_array_equal(r.latencies_s, again.latencies_s)


def test_the_kernel_predicts_with_the_means() -> None:
    """One instance, a finite budget, a spread: every kept request was predicted (means, the
    front end's arithmetic) within the budget, and some finished past it."""
    svc = np.array([[0.0, 0.020, 0.024, 0.028, 0.032]])
    arr = np.cumsum(np.random.default_rng(5).exponential(1 / 120.0, size=4000))
    fstate = np.zeros((1, queueing.N_FSTATE))
    istate = np.zeros((1, queueing.N_ISTATE), dtype=np.int64)
    done = np.zeros(arr.size + 1)
    size = np.zeros(arr.size + 1, dtype=np.int32)
    bid = np.empty(arr.size, dtype=np.int64)
    budget = 0.05
    ring = (np.zeros((1, queueing.RING)), np.zeros((1, queueing.RING)),
            np.zeros((1, 2), dtype=np.int64))
    queueing.serve_segment_spread(arr, np.zeros(arr.size, np.int32), svc,
                                  np.array([4], np.int32), np.array([0.005]), np.array([budget]),
                                  fstate, istate, done, size, 0, bid, np.zeros(1),
                                  queueing.log_sd(0.4), 11, *ring)
    queueing.flush_instance(0, svc, np.array([0.005]), fstate, istate, done, size,
                            np.zeros(1), queueing.log_sd(0.4), 11)
    kept = bid >= 0
    lat = done[bid[kept]] - arr[kept]
    assert 0 < kept.sum() < arr.size
    assert (lat > budget).sum() > 0
    assert (lat <= budget).mean() > 0.5  # most still in time


def test_no_policy_sees_the_trace_before_it_happens() -> None:
    """Without a warm-up slice the first decision sees no past (never the trace's own first
    minutes); with one it sees exactly that slice, then what has arrived."""
    from mark.core.catalogue import load_catalogue
    from provisioner import PolicyContext, make_policy

    counts = np.full(300, 50, dtype=np.int64)
    counts[:60] = 500  # a burst at the start the first decision must not know about
    seen: list[np.ndarray] = []

    class Spy:
        def __init__(self, ctx: PolicyContext) -> None:
            self.inner = make_policy("mark", ctx)
            self.name, self.interval_s, self.instant_launch = "mark", 60.0, False

        def initial_state(self) -> object:
            return self.inner.initial_state()

        def decide(self, snap, state):  # type: ignore[no-untyped-def]
            seen.append(np.array(snap.counts))
            return self.inner.decide(snap, state)

    ctx = PolicyContext(load_catalogue(), load_profile("minilm"), SLO)
    simulate(counts, Spy(ctx), slo=SLO, timeline=False)
    assert [s.size for s in seen] == [0, 60, 120, 180, 240]
    np.testing.assert_array_equal(seen[-1], counts[:240])
    seen.clear()
    warm = np.full(90, 7, dtype=np.int64)
    simulate(counts, Spy(ctx), slo=SLO, timeline=False, history=warm)
    assert [s.size for s in seen] == [90, 150, 210, 270, 330]
    np.testing.assert_array_equal(seen[0], warm)
    np.testing.assert_array_equal(seen[1][90:], counts[:60])


def test_the_cli_warms_up_on_the_trace_before_the_start(tmp_path) -> None:
    import json

    from mark.cli import main

    trace = tmp_path / "t.txt"
    trace.write_text("\n".join(["40"] * 1200) + "\n")
    out = tmp_path / "r.json"
    assert main(["simulate", "--trace", str(trace), "--start-s", "600", "--duration-s", "300",
                 "--warmup-s", "400", "--service-cv", "0", "--json", str(out),
                 "--no-progress"]) == 0
    doc = json.loads(out.read_text())
    assert doc["trace"]["warmup_s"] == 400 and doc["service_cv"] == 0.0
    assert main(["simulate", "--trace", str(trace), "--duration-s", "300", "--json", str(out),
                 "--no-progress"]) == 0
    assert json.loads(out.read_text())["trace"]["warmup_s"] == 0
