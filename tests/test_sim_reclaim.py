"""Spot reclaims in the simulator do what they do live: the instance dies with what it holds.

A scripted policy runs one spot c5.large (MiniLM) and, where asked, an on-demand one beside
it; the catalogue's interruption model, scaled, reclaims the spot one during the run (the
seed fixes when). The same run without interruptions (``spot_interruption_scale=0``: same
arrivals, routing and batches up to the reclaim) tells which requests the spot instance held
at the reclaim: those routed to it completing after it. Live, each of them is re-sent by the
front end (one retry on another instance, FaaS when none is left and the plan spills, else an
error); a policy's termination instead drains the instance, which finishes its queue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from mark.core.catalogue import load_catalogue
from mark.core.instances import Instance, Market
from mark.core.profiles import load_profile
from mark.sim.core import PRIO_CONTROL, PRIO_URGENT
from mark.sim.metrics import SimResult, summarise
from mark.sim.simulator import simulate
from mark.sim.world import World, spread_arrivals
from provisioner import (
    BatchConfig,
    Decision,
    FaasConfig,
    LaunchOrder,
    PolicyContext,
    ServingPlan,
    Slo,
    Snapshot,
    TypeServing,
)

TYPE = "c5.large"
SLO = Slo(200, 98)
END_S = 120
RATE = 200  # requests/s: over the capacity of one c5.large (4 / 26.6 ms = 150/s)
SEED = 0  # the spot instance is reclaimed at 53.7 s
MEAN_LIFE_S = 50.0  # the spot instance's mean time to a reclaim (scaled catalogue rate)


@dataclass
class Script:
    """At t=0 launch one spot instance (and ``on_demand`` more); optionally terminate the
    spot one at ``drain_at_s``. Keeps the instance records it saw (the world's own)."""

    spill: bool
    on_demand: int = 0
    drain_at_s: float | None = None
    spots: int = 1
    max_batch: int = 4
    name: str = "script"
    interval_s: float = 1.0
    instant_launch: bool = True
    seen: dict[str, Instance] = field(default_factory=dict)

    def initial_state(self) -> Any:
        return None

    def plan(self) -> ServingPlan:
        tab = load_profile("minilm").of(TYPE).table_s()
        mb = self.max_batch
        ts = TypeServing(TYPE, BatchConfig(mb, 0.005 if mb > 1 else 0.0),
                         capacity_rps=mb / float(tab[mb]), wait_budget_s=0.15)
        return ServingPlan({TYPE: ts}, FaasConfig(), spill=self.spill)

    def decide(self, snap: Snapshot, state: Any) -> tuple[Decision, Any]:
        for inst in snap.fleet:
            self.seen.setdefault(inst.id, inst)
        if snap.now_s == 0.0:
            launch = ((LaunchOrder(TYPE, Market.SPOT),) * self.spots
                      + (LaunchOrder(TYPE),) * self.on_demand)
            return Decision(launch=launch, serving=self.plan()), state
        spot = [i for i in snap.fleet if i.market == Market.SPOT]
        if self.drain_at_s is not None and snap.now_s >= self.drain_at_s and spot:
            return Decision(terminate=(spot[0].id,)), state
        return Decision(), state

    def spot(self) -> Instance:
        (inst,) = [i for i in self.seen.values() if i.market == Market.SPOT]
        return inst


def run(script: Script, interruptions: bool, service_cv: float = 0.0,
        rps: int = RATE) -> SimResult:
    cat = load_catalogue()
    rate = cat.instance(TYPE).spot.interruption_rate_per_s
    counts = np.full(END_S, rps, dtype=np.int64)
    return simulate(counts, script, profile="minilm", catalogue=cat, slo=SLO, spot=True,
                    seed=SEED, timeline=False, service_cv=service_cv,
                    spot_interruption_scale=1.0 / (rate * MEAN_LIFE_S) if interruptions else 0.0)


def arrivals(rps: int = RATE) -> np.ndarray:
    return spread_arrivals(np.full(END_S, rps, dtype=np.int64), SEED)


def reclaimed_at(script: Script) -> float:
    inst = script.spot()
    assert getattr(inst, "ended_by", "") == "reclaim" and inst.ended_at_s is not None
    # held a queue, with time left to see what follows
    assert 10.0 < inst.ended_at_s < END_S - 10.0, inst.ended_at_s
    return inst.ended_at_s


def held_at(calm: SimResult, arr: np.ndarray, t: float) -> np.ndarray:
    """What the lone instance of a run without the reclaim held at ``t`` (same requests,
    routing and batches up to then): served by it, arrived before ``t``, done after it."""
    on_it = ~calm.spilled & np.isfinite(calm.latencies_s)
    return np.flatnonzero(on_it & (arr < t) & (arr + calm.latencies_s > t))


def outcome(r: SimResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each request is served by an instance, by FaaS or failed: exactly one of them."""
    failed = ~np.isfinite(r.latencies_s)
    iaas = ~r.spilled & ~failed
    assert not np.any(r.spilled & failed)
    assert int(iaas.sum() + r.spilled.sum() + failed.sum()) == r.requests
    assert int(failed.sum()) == r.extra["failed"]
    return iaas, r.spilled, failed


@pytest.mark.parametrize("service_cv", [0.0, 0.3])
def test_a_reclaimed_instance_loses_its_queue_to_faas(service_cv: float) -> None:
    script = Script(spill=True)
    r = run(script, interruptions=True, service_cv=service_cv)
    t = reclaimed_at(script)
    calm = run(Script(spill=True), interruptions=False, service_cv=service_cv)
    arr = arrivals()
    held = held_at(calm, arr, t)
    assert held.size > 0  # it held a queue (an open batch, batches out, waiting ones)
    e = r.extra
    assert e["spot_interruptions"] == 1
    assert e["reclaim_lost"] == held.size
    # no other instance to retry on: every one of them goes to FaaS, at the reclaim
    assert e["reclaim_spilled"] == held.size
    assert e["reclaim_retried"] == e["reclaim_failed"] == 0
    iaas, spilled, failed = outcome(r)
    assert spilled[held].all()
    assert not failed.any()  # spill: whatever finds no instance goes to FaaS
    # nothing is served by the instance after it died
    assert np.all(arr[iaas] + r.latencies_s[iaas] <= t + 1e-9)
    # up to the reclaim the two runs are the same requests on the same instance
    before = np.flatnonzero(iaas & (arr < t))
    np.testing.assert_allclose(r.latencies_s[before], calm.latencies_s[before])
    # a lost request waited at the instance until the reclaim, then at FaaS: its latency
    # counts from its arrival (FaaS is warm here: it has taken the overflow all along)
    lam = load_catalogue().lambda_
    prof = load_profile("minilm").lambda_
    assert prof is not None
    faas_s = prof.service_s(FaasConfig().memory_mb, 1, lam.mb_per_vcpu, lam.max_vcpu)
    at_faas = r.latencies_s[held] - (t - arr[held])
    assert np.all(at_faas >= faas_s - 1e-9)
    assert np.all(at_faas < lam.cold_start_s + 1.0)
    assert e["faas_invocations"] > 0 and e["faas_cold_starts"] >= 1
    # the calm run served those from the instance instead
    assert not calm.spilled[held].any()


def test_without_faas_the_lost_queue_fails_and_attainment_drops() -> None:
    rps = 140  # below its capacity: the calm run meets the SLO
    script = Script(spill=False)
    r = run(script, interruptions=True, rps=rps)
    t = reclaimed_at(script)
    calm = run(Script(spill=False), interruptions=False, rps=rps)
    arr = arrivals(rps)
    held = held_at(calm, arr, t)
    assert held.size > 0
    e = r.extra
    assert e["reclaim_lost"] == e["reclaim_failed"] == held.size
    assert e["reclaim_spilled"] == e["reclaim_retried"] == 0
    assert r.spill_share == 0.0 and e["faas_invocations"] == 0
    _, _, failed = outcome(r)
    assert failed[held].all() and np.all(np.isinf(r.latencies_s[held]))
    # failed: what the instance held, and everything after it (no instance, no FaaS)
    assert np.array_equal(np.flatnonzero(failed),
                          np.union1d(held, np.flatnonzero(arr >= t)))
    assert e["failed"] == held.size + int((arr >= t).sum())
    # attainment: what the calm run served within the SLO, less what the reclaim took
    ok_calm = calm.latencies_s <= SLO.latency_s
    keep = np.ones(arr.size, dtype=bool)
    keep[held] = False
    keep &= arr < t
    assert r.slo_attainment == pytest.approx(float(np.mean(ok_calm & keep)), abs=1e-12)
    assert calm.slo_attainment > 0.99
    assert r.slo_attainment < t / END_S
    # the lost ones would have made it
    assert np.all(calm.latencies_s[held] <= SLO.latency_s)


@pytest.mark.parametrize("spill", [True, False])
def test_the_front_end_retries_what_was_lost_on_another_instance(spill: bool) -> None:
    """Two instances (the spot one reclaimed, an on-demand one beside it): the lost requests
    are re-sent to the other one (through its spill test where the plan spills), as the
    front end's one retry after a connection error does."""
    script = Script(spill=spill, on_demand=1)
    r = run(script, interruptions=True)
    reclaimed_at(script)
    e = r.extra
    assert e["reclaim_lost"] > 0
    assert e["reclaim_lost"] == e["reclaim_retried"] + e["reclaim_spilled"] + e["reclaim_failed"]
    assert e["reclaim_retried"] > 0 and e["reclaim_failed"] == 0
    if not spill:  # no budget: the other instance takes every retry
        assert e["reclaim_retried"] == e["reclaim_lost"] and e["reclaim_spilled"] == 0
    _, _, failed = outcome(r)
    assert not failed.any()  # 2 x 150/s for 200/s: the survivor serves what is left, late


def test_a_drain_finishes_its_queue() -> None:
    drain_at = 60.0
    script = Script(spill=False, drain_at_s=drain_at)
    r = run(script, interruptions=False)
    inst = script.spot()
    assert getattr(inst, "ended_by", "") == "policy"
    assert inst.ended_at_s is not None and inst.ended_at_s > drain_at + 1.0  # a long queue
    arr = arrivals()
    e = r.extra
    assert e["spot_interruptions"] == 0 and e["terminations"] == 1
    assert e["reclaim_lost"] == e["reclaim_failed"] == e["reclaim_spilled"] == 0
    iaas, _, failed = outcome(r)
    # every request that arrived before the drain is served by the instance, however late
    before = arr < drain_at
    assert iaas[before].all()
    done = arr[before] + r.latencies_s[before]
    assert done.max() == pytest.approx(inst.ended_at_s)
    assert done.max() > drain_at + 1.0
    # after it nothing serves and nothing spills
    assert failed[~before].all()


def test_a_request_lost_twice_fails() -> None:
    """Two spot instances reclaimed at once (one pool's reclaim) beside an on-demand one:
    the first one's requests are re-sent, some of them to the second, which dies at once
    with them; the front end retries only once, so those fail even though FaaS is there.
    One request per batch: every retry opens a batch (the world's batch arrays grow)."""
    rps = 190  # 3 x 66/s
    t = 40.0
    script = Script(spill=True, spots=2, on_demand=1, max_batch=1)
    counts = np.full(END_S, rps, dtype=np.int64)
    arr = spread_arrivals(counts, SEED)
    ctx = PolicyContext(load_catalogue(), load_profile("minilm"), SLO, True)
    world = World(counts, arr, script, ctx, spot_interruption_scale=0.0, seed=SEED,
                  billing_factor=1.0, service_cv=0.0)
    size = world.batch_done.size

    def reclaim() -> None:  # what the spot interruption events run, both at t
        for inst in [i for i in world.live.values() if i.market == Market.SPOT]:
            world._end(inst, "reclaim")

    world.env.schedule(0.0, world.tick, PRIO_CONTROL)
    world.env.schedule(t, reclaim, PRIO_URGENT)
    world.env.run(until_s=END_S - 1e-9)
    world.advance(float(END_S))
    for inst in list(world.live.values()):
        world._end(inst, "end")
    r = summarise(world, "script", 0.0, False)
    e = r.extra
    assert e["spot_interruptions"] == 2
    assert world.batch_done.size > size
    # the first one's retries went round robin over the other two; those on the second
    # were lost with it
    assert e["reclaim_failed"] > 0 and e["reclaim_retried"] > 0
    assert e["reclaim_lost"] == e["reclaim_retried"] + e["reclaim_spilled"] + e["reclaim_failed"]
    iaas, _, failed = outcome(r)
    assert int(failed.sum()) == e["reclaim_failed"]
    assert np.all(arr[failed] < t)
    # what the instances served before the reclaim finished by then or on the survivor
    assert np.all(r.latencies_s[iaas] < 1.0)
