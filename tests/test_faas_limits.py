"""FaaS's limits planned for (instance headroom at MArk's scale), and no churn."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from mark.core.catalogue import Catalogue, load_catalogue
from mark.core.profiles import load_profile
from mark.core.slo import Slo
from mark.sim import simulate
from provisioner import PolicyContext, Snapshot, make_policy
from provisioner.headroom import faas_absorb_rps, plan_headroom

CPU = ("c5.large", "c5.xlarge", "c5.2xlarge", "c5.4xlarge", "m5.large", "m5.xlarge", "m5.2xlarge")
SLO = Slo(500, 98)
BURST_AT = (1800, 5400)  # two 5x bursts of 10 minutes: the first teaches, the second is kept
BURST_S = 600


def lifted(cat: Catalogue) -> Catalogue:
    return replace(cat, lambda_=replace(cat.lambda_, concurrency_limit=1_000_000,
                                        scaling_per_10s=1_000_000))


@pytest.fixture(scope="module")
def burst_counts() -> np.ndarray:
    """x20 of the Twitter mean (~1,000 req/s), with 5x bursts (the week has 4-5x ones)."""
    rate = np.full(7200, 1000.0)
    for a in BURST_AT:
        rate[a : a + BURST_S] = 5000.0
    return np.random.default_rng(0).poisson(rate)


def ctx_for(cat: Catalogue) -> PolicyContext:
    return PolicyContext(cat, load_profile("inception-v3"), SLO, types=CPU)


def _decide(cat: Catalogue, counts: np.ndarray) -> Mapping[str, float]:
    pol = make_policy("mark", ctx_for(cat))
    d, _ = pol.decide(Snapshot(float(counts.size), counts, (), SLO), pol.initial_state())
    return d.info


def test_the_planner_holds_headroom_for_what_faas_cannot_absorb(burst_counts) -> None:
    cat = load_catalogue()
    lim, free = _decide(cat, burst_counts), _decide(lifted(cat), burst_counts)
    # 1,000 Inception-v3 containers at ~0.38 s a request (3,008 MB) take ~2,600 req/s, less
    # than the +4,000 req/s burst: the plan buys absorption (a larger function, faster per
    # request) or instance headroom, whichever the replayed history says is cheaper
    assert lim["throttling_reason"] != 1.0
    assert lim["faas_memory_mb"] > 3008 or lim["headroom_x"] > 1.0
    # the fleet takes headroom_overload_x its capacity in an overload (spill test), FaaS
    # the rest
    assert (lim["headroom_overload_x"] * lim["planned_rps"] + 0.8 * lim["faas_absorb_rps"]
            >= 5000 - 50)
    # without the limits the cheapest settings take any burst: nothing is held for it
    assert free["headroom_x"] == 0.0 and free["faas_memory_mb"] == 3008
    assert free["planned_rps"] <= lim["planned_rps"]


def test_a_burst_beyond_the_largest_function_is_held_on_instances() -> None:
    """A 7x burst at x20 of a busier hour (2,000 -> 14,000 req/s): +12,000 req/s is more than
    1,000 of even the largest functions take (~6,000 req/s) plus what the fleet takes in an
    overload (~2.2x its capacity), so instances hold the rest."""
    rate = np.full(7200, 2000.0)
    for a in BURST_AT:
        rate[a : a + BURST_S] = 14000.0
    counts = np.random.default_rng(2).poisson(rate)
    cat = load_catalogue()
    lim, free = _decide(cat, counts), _decide(lifted(cat), counts)
    assert lim["throttling_reason"] != 1.0 and lim["headroom_x"] > 1.5
    assert lim["headroom_floor_rps"] == pytest.approx(
        lim["headroom_x"] * lim["headroom_base_rps"])
    assert (lim["headroom_overload_x"] * lim["planned_rps"]
            >= 14000 - 0.8 * lim["faas_absorb_rps"] - 50)
    assert free["headroom_x"] == 0.0
    assert free["planned_rps"] < 0.6 * lim["planned_rps"]


def test_a_burst_in_progress_does_not_multiply_the_floor(burst_counts) -> None:
    """The floor multiplies the base rate (the median of the last half hour's minutes), not
    the current rate: in the second burst it stays what it was before it."""
    rate = np.full(7200, 2000.0)
    for a in BURST_AT:
        rate[a : a + BURST_S] = 14000.0
    counts = np.random.default_rng(2).poisson(rate)
    before = _decide(load_catalogue(), counts[: BURST_AT[1]])
    during = _decide(load_catalogue(), counts[: BURST_AT[1] + 300])
    assert during["headroom_base_rps"] == pytest.approx(before["headroom_base_rps"], rel=0.05)
    assert 0 < during["headroom_floor_rps"] < 1.2 * before["headroom_floor_rps"]


def test_headroom_is_zero_when_faas_absorbs_every_burst(burst_counts) -> None:
    ctx = ctx_for(load_catalogue())
    small = np.random.default_rng(1).poisson(np.where(burst_counts > 2000, 200.0, 50.0))
    faas = make_policy("mark", ctx).serving.faas  # type: ignore[attr-defined]
    assert plan_headroom(ctx, faas, small, 300.0, 6 * 3600).multiplier == 0.0
    assert faas_absorb_rps(ctx, faas) > 200


def _second_burst_miss(r, counts: np.ndarray) -> float:
    edges = np.concatenate(([0], np.cumsum(counts)))
    a, b = edges[BURST_AT[1]], edges[BURST_AT[1] + BURST_S]
    return float((r.latencies_s[a:b] > SLO.latency_s).mean())


def test_simulated_bursts_keep_the_slo_with_headroom_and_break_without(burst_counts) -> None:
    # exact service times: this is about headroom against FaaS's limits; with the shipped
    # spread (cv 0.1) kept requests also miss by the planner's lack of a spread margin
    kw: dict[str, Any] = {"profile": "inception-v3", "slo": SLO, "types": CPU, "seed": 1,
                          "timeline": False, "service_cv": 0.0}
    held = simulate(burst_counts, "mark", **kw)
    blind = simulate(burst_counts, "mark", policy_kw={"faas_limits": False}, **kw)
    # the first burst is news to both; the second is kept by the headroom learned from it
    assert _second_burst_miss(held, burst_counts) < 0.02
    assert _second_burst_miss(blind, burst_counts) > 0.15  # ~60% for its first 4 minutes
    assert held.extra["faas_throttled"] < blind.extra["faas_throttled"] / 2
    assert held.slo_attainment > blind.slo_attainment + 0.05


def test_a_noisy_flat_load_does_not_churn_with_the_noise_band() -> None:
    counts = np.random.default_rng(0).poisson(np.full(2 * 3600, 1000.0))
    r = simulate(counts, "mark", profile="inception-v3", slo=SLO, types=CPU, seed=1,
                 timeline=False, policy_kw={"noise_band_sigmas": 1.0})
    first = r.extra["launches"]
    assert r.extra["terminations"] == 0 and r.extra["churned_instances"] == 0
    assert r.extra["churn_instance_minutes"] == 0.0
    no_band = simulate(counts, "mark", profile="inception-v3", slo=SLO, types=CPU, seed=1,
                       timeline=False, policy_kw={"noise_band_sigmas": 0.0})
    assert no_band.extra["terminations"] > 10 and no_band.extra["launches"] > first


def test_an_instance_planned_while_it_boots_is_not_ended_the_moment_it_is_up() -> None:
    """The hold runs from when an instance is needed, but not from before it is ready: one
    the plan counted while booting (a 5-second blip in the forecast) and left out when it
    came up was ended at once, unused (30 c5.xlarge launched and ended 2 minutes later at
    each such blip on the Twitter day at x20, spot)."""
    from mark.core.instances import Instance, InstanceState, Market

    ctx = ctx_for(load_catalogue())
    pol = make_policy("mark", ctx, faas_limits=False)
    cap = pol.serving.types["c5.xlarge"].capacity_rps  # type: ignore[attr-defined]
    n = 20
    busy = np.random.default_rng(5).poisson(np.full(600, n * cap))
    booting = tuple(Instance(f"i-{k}", "c5.xlarge", Market.ON_DEMAND, InstanceState.PENDING,
                             540.0) for k in range(n))
    d, state = pol.decide(Snapshot(600.0, busy, booting, SLO), pol.initial_state())
    assert not d.terminate and len(state.last_needed_s) == n  # type: ignore[attr-defined]
    # up at 660 s, and the load gone: not ended before the hold from when they were up
    up = tuple(Instance(i.id, i.instance_type, i.market, InstanceState.READY, 540.0,
                        ready_at_s=660.0) for i in booting)
    idle = np.concatenate((busy, np.zeros(60, dtype=busy.dtype)))
    d, state = pol.decide(Snapshot(660.0, idle, up, SLO), state)
    assert d.terminate == ()
    idle = np.concatenate((idle, np.zeros(60, dtype=busy.dtype)))
    d, _ = pol.decide(Snapshot(720.0, idle, up, SLO), state)
    assert len(d.terminate) == n
