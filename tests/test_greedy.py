"""MArk's greedy provisioner on hand-made snapshots: cheaper type per request, running
instances kept, scale-in hysteresis, FaaS for what an instance would serve mostly idle."""

from __future__ import annotations

import numpy as np
import pytest

from mark.core.catalogue import load_catalogue
from mark.core.instances import Instance, Market
from mark.core.profiles import load_profile
from provisioner import PolicyContext, Slo, Snapshot, default_serving_plan, greedy_plan, make_policy
from provisioner.greedy import Candidate, MArkGreedy


def cand(key: str, cap: float, price: float, overhead: float = 0.0, ready: int = 0,
         existing: bool = False) -> Candidate:
    return Candidate(key, key.split("#")[0], "on_demand", cap, price, overhead, ready, existing)


def test_picks_the_type_cheaper_per_request() -> None:
    small, big = cand("small", 100, 1.0), cand("big", 300, 2.0)
    chosen = greedy_plan(np.full(10, 300.0), [small, big], 60.0)
    assert [c.key for c in chosen] == ["big"]  # 2 $/h for 300 beats 3 x 1 $/h
    chosen = greedy_plan(np.full(10, 100.0), [small, big], 60.0)
    assert [c.key for c in chosen] == ["small"]  # only 100 to serve: small is cheaper
    chosen = greedy_plan(np.full(10, 650.0), [small, big], 60.0)
    assert sorted(c.key for c in chosen) == ["big", "big", "small"]


def test_running_instances_are_preferred_over_new_ones() -> None:
    running = cand("old#1", 100, 1.0, existing=True)
    cheaper_new = cand("new", 100, 0.9, overhead=0.9 / 3600 * 300, ready=2)
    chosen = greedy_plan(np.full(10, 100.0), [running, cheaper_new], 60.0)
    assert [c.key for c in chosen] == ["old#1"]
    # a running instance is used once; the rest comes from new ones
    chosen = greedy_plan(np.full(10, 180.0), [running, cheaper_new], 60.0)
    assert [c.key for c in chosen] == ["old#1", "new"]


def test_unneeded_load_goes_to_faas_when_cheaper() -> None:
    inst = cand("c", 200, 0.085)
    per_req_full = 0.085 / 3600 / 200
    assert greedy_plan(np.full(10, 5.0), [inst], 60.0, faas_cost_per_request=per_req_full * 10) == []
    assert len(greedy_plan(np.full(10, 190.0), [inst], 60.0, per_req_full * 10)) == 1


def test_launch_delay_means_new_capacity_only_from_its_ready_step() -> None:
    new = cand("new", 100, 1.0, ready=2)
    f = np.array([500.0, 500.0, 100.0, 100.0, 100.0])
    chosen = greedy_plan(f, [new], 60.0)
    assert [c.key for c in chosen] == ["new"]  # steps 0-1 cannot be served by anyone new


@pytest.fixture(scope="module")
def ctx() -> PolicyContext:
    return PolicyContext(load_catalogue(), load_profile("minilm"), Slo(200, 98),
                         types=("c5.large", "c5.xlarge"))


def snap(now: float, rate: float, fleet: tuple[Instance, ...]) -> Snapshot:
    return Snapshot(now, np.full(int(now), int(rate)), fleet, Slo(200, 98))


def test_policy_launches_then_holds_before_scale_in(ctx: PolicyContext) -> None:
    pol = make_policy("mark", ctx, hold_s=360.0, forecast_kw={"margin": 1.0},
                      adaptive_faas=False, noise_band_sigmas=0.0)
    assert isinstance(pol, MArkGreedy)
    cap = default_serving_plan(ctx).types["c5.large"].capacity_rps
    st = pol.initial_state()
    dec, st = pol.decide(snap(600, 0.9 * cap, ()), st)
    assert [o.instance_type for o in dec.launch] == ["c5.large"] and dec.serving is not None
    fleet = (Instance("a", "c5.large", "on_demand", "ready", 500, 500),
             Instance("b", "c5.large", "on_demand", "ready", 500, 500))
    dec, st = pol.decide(snap(600, 0.9 * cap, fleet), st)
    assert dec.launch == () and dec.terminate == ()  # b is idle but held
    assert dec.serving is None  # the serving plan is sent once
    kept = [i.id for i in fleet if st.last_needed_s.get(i.id) == 600]
    assert len(kept) == 1
    dec, st = pol.decide(snap(840, 0.9 * cap, fleet), st)
    assert dec.terminate == ()  # 340 s < hold_s since b was launched
    dec, st = pol.decide(snap(900, 0.9 * cap, fleet), st)
    assert len(dec.terminate) == 1 and dec.terminate[0] not in kept
    # with the load doubled both are needed again and nothing is terminated
    dec, st = pol.decide(snap(960, 1.8 * cap, fleet), pol.initial_state())
    assert dec.terminate == () and dec.launch == ()


def test_a_spare_within_the_noise_band_is_not_ended(ctx: PolicyContext) -> None:
    """Scale-in hysteresis: a spare instance that covers the Poisson noise of the rate (one
    standard deviation of its 5-second mean) stays, so noise does not end and relaunch."""
    pol = make_policy("mark", ctx, hold_s=360.0, forecast_kw={"margin": 1.0},
                      adaptive_faas=False, noise_band_sigmas=1.0)
    cap = default_serving_plan(ctx).types["c5.large"].capacity_rps
    fleet = (Instance("a", "c5.large", "on_demand", "ready", 500, 500),
             Instance("b", "c5.large", "on_demand", "ready", 500, 500))
    st = pol.initial_state()
    for now in (600, 840, 900, 1200):
        dec, st = pol.decide(snap(now, 0.9 * cap, fleet), st)
        assert dec.terminate == () and dec.launch == ()


def test_notice_instances_are_replaced(ctx: PolicyContext) -> None:
    pol = make_policy("mark", ctx, forecast_kw={"margin": 1.0})
    cap = default_serving_plan(ctx).types["c5.large"].capacity_rps
    fleet = (Instance("a", "c5.large", "spot", "notice", 0, 0),)
    dec, _ = pol.decide(snap(600, 0.9 * cap, fleet), pol.initial_state())
    assert len(dec.launch) == 1 and dec.terminate == ()


def test_unknown_policy_lists_registered(ctx: PolicyContext) -> None:
    from mark.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"registered: .*mark.*oracle.*sagemaker"):
        make_policy("nope", ctx)


def test_spot_replacement_falls_back_to_on_demand() -> None:
    ctx = PolicyContext(load_catalogue(), load_profile("minilm"), Slo(200, 98), spot=True,
                        types=("c5.large",))
    pol = make_policy("mark", ctx, forecast_kw={"margin": 1.0})
    cap = default_serving_plan(ctx).types["c5.large"].capacity_rps
    dec, _ = pol.decide(snap(600, 0.9 * cap, ()), pol.initial_state())
    assert [o.market for o in dec.launch] == ["spot"]  # spot is cheaper when nothing is lost
    fleet = (Instance("a", "c5.large", "spot", "notice", 0, 0),)
    dec, _ = pol.decide(snap(600, 0.9 * cap, fleet), pol.initial_state())
    assert [o.market for o in dec.launch] == ["on_demand"]


def test_gpu_types_where_cheaper_per_request_and_the_reason_per_type() -> None:
    """A heterogeneous mix: at a high rate the GPU type (cheapest per request at the SLO)
    carries the load; at a low rate a CPU type does (a GPU would idle); Decision.info gives
    each type's cost per million at capacity, launch delay and count planned."""
    ctx = PolicyContext(load_catalogue(), load_profile("inception-v3"), Slo(500, 98))
    pol = make_policy("mark", ctx, spill=False)

    def plan(rate: float) -> dict[str, float]:
        snap = Snapshot(600.0, np.full(600, rate), (), ctx.slo)
        return dict(pol.decide(snap, pol.initial_state())[0].info)

    high, low = plan(400.0), plan(2.0)
    types = [k.split(":")[1] for k in high if k.endswith(":on_demand:planned")]
    assert {"g4dn.xlarge", "c5.large"} <= set(types)
    per_m = {t: high[f"type:{t}:on_demand:usd_per_m"] for t in types}
    cheapest = min(per_m, key=per_m.__getitem__)
    assert ctx.catalogue.instance(cheapest).is_gpu
    assert high[f"type:{cheapest}:on_demand:planned"] >= 1
    assert high[f"type:{cheapest}:launch_delay_s"] > high["type:c5.large:launch_delay_s"]
    gpu_low = sum(low[f"type:{t}:on_demand:planned"] for t in types
                  if ctx.catalogue.instance(t).is_gpu)
    cpu_low = sum(low[f"type:{t}:on_demand:planned"] for t in types
                  if not ctx.catalogue.instance(t).is_gpu)
    assert gpu_low == 0 and cpu_low >= 1


def test_a_bridge_must_clearly_beat_the_spill_it_replaces() -> None:
    """A residual of 100 req/s over the horizon: a slow, cheap GPU type (ready in 4 steps)
    takes it; fast CPU instances would bridge the two steps before, by the model 5% cheaper
    than spilling them (spot c5.xlarge, billed while booting and MArk's launch overhead). At
    scale such bridges on forecast blips were launched and ended every few minutes (98
    launches/h on the Twitter day at x20, spot, all types): the planner's margin leaves the
    gap to spill."""

    price_c5, price_gpu = 0.0646, 0.158
    fast = Candidate("c5.xlarge/spot", "c5.xlarge", Market.SPOT, 3.5, price_c5,
                     price_c5 / 3600.0 * (120 + 180), 2, False)
    slow = Candidate("g4dn.xlarge/spot", "g4dn.xlarge", Market.SPOT, 370.0, price_gpu,
                     price_gpu / 3600.0 * (240 + 180), 4, False)
    forecast = np.full(10, 100.0)
    faas = 18.8e-6
    plain = greedy_plan(forecast, [fast, slow], 60.0, faas, life_steps=60.0)
    held = greedy_plan(forecast, [fast, slow], 60.0, faas, life_steps=60.0, bridge_margin=1.5)
    assert sum(c is slow for c in plain) == 1 and sum(c is fast for c in plain) >= 28
    assert held == [slow]
