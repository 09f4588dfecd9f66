"""FaaS as a planned tier: scale to zero, the instance/FaaS crossover against its closed
form, the cold-start cover, the oracle with the FaaS option, several models' plans."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from mark.core.catalogue import load_catalogue
from mark.core.instances import Instance
from mark.core.profiles import load_profile, parse_profile
from mark.core.workload.scenarios import sparse_diurnal
from mark.sim.multi import ModelRun, simulate_models
from mark.sim.simulator import simulate
from provisioner import (
    Decision,
    FaasConfig,
    PolicyContext,
    ServingPlan,
    Slo,
    Snapshot,
    default_serving_plan,
    make_policy,
)
from provisioner.faas_tier import (
    COVER_INSTANCE,
    COVER_NONE,
    COVER_WARM,
    REASON_COLD_BREAKS_SLO,
    REASON_COLD_FITS_SLO,
    cold_start_cover,
    crossover_rps,
    faas_tier_cost_per_request,
)

SLO = Slo(200, 98)


def unbatched_profile() -> object:
    """MiniLM's numbers with Lambda limited to batch 1: FaaS costs the same per request
    at every rate, so the crossover has a closed form."""
    raw = load_profile("minilm").to_json()
    raw["instances"] = {"c5.large": raw["instances"]["c5.large"]}
    raw["lambda"]["batch_ms"] = {"1": raw["lambda"]["batch_ms"]["1"]}
    raw["lambda"]["max_batch"] = 1
    return parse_profile(raw)


@pytest.fixture(scope="module")
def ctx() -> PolicyContext:
    prof = unbatched_profile()
    return PolicyContext(load_catalogue(), prof, SLO)  # type: ignore[arg-type]


class Flat:
    """A forecast of ``rate`` for every step (the planner's input, hand-made)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def __call__(self, counts: np.ndarray, horizon: int, step_s: float) -> np.ndarray:
        return np.full(horizon, self.rate)


RUNNING = (Instance("i-0", "c5.large", "on_demand", "ready", 0.0, 120.0),)


def plan_at(ctx: PolicyContext, rate: float, policy: str = "mark",
            fleet: tuple[Instance, ...] = ()) -> Decision:
    pol = make_policy(policy, ctx, forecast=Flat(rate))
    counts = np.full(3600, round(rate))
    dec, _ = pol.decide(Snapshot(3600.0, counts, fleet, ctx.slo), pol.initial_state())
    return dec


def faas_cpr(ctx: PolicyContext) -> float:
    from provisioner.faas_batching import choose_faas_config

    cfg = choose_faas_config(ctx, 20.0)
    assert cfg.batch == 1
    return faas_tier_cost_per_request(ctx, cfg, 20.0)


def test_zero_instances_below_the_crossover_and_a_fleet_above(ctx: PolicyContext) -> None:
    r_star = crossover_rps(ctx, faas_cpr(ctx))
    assert 5 < r_star < default_serving_plan(ctx).types["c5.large"].capacity_rps
    low = plan_at(ctx, 0.5 * r_star)
    assert low.launch == () and low.info["planned_instances"] == 0  # scale to zero
    assert low.info["faas_cover"] == COVER_NONE
    # the last instance is let go: not needed by the plan, terminated after the hold
    pol = make_policy("mark", ctx, forecast=Flat(0.5 * r_star), hold_s=120.0)
    counts = np.full(3600, round(0.5 * r_star))
    st = pol.initial_state()
    last = (Instance("i-0", "c5.large", "on_demand", "ready", 3500.0, 3500.0),)
    dec, st = pol.decide(Snapshot(3600.0, counts, last, SLO), st)
    assert dec.terminate == () and dec.info["planned_instances"] == 0  # within the hold
    dec, st = pol.decide(Snapshot(3660.0, counts, last, SLO), st)
    assert dec.terminate == ("i-0",)
    high = plan_at(ctx, 2.0 * r_star)
    assert [o.instance_type for o in high.launch] == ["c5.large"]
    # MArk's shape (no FaaS tier) runs an instance even where FaaS is cheaper
    assert len(plan_at(ctx, 0.5 * r_star, "mark-no-faas").launch) == 1


def planner_threshold(ctx: PolicyContext, fleet: tuple[Instance, ...]) -> float:
    """Lowest forecast rate at which the plan has an instance (bisection)."""
    lo, hi = 1.0, default_serving_plan(ctx).types["c5.large"].capacity_rps
    for _ in range(30):
        mid = 0.5 * (lo + hi)
        if plan_at(ctx, mid, fleet=fleet).info["planned_instances"] > 0:
            hi = mid
        else:
            lo = mid
    return hi


def test_crossover_agrees_with_the_closed_form(ctx: PolicyContext) -> None:
    c_f = faas_cpr(ctx)
    closed = crossover_rps(ctx, c_f)
    price = ctx.price_usd_per_h("c5.large", "on_demand")
    assert closed == pytest.approx(price / 3600.0 / c_f, rel=1e-12)
    # a running instance is kept exactly while the rate is above the crossover
    assert planner_threshold(ctx, RUNNING) == pytest.approx(closed, rel=0.01)
    # from zero instances the first launch also pays its boot and overhead
    margin = make_policy("mark", ctx).first_launch_margin  # type: ignore[attr-defined]
    assert margin == pytest.approx(1 + (120 + 180) / 600)  # boot + overhead over the horizon
    assert planner_threshold(ctx, ()) == pytest.approx(closed * margin, rel=0.01)


def test_cold_start_cost_is_amortised_over_the_warm_concurrency(ctx: PolicyContext) -> None:
    cfg = FaasConfig(1, 0.0, 1024, 1e-6)
    quiet = faas_tier_cost_per_request(ctx, cfg, 1e-6)  # days between requests: all cold
    busy = faas_tier_cost_per_request(ctx, cfg, 50.0)
    spec = ctx.catalogue.lambda_
    assert quiet == pytest.approx(1e-6 + spec.cold_start_s * spec.usd_per_gb_s, rel=0.01)
    assert busy == pytest.approx(1e-6, rel=1e-9)


def every(gap_s: int, n_s: int) -> np.ndarray:
    c = np.zeros(n_s, dtype=np.int64)
    c[::gap_s] = 1
    return c


def test_a_cold_start_beyond_the_slo_forces_a_warm_option(ctx: PolicyContext) -> None:
    counts = every(900, 6 * 3600)  # gaps beyond the 600 s keep-alive: every request is cold
    pol = make_policy("mark", ctx)
    dec, _ = pol.decide(Snapshot(float(counts.size), counts, (), SLO), pol.initial_state())
    assert dec.info["faas_cover"] == COVER_WARM
    assert dec.info["faas_cover_reason"] == REASON_COLD_BREAKS_SLO
    assert dec.serving is not None and dec.serving.faas.provisioned == 1 and dec.launch == ()
    # a cold start that fits the SLO budget needs no cover
    quick = replace(ctx.catalogue, lambda_=replace(ctx.catalogue.lambda_, cold_start_s=0.05))
    cfg = dec.serving.faas
    c = cold_start_cover(replace(ctx, catalogue=quick), cfg, counts, 0.001)
    assert (c.kind, c.reason) == (COVER_NONE, REASON_COLD_FITS_SLO)
    # warm containers dearer than an instance: one instance is kept instead
    dear = replace(ctx.catalogue, lambda_=replace(ctx.catalogue.lambda_,
                                                  provisioned_usd_per_gb_s=1e-3))
    dctx = PolicyContext(dear, ctx.profile, SLO)
    c = cold_start_cover(dctx, cfg, counts, 0.001)
    assert c.kind == COVER_INSTANCE and c.instance_type == "c5.large"
    assert c.usd_per_h < c.alternative_usd_per_h
    pol = make_policy("mark", dctx)
    dec, _ = pol.decide(Snapshot(float(counts.size), counts, (), SLO), pol.initial_state())
    assert [o.instance_type for o in dec.launch] == ["c5.large"]
    assert dec.info["faas_cover"] == COVER_INSTANCE


def test_warm_containers_keep_the_slo_in_the_simulator() -> None:
    counts = every(900, 12 * 3600)
    lam = simulate(counts, "lambda", slo=SLO, timeline=False)
    assert lam.slo_attainment < 0.1  # every request meets a cold container
    mark = simulate(counts, "mark", slo=SLO, timeline=False)
    assert mark.slo_attainment > 0.85  # only the first ones, before the history shows gaps
    tier = mark.to_json()["faas_tier"]
    assert tier["cover"] == "warm-containers"
    assert tier["zero_instance_share"] == 1.0
    assert tier["cover_reason"] == "cold starts would break the SLO percentile"
    assert mark.extra["faas_provisioned_usd"] > 0
    assert mark.cost_usd["on_demand"] == 0.0


def test_provisioned_concurrency_is_billed_while_held() -> None:
    cat = load_catalogue()

    class Warm:
        name, instant_launch, interval_s = "warm", False, 60.0

        def initial_state(self) -> int:
            return 0

        def decide(self, snap: Snapshot, st: int) -> tuple[Decision, int]:
            return Decision(serving=ServingPlan({}, FaasConfig(1, 0.0, 2048, 0.0, 2))), 1

    r = simulate(np.zeros(3600, dtype=np.int64), Warm(), timeline=False)
    want = 2 * 2.0 * 3600 * cat.lambda_.provisioned_usd_per_gb_s
    assert r.cost_usd["faas"] == pytest.approx(want, rel=1e-9)


@pytest.fixture(scope="module")
def sparse_runs() -> dict[str, object]:
    counts = sparse_diurnal(1.0, 8.0, seed=3).counts
    return {p: simulate(counts, p, slo=SLO, seed=1, timeline=False)
            for p in ("oracle", "mark", "mark-no-faas", "lambda", "batch", "sagemaker")}


def test_oracle_with_faas_costs_no_more_than_any_policy(sparse_runs: dict) -> None:
    oracle = sparse_runs["oracle"].cost_usd["total"]
    for name, r in sparse_runs.items():
        assert oracle <= r.cost_usd["total"] * (1 + 1e-9), name
    assert sparse_runs["oracle"].slo_attainment >= 0.98


def test_mark_with_the_tier_beats_mark_without_and_lambda_on_sparse(sparse_runs: dict) -> None:
    mark = sparse_runs["mark"]
    cheaper = min(sparse_runs["mark-no-faas"].cost_usd["total"],
                  sparse_runs["lambda"].cost_usd["total"])
    assert mark.cost_usd["total"] < cheaper
    assert mark.slo_attainment >= 0.99
    assert mark.extra["faas_tier"]["zero_instance_share"] > 0.9
    assert "faas_tier" not in sparse_runs["mark-no-faas"].extra


def test_each_model_has_its_own_plan() -> None:
    rng = np.random.default_rng(5)
    busy = rng.poisson(400.0, 3600)
    quiet = sparse_diurnal(0.25, 2.0, night_hours=(0.0, 0.0), seed=4).counts[:3600]
    res = simulate_models([ModelRun("busy", busy, slo=SLO), ModelRun("quiet", quiet, slo=SLO)])
    assert res.models["quiet"].extra["launches"] == 0  # lives on FaaS
    assert res.models["quiet"].extra["faas_tier"]["zero_instance_share"] == 1.0
    assert res.models["busy"].extra["launches"] >= 2  # runs a fleet
    assert res.cost_usd == pytest.approx(sum(r.cost_usd["total"] for r in res.models.values()))
    doc = res.to_json()
    assert set(doc["models"]) == {"busy", "quiet"} and doc["requests"] == busy.sum() + quiet.sum()
    assert math.isfinite(doc["cost_per_million_usd"])
