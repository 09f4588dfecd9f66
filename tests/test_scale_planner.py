"""The planner and the simulator at MArk's scale: thousands of instances per plan, FaaS
memory bought for absorption, the hindsight plan under FaaS's limits, a warm history."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from frontend.routing import WeightedRoundRobin
from mark.core.catalogue import load_catalogue
from mark.core.instances import Market
from mark.core.profiles import load_profile
from mark.core.slo import Slo
from mark.sim import simulate
from mark.sim.world import World
from provisioner import PolicyContext, make_policy
from provisioner.greedy import Candidate, greedy_plan
from provisioner.headroom import Replay, base_rate, faas_absorb_rps, plan_headroom

CPU = ("c5.large", "c5.xlarge", "c5.2xlarge", "c5.4xlarge", "m5.large", "m5.xlarge", "m5.2xlarge")
SLO = Slo(500, 98)


def _greedy_one_at_a_time(forecast: np.ndarray, cands: list[Candidate], step_s: float,
                          faas: float) -> list[Candidate]:
    """The greedy as the paper states it, one pick per round (the reference)."""
    r = [float(x) for x in forecast]
    pool = list(cands)
    chosen: list[Candidate] = []
    while True:
        live = [c for c in pool if not (c.existing and c in chosen)]
        if not live:
            return chosen
        first = min(c.ready_step for c in live)
        if first >= len(r):
            return chosen
        t = max(range(first, len(r)), key=lambda i: r[i])
        if r[t] <= 1e-9:
            return chosen
        end = t
        while end < len(r) and r[end] > 1e-9:
            end += 1
        best, best_cpr = None, np.inf
        for c in live:
            lo = max(t, c.ready_step)
            served = sum(min(r[i], c.capacity_rps) for i in range(lo, end)) * step_s
            if lo >= end or served <= 0:
                continue
            cpr = (c.price_usd_per_h / 3600 * (end - lo) * step_s + c.overhead_usd) / served
            if cpr < best_cpr - 1e-15:
                best, best_cpr = c, cpr
        if best is None or best_cpr > faas:
            for i in range(t, end):
                r[i] = 0.0
            continue
        chosen.append(best)
        for i in range(best.ready_step, len(r)):
            r[i] -= best.capacity_rps


def test_the_greedy_takes_repeated_picks_at_once_with_the_same_plan() -> None:
    rng = np.random.default_rng(3)
    forecast = 4000 + rng.normal(0, 300, 10)
    existing = [Candidate(f"i-{k}", "c5.xlarge", Market.ON_DEMAND, 3.8, 0.17, 0.0, 0, True)
                for k in range(600)]
    new = [Candidate("c5.xlarge/on_demand", "c5.xlarge", Market.ON_DEMAND, 3.8, 0.17, 0.01, 2,
                     False),
           Candidate("c5.2xlarge/on_demand", "c5.2xlarge", Market.ON_DEMAND, 6.8, 0.34, 0.02,
                     2, False)]
    fast = greedy_plan(forecast, existing + new, 60.0, 1e-3, max_new=5000)
    ref = _greedy_one_at_a_time(forecast, existing + new, 60.0, 1e-3)
    assert Counter(c.key for c in fast) == Counter(c.key for c in ref)
    assert len(fast) > 1000


def test_the_wrr_pattern_computed_at_once_is_the_front_ends() -> None:
    weights = {"c5.xlarge": 3.8 * 40, "c5.2xlarge": 6.8 * 7, "g4dn.xlarge": 370.0}
    ref = WeightedRoundRobin()
    ref.set_weights(weights)
    world = World.__new__(World)
    world._pass = {}
    got = world._stride_picks(weights, 1024)
    assert list(got) == ref.schedule(1024)
    # the pass carries over to the next fleet, as the front end's does
    weights2 = {"c5.xlarge": 3.8 * 41, "g4dn.xlarge": 370.0}
    ref.set_weights(weights2)
    assert list(world._stride_picks(weights2, 1024)) == ref.schedule(1024)


def test_the_replay_floor_multiplies_the_base_not_a_burst() -> None:
    counts = np.full(4 * 3600, 1000)
    counts[3 * 3600 : 3 * 3600 + 600] = 5000
    assert base_rate(counts[: 3 * 3600 + 300]) == pytest.approx(1000)
    rp = Replay.of(counts, 180.0)
    # planned 3 minutes earlier: the burst's first minutes find the base, not the burst
    onset = np.flatnonzero(rp.r > 4000)[:36]
    assert np.all(rp.lvl[onset] == 1000) and np.all(rp.base == 1000)
    assert rp.fleet(2.0).max() == 5000  # the burst itself, once seen, is the forecast's


def test_a_larger_function_is_bought_where_it_is_cheaper_than_instance_headroom() -> None:
    """A +4,000 req/s burst: 3,008 MB functions take ~2,600 req/s; holding Inception-v3 CPU
    instances for the rest all day costs more than running the spill on larger functions."""
    ctx = PolicyContext(load_catalogue(), load_profile("inception-v3"), SLO, types=CPU)
    rate = np.full(6 * 3600, 1000.0)
    for a in (3600, 3 * 3600):
        rate[a : a + 600] = 5000.0
    counts = np.random.default_rng(0).poisson(rate)
    pol = make_policy("mark", ctx)
    cfg = pol.serving.faas  # type: ignore[attr-defined]
    # the fleet counted at its capacity only (burst_x=1): the memory trade-off alone (what
    # it takes in an overload is tests/test_scale_gaps.py's)
    plain = plan_headroom(ctx, cfg, counts, 180.0, 6 * 3600, memories=False, burst_x=1.0)
    both = plan_headroom(ctx, cfg, counts, 180.0, 6 * 3600, burst_x=1.0)
    assert plain.multiplier > 1.5 and plain.faas is not None
    assert both.faas is not None and both.faas.memory_mb > cfg.memory_mb
    # the burst fits what the larger functions take plus the (smaller) floor
    assert faas_absorb_rps(ctx, both.faas) * 0.8 + both.floor_rps >= 5000 - 100
    assert both.multiplier < plain.multiplier
    assert both.usd_per_h < plain.usd_per_h


def test_the_hindsight_plan_keeps_to_faas_limits() -> None:
    """The oracle may not plan spill beyond what FaaS absorbs: with the limits it holds more
    capacity at a burst than without them (and so is not throttled)."""
    rate = np.full(1800, 1000.0)
    rate[600:900] = 6000.0
    counts = np.random.default_rng(1).poisson(rate)
    kw: dict[str, Any] = {"profile": "inception-v3", "slo": SLO, "types": CPU, "seed": 1,
                          "timeline": False}
    held = simulate(counts, "oracle", policy_kw={"smooth_s": 1}, **kw)
    free = simulate(counts, "oracle", policy_kw={"smooth_s": 1, "faas_limits": False}, **kw)
    assert held.extra["faas_throttled"] <= free.extra["faas_throttled"]
    assert held.cost_usd["faas"] <= free.cost_usd["faas"]


def test_a_warm_history_is_the_policys_past() -> None:
    """With the hours before as history the planner has seen a burst before the first one
    it is judged on, and holds for it from the start."""
    rate = np.full(2 * 3600, 1000.0)
    rate[1800:2400] = 5000.0
    counts = np.random.default_rng(4).poisson(rate)
    hist, day = counts[:3600], counts[3600:]
    seen: list[int] = []
    kw: dict[str, Any] = {"profile": "inception-v3", "slo": SLO, "types": CPU, "seed": 1,
                          "timeline": False}

    class Spy:
        def __init__(self, ctx: PolicyContext) -> None:
            self.inner = make_policy("mark", ctx)
            self.name, self.interval_s, self.instant_launch = "mark", 60.0, False
            self.info: list[Mapping[str, float]] = []

        def initial_state(self) -> object:
            return self.inner.initial_state()

        def decide(self, snap, state):
            seen.append(int(snap.counts.size))
            d, s = self.inner.decide(snap, state)
            self.info.append(d.info)
            return d, s

    ctx = PolicyContext(load_catalogue(), load_profile("inception-v3"), SLO, types=CPU)
    spy = Spy(ctx)
    simulate(day, spy, history=hist, **kw)
    assert seen[0] == 3600 and seen[1] == 3660
    assert spy.info[0]["faas_memory_mb"] > 3008 or spy.info[0]["headroom_x"] > 1.0
    cold = Spy(ctx)
    simulate(day, cold, **kw)
    assert cold.info[0]["headroom_x"] == 0.0 and cold.info[0]["faas_memory_mb"] == 3008


def test_a_large_fleet_simulates_fast() -> None:
    """x100 of the Twitter mean on Inception-v3 CPU types (~1,700 instances): at least a
    million requests per second of wall time even on a busy 2-core machine (the bench
    measures >= 3 M/s)."""
    counts = np.random.default_rng(5).poisson(np.full(1200, 6400.0))
    warmup = np.random.default_rng(6).poisson(np.full(600, 6400.0))  # the service is running
    r = simulate(counts, "mark", profile="inception-v3", slo=SLO, types=CPU, seed=1,
                 timeline=False, history=warmup)
    assert r.requests / r.wall_seconds > 1e6
    assert r.slo_attainment > 0.99


def test_throttling_accepted_is_reported_by_the_simulator() -> None:
    """A burst bigger than any plan could hold (max multiplier) with the limits: the plan
    says it accepts throttling and the result carries that share of its decisions."""
    cat = load_catalogue()
    tiny = replace(cat, lambda_=replace(cat.lambda_, concurrency_limit=10, scaling_per_10s=10))
    rate = np.full(3 * 3600, 100.0)
    for a in (1800, 5400, 9000):
        rate[a : a + 600] = 3000.0
    counts = np.random.default_rng(6).poisson(rate)
    r = simulate(counts, "mark", profile="inception-v3", slo=SLO, types=CPU, seed=1,
                 catalogue=tiny, timeline=False)
    assert r.extra["throttling_accepted_share"] > 0.0


def test_every_instance_of_a_fleet_of_thousands_gets_requests() -> None:
    """Round robin reaches every instance of a type, not only the first routing pattern's
    worth (1,024): ~1,700 c5.xlarge at 6,400 req/s take it all, nothing spills."""
    counts = np.random.default_rng(7).poisson(np.full(600, 6400.0))
    r = simulate(counts, "oracle", profile="inception-v3", slo=SLO, types=("c5.xlarge",),
                 seed=1, timeline=False, policy_kw={"smooth_s": 60})
    assert r.spill_share < 0.02 and r.slo_attainment > 0.99
