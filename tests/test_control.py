"""The control loop on a virtual clock with the fake backend: fast, exact, no processes."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest

from frontend.fleet import Fleet
from mark.backends import FakeBackend, LaunchSpec
from mark.control import ArrayCounts, ControlAdmin, ControlLoop, CostLedger, ModelControl
from mark.control.planning import build_policy, initial_serving
from mark.core.catalogue import Catalogue, load_catalogue
from mark.core.clock import VirtualClock
from mark.core.errors import Conflict, NotFound
from mark.core.instances import Instance, InstanceState, Market
from mark.core.profiles import load_profile
from mark.core.slo import Slo
from mark.sim import simulate
from provisioner import Decision, PolicyContext, ProvisioningPolicy, Snapshot

MODEL = "incep"
DELAY_S = 30.0
TYPES = ("c5.large", "c5.xlarge", "m5.large")


def catalogue(delay_s: float = DELAY_S) -> Catalogue:
    cat = load_catalogue()
    return replace(cat, instances={n: replace(t, launch_delay_s=delay_s)
                                   for n, t in cat.instances.items()})


def context(spot: bool = False) -> PolicyContext:
    return PolicyContext(catalogue(), load_profile("inception-v3"), Slo(500, 98), spot, TYPES)


@dataclass
class Recorder:
    """A policy wrapper that records what it was shown and what it decided."""

    inner: ProvisioningPolicy
    steps: list[dict[str, Any]] = field(default_factory=list)
    fail_at: set[float] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def interval_s(self) -> float:
        return self.inner.interval_s

    @property
    def instant_launch(self) -> bool:
        return self.inner.instant_launch

    def initial_state(self) -> Any:
        return self.inner.initial_state()

    def decide(self, snap: Snapshot, state: Any) -> tuple[Decision, Any]:
        if snap.now_s in self.fail_at:
            raise RuntimeError("boom (a test failure)")
        dec, st = self.inner.decide(snap, state)
        types = {i.id: (i.instance_type, i.market.value) for i in snap.fleet}
        self.steps.append({
            "t": snap.now_s, "n_counts": int(snap.counts.size),
            "fleet": sorted((i.instance_type, i.state.value) for i in snap.fleet),
            "launch": [(o.instance_type, o.market.value) for o in dec.launch],
            "terminate": sorted(types[i] for i in dec.terminate),
            "forecast": dec.info.get("forecast_rps"),
        })
        return dec, st


def policy(ctx: PolicyContext, **kw: Any) -> ProvisioningPolicy:
    return build_policy("mark", ctx, 10.0, kw)


def make_loop(pol: ProvisioningPolicy, ctx: PolicyContext, counts: np.ndarray,
              warm: bool = True, past: np.ndarray | None = None,
              **fake_kw: Any) -> tuple[ControlLoop, FakeBackend, VirtualClock]:
    clock = VirtualClock(0.0)
    fleet = Fleet([MODEL])
    loop_ref: list[ControlLoop] = []
    fake = FakeBackend(ready_delay_s=DELAY_S, clock=clock,
                       on_exit=lambda i, c: loop_ref[0].on_exit(i, c),
                       on_notice=lambda i, t: loop_ref[0].on_notice(i, t), notice_s=120.0,
                       **fake_kw)
    mc = ModelControl(MODEL, pol, ctx, initial_serving(pol, ctx))
    loop = ControlLoop({MODEL: mc}, fake, fleet, CostLedger(ctx.catalogue), clock,
                       ArrayCounts({MODEL: counts}),
                       warm_start=({MODEL: counts[:600] if past is None else past}
                                   if warm else None))
    loop_ref.append(loop)
    return loop, fake, clock


async def _yield(n: int = 30) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def advance(clock: VirtualClock, t: float) -> None:
    """Move the virtual clock to ``t``, waking sleepers in time order."""
    while (nxt := clock.next_wakeup()) is not None and nxt <= t:
        clock.advance_to(max(nxt, clock.now()))
        await _yield()
    clock.advance_to(t)
    await _yield()


async def drive(loop: ControlLoop, clock: VirtualClock, end_s: float) -> None:
    """Step the loop every interval up to ``end_s`` (exclusive), as the simulator ticks."""
    t = loop.interval_s
    while t < end_s:
        await advance(clock, t)
        await loop.step()
        await _yield()
        t += loop.interval_s


def ramp_counts() -> np.ndarray:
    """A flat load, a forecastable ramp to 4x, a plateau, then a fall back."""
    rng = np.random.default_rng(3)
    rate = np.concatenate([np.full(900, 20.0), np.linspace(20, 80, 600), np.full(600, 80.0),
                           np.full(900, 20.0)])
    return rng.poisson(rate).astype(np.int64)


def test_decisions_equal_the_simulators_for_the_same_counts() -> None:
    counts = ramp_counts()
    ctx = context()
    sim_rec = Recorder(policy(ctx))
    simulate(counts, sim_rec, profile=ctx.profile, catalogue=ctx.catalogue, slo=ctx.slo,
             types=TYPES, timeline=False)
    live_rec = Recorder(policy(ctx))
    # no past before t=0 on either side (the simulator gives none without a warm-up slice)
    loop, fake, clock = make_loop(live_rec, ctx, counts, warm=False)

    async def run() -> None:
        await loop.start(run=False)
        await drive(loop, clock, counts.size)
        await loop.stop()

    asyncio.run(run())
    # the simulator's decision at t=0 sees no requests and does nothing; the live loop
    # without a warm start makes its first decision one interval in
    first, *sim_steps = sim_rec.steps
    assert first["n_counts"] == 0 and not first["launch"] and not first["terminate"]
    assert len(sim_steps) == len(live_rec.steps) > 200
    for s, live in zip(sim_steps, live_rec.steps, strict=True):
        assert live == s, f"first difference at t={s['t']}"
    launched = sum(len(s["launch"]) for s in sim_steps)
    ended = sum(len(s["terminate"]) for s in sim_steps)
    assert launched >= 3 and ended >= 2  # the series exercised both directions
    assert len(fake.launched) == launched and len(fake.terminated) == ended


def test_a_warm_up_slice_is_the_past_of_every_step_in_both_worlds() -> None:
    """With a warm-up slice (the simulator's ``history``, the loop's ``warm_start``) every
    decision sees the same past and decides the same, not only the first (the live loop
    once forgot it after its first step and reacted to a burst at once where the simulator
    weighed it against the past)."""
    counts = ramp_counts()[900:]  # opens on the ramp
    past = np.random.default_rng(4).poisson(20.0, 600).astype(np.int64)
    ctx = context()
    sim_rec = Recorder(policy(ctx))
    simulate(counts, sim_rec, profile=ctx.profile, catalogue=ctx.catalogue, slo=ctx.slo,
             types=TYPES, timeline=False, history=past)
    live_rec = Recorder(policy(ctx))
    loop, _, clock = make_loop(live_rec, ctx, counts, past=past)

    async def run() -> None:
        await loop.start(run=False)
        await drive(loop, clock, counts.size)
        await loop.stop()

    asyncio.run(run())
    assert sim_rec.steps[0]["n_counts"] == 600 and sim_rec.steps[0]["launch"]
    assert len(sim_rec.steps) == len(live_rec.steps) > 100
    for s, live in zip(sim_rec.steps, live_rec.steps, strict=True):
        assert live == s, f"first difference at t={s['t']}"
    assert live_rec.steps[5]["n_counts"] == 600 + 50


def test_launches_ahead_of_a_forecastable_ramp() -> None:
    counts = ramp_counts()
    ctx = context()
    loop, _, clock = make_loop(policy(ctx, forecast="trend-peak"), ctx, counts)

    async def run() -> list[tuple[float, float]]:
        await loop.start(run=False)
        seen = []
        t = loop.interval_s
        while t < 1500:
            await advance(clock, t)
            await loop.step()
            await _yield()
            seen.append((t, sum(loop.capacity_by_market(MODEL).values())))
            t += loop.interval_s
        await loop.stop()
        return seen

    seen = asyncio.run(run())
    start_cap = seen[0][1]
    # the ramp (900-1500 s) passes the starting capacity at some point; capacity was added
    # before the rate got there (launched a launch delay ahead)
    rate = np.convolve(counts, np.ones(30) / 30, mode="same")
    crosses = int(np.argmax(rate[900:] > start_cap)) + 900
    grown = next(t for t, c in seen if c > start_cap)
    assert grown <= crosses, (grown, crosses, start_cap)


def test_scale_in_only_after_the_hold() -> None:
    counts = np.concatenate([np.full(1200, 80), np.full(1200, 5)]).astype(np.int64)
    ctx = context()
    hold = 120.0
    loop, fake, clock = make_loop(policy(ctx, hold_s=hold), ctx, counts)

    async def run() -> list[tuple[float, int]]:
        await loop.start(run=False)
        sizes = []
        t = loop.interval_s
        while t < counts.size:
            await advance(clock, t)
            await loop.step()
            await _yield()
            sizes.append((t, len([i for i in loop.fleet.instances.values()
                                  if i.state == InstanceState.READY])))
            t += loop.interval_s
        await loop.stop()
        return sizes

    sizes = asyncio.run(run())
    before = dict(sizes)[1190.0]
    assert before >= 2
    # the load dropped at 1200 s: nothing ends within the hold of the drop (the policy's
    # forecast window lags too), everything surplus has ended well after it
    assert all(n == before for t, n in sizes if 1200 <= t < 1200 + hold)
    assert sizes[-1][1] < before
    assert fake.terminated


def test_a_failed_launch_moves_to_the_next_cheapest_type() -> None:
    counts = np.concatenate([np.full(700, 5), np.full(900, 60)]).astype(np.int64)
    ctx = context()
    pol = policy(ctx)
    loop, fake, clock = make_loop(pol, ctx, counts, warm=False, fail_types={"c5.large"})

    async def run() -> None:
        await loop.start(run=False)
        await drive(loop, clock, counts.size)
        await loop.stop()

    asyncio.run(run())
    types = [fake.instances[i].instance_type for i in fake.launched]
    assert "c5.large" in types  # the plan's first choice was tried ...
    ready = [i for i in fake.instances.values() if i.ready_at_s is not None]
    assert ready and all(i.instance_type != "c5.large" for i in ready)  # ... and replaced
    events = [e for d in loop.decisions for e in d["events"]]
    fails = [e for e in events if e["event"] == "launch_failed"]
    retries = [e for e in events if e["event"] == "launch_retry"]
    assert fails and retries
    assert all(e["replaces"] == "c5.large" and e["instance_type"] != "c5.large" for e in retries)


def test_a_spot_notice_drains_and_replaces() -> None:
    counts = np.full(1800, 40).astype(np.int64)
    ctx = context(spot=True)
    loop, fake, clock = make_loop(policy(ctx), ctx, counts)

    async def run() -> None:
        await loop.start(run=False)
        await drive(loop, clock, 300)
        spot = [i for i in loop.fleet.instances.values() if i.market == Market.SPOT]
        assert spot, "the plan used spot"
        victim = spot[0]
        reclaim = await fake.notice(victim.id)
        assert victim.state == InstanceState.NOTICE
        await _yield()
        await loop.step()  # the step the notice wakes
        await _yield()
        # the replacement is planned at once (not a spot instance of the noticed type)
        launched_after = [fake.instances[i] for i in fake.launched
                          if fake.instances[i].launched_at_s >= clock.now()]
        assert launched_after
        assert not any(i.instance_type == victim.instance_type and i.market == Market.SPOT
                       for i in launched_after)
        assert victim.serving  # still serving until the replacement is ready
        await advance(clock, clock.now() + DELAY_S + 1)
        assert victim.id not in loop.fleet.instances  # drained once it was replaced
        assert victim.id in fake.terminated and clock.now() < reclaim
        await loop.stop()

    asyncio.run(run())
    events = [e["event"] for d in loop.decisions for e in d["events"]]
    assert "notice" in events


def test_a_policy_exception_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    counts = np.full(1200, 30).astype(np.int64)
    ctx = context()
    rec = Recorder(policy(ctx), fail_at={100.0})
    loop, _, clock = make_loop(rec, ctx, counts)

    async def run() -> None:
        await loop.start(run=False)
        with caplog.at_level(logging.ERROR):
            await drive(loop, clock, 200)
        await loop.stop()

    asyncio.run(run())
    errors = [d for d in loop.decisions if d["error"]]
    assert [d["t"] for d in errors] == [100.0] and "boom" in errors[0]["error"]
    assert any("policy mark failed at t=100.0" in r.getMessage() for r in caplog.records)
    assert max(s["t"] for s in rec.steps) == 190.0  # steps after the failure ran


def test_the_running_loop_steps_on_its_clock_and_a_notice_wakes_it() -> None:
    counts = np.full(1200, 30).astype(np.int64)
    ctx = context(spot=True)
    rec = Recorder(policy(ctx))
    loop, fake, clock = make_loop(rec, ctx, counts)

    async def run() -> None:
        await loop.start()  # the real loop task, on the virtual clock
        for t in (10.0, 20.0, 30.0):
            await advance(clock, t)
            await asyncio.sleep(0.05)  # the policy runs in a worker thread
        assert [s["t"] for s in rec.steps] == [0.0, 10.0, 20.0, 30.0]
        spot = next(i for i in loop.fleet.instances.values() if i.market == Market.SPOT)
        await fake.notice(spot.id)
        await asyncio.sleep(0.05)
        assert [s["t"] for s in rec.steps][-1] == 30.0 and len(rec.steps) == 5  # woken
        await loop.stop()

    asyncio.run(run())


def test_admin_reports_fleet_cost_and_decisions_and_refuses_bad_targets() -> None:
    counts = np.full(1200, 40).astype(np.int64)
    ctx = context(spot=True)
    loop, fake, clock = make_loop(policy(ctx), ctx, counts)
    admin = ControlAdmin(loop, fake)

    async def run() -> None:
        await loop.start(run=False)
        await drive(loop, clock, 200)
        fleet = await admin.fleet()
        assert fleet and {f["state"] for f in fleet} <= {"ready", "pending"}
        for f in fleet:
            assert set(f) == {"id", "url", "model", "instance_type", "market", "state", "weight",
                              "launched_at", "ready_at", "cost_usd"}
            assert f["model"] == MODEL and f["weight"] > 0 and f["cost_usd"] > 0
        cost = await admin.cost()
        assert cost["total"] == pytest.approx(sum(f["cost_usd"] for f in fleet), abs=1e-5)
        assert cost["total"] == pytest.approx(cost["on_demand"] + cost["spot"] + cost["faas"])
        decisions = await admin.decisions(150.0)
        assert [d["t"] for d in decisions] == [150.0, 160.0, 170.0, 180.0, 190.0]
        for d in decisions:
            assert {"t", "forecast_rps", "capacity_rps", "launches", "terminations",
                    "info"} <= set(d)
        with pytest.raises(NotFound, match="known ids"):
            await admin.drain("nope")
        # an on-demand instance (this plan chose spot only): no spot notice for it
        od = await fake.launch(LaunchSpec("c5.large", Market.ON_DEMAND, (MODEL,)))
        loop.fleet.upsert(od)
        with pytest.raises(Conflict, match="on_demand"):
            await admin.notice(od.id)
        victim = fleet[0]["id"]
        await admin.drain(victim)
        await _yield()
        assert victim not in loop.fleet.instances and victim in fake.terminated
        await loop.stop()

    asyncio.run(run())


def test_ledger_bills_per_second_with_the_minimum_by_market() -> None:
    cat = load_catalogue()
    ledger = CostLedger(cat)
    a = Instance("a", "c5.large", Market.ON_DEMAND, InstanceState.READY, 0.0)
    b = Instance("b", "c5.large", Market.SPOT, InstanceState.READY, 0.0)
    c = Instance("c", "local", Market.ON_DEMAND, InstanceState.READY, 0.0)
    for i in (a, b, c):
        ledger.start(i)
    ledger.stop("a", 10.0)  # 10 s billed as the 60 s minimum
    price = cat.instance("c5.large")
    t = ledger.totals(100.4)
    assert t["on_demand"] == pytest.approx(price.price_usd_per_h("on_demand") / 3600 * 60)
    assert t["spot"] == pytest.approx(price.price_usd_per_h("spot") / 3600 * 101)
    assert t["total"] == pytest.approx(t["on_demand"] + t["spot"])
    assert ledger.cost_of("c", 1000.0) == 0.0  # a type the catalogue does not know is free


def test_a_real_model_is_planned_with_this_machines_measured_profile(tmp_path) -> None:
    from mark.control import build_controls, cheapest_type
    from mark.core.config import MarkConfig
    from mark.profiling import ensure_measured, measured_path

    cfg = MarkConfig(runtime_dir=tmp_path)  # the default: minilm, control on
    shipped = build_controls(cfg)["minilm"]
    assert "g4dn.xlarge" in shipped.plan.types  # the shipped profile knows GPUs
    model = cfg.models[0]
    path = measured_path(cfg, model)
    path.parent.mkdir(parents=True)
    path.write_text('{"model": "minilm", "source": "test", "instances": {"local": '
                    '{"batch_ms": {"1": 20, "8": 60, "32": 200}, "max_batch": 32}}}')
    # cached: no instance is started (this would take seconds and fail without Triton)
    assert asyncio.run(ensure_measured(cfg, model)) == path
    mc = build_controls(cfg, measured={"minilm": path})["minilm"]
    caps = {round(ts.capacity_rps, 6) for ts in mc.plan.types.values()}
    assert len(caps) == 1  # this machine's speed stands for every CPU type ...
    assert not any(cfg_t.is_gpu for t, cfg_t in mc.ctx.catalogue.instances.items()
                   if t in mc.plan.types)  # ... and GPU types are not offered
    cheapest = cheapest_type(mc.ctx, mc.plan)
    price = {t: mc.ctx.price_usd_per_h(t, "on_demand") for t in mc.plan.types}
    assert price[cheapest] == min(price.values())


def test_begin_aligns_the_loops_clock_with_a_replay() -> None:
    counts = np.concatenate([np.zeros(50), np.full(200, 30)]).astype(np.int64)
    ctx = context()
    rec = Recorder(policy(ctx))
    loop, _, clock = make_loop(rec, ctx, counts, warm=False)

    async def run() -> None:
        await loop.start(run=False)
        await advance(clock, 42.0)
        loop.begin(49.5)  # the replay starts at the next whole second: 50
        for t in (55.0, 60.0, 70.0, 80.0):
            await advance(clock, t)
            await asyncio.sleep(0.05)  # the policy runs in a worker thread
        await loop.stop()

    asyncio.run(run())
    assert [s["t"] for s in rec.steps] == [10.0, 20.0, 30.0]
    assert [s["n_counts"] for s in rec.steps] == [10, 20, 30]  # counts from second 50 on
    assert all(d["forecast_rps"] and d["forecast_rps"] > 20 for d in loop.decisions)


def test_the_plan_knows_the_deployments_own_faas() -> None:
    """Planned locally, FaaS is the local runtime's (its cold start, keep-alive and
    concurrency), not Lambda's; with a real Lambda endpoint, or on AWS, it is Lambda's."""
    from mark.control.planning import LOCAL_COLD_START_S, planning_catalogue
    from mark.core.catalogue import load_catalogue
    from mark.core.config import FleetConfig, FunctionsConfig, MarkConfig

    lam = load_catalogue().lambda_
    local = planning_catalogue(MarkConfig(faas=FunctionsConfig(concurrency=8, keep_alive_s=60)))
    assert (local.lambda_.cold_start_s, local.lambda_.keep_alive_s,
            local.lambda_.concurrency_limit) == (LOCAL_COLD_START_S, 60.0, 8)
    assert lam.cold_start_s > LOCAL_COLD_START_S and lam.concurrency_limit > 8
    remote = planning_catalogue(MarkConfig(faas=FunctionsConfig(
        endpoint_url="http://lambda.example:9001", concurrency=8)))
    assert remote.lambda_ == lam
    aws = planning_catalogue(MarkConfig(fleet=FleetConfig(backend="aws")))
    assert aws.lambda_ == lam
