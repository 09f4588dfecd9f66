"""MArk's greedy provisioning (ATC'19, section 4), as a pure policy.

Every ``interval_s`` (one step) with a forecast F_1..F_m of the peak rate for the next m
steps:

1. residual r_t = F_t - planned capacity (nothing is planned at first);
2. take the step t* with the largest residual that some candidate can serve, and the run
   of steps from t* on where r_t > 0;
3. for every candidate (each running or pending instance, and a new instance of each type
   and market) compute its cost per request over that run:
   ``(P * span_s + O) / sum_t min(r_t, C) * step_s`` where P is the price, C the capacity
   under the SLO (:mod:`provisioner.capacity`) and O the launch overhead (zero for running
   instances, so keeping them is preferred; for a new one ``launch_overhead_s`` of its
   price, plus its boot time, which is billed, and the billing minimum);
4. add the cheapest, unless FaaS, priced (batched) for a stream of the residual's rate, is
   cheaper per request than the candidate's running cost over the run (the residual is then
   left to spill: deliberate spill, used where an instance would run mostly idle); repeat.

Defaults differ from the paper's where the simulator showed a cheaper setting at the same
SLO attainment: the forecast is ``"auto-quantile"`` (the newsvendor quantile of the last
two minutes' 5-second rates, :class:`predictor.window.AutoQuantile`, with the
quantile re-derived each step from instance vs FaaS cost per request, FaaS priced for a
spill stream of ``spill_plan_share`` of the load) instead of 1.1x the 10-minute peak,
the FaaS settings follow the spill rate seen and planned (BATCH-style, ``faas_for``), the
launch of a type under a spot notice falls back to on-demand, and the
scale-in hold is one minute instead of six: with spill behind it, a plan that proves short
costs a little FaaS rather than SLO misses. ``forecast="recent-peak"``, ``hold_s=360`` give
the paper's behaviour.

FaaS as a planned tier (``faas_tier=True``, the default; :mod:`provisioner.faas_tier`):
step 4 prices FaaS with cold starts amortised, so a plan of zero instances is legal (scale
to zero) and instances come back when the forecast rate passes the crossover; from zero
instances the first one must beat FaaS by its boot and launch overhead spread over
``first_life_s`` (default: the horizon; ``first_launch_margin``, applied while the
instance would run part idle: a short burst does not pay for a launch). A
plan with no instance gets a cold-start cover when cold starts would break the SLO
percentile (warm containers by provisioned concurrency, or one instance kept, the
cheaper); the choice and its reason go to ``Decision.info`` (``faas_cover``, ``faas_cover_reason``, codes in
:mod:`provisioner.faas_tier`). ``faas_tier=False`` (policy ``"mark-no-faas"``) is MArk's
shape: instances cover the forecast and FaaS only absorbs what they miss.

Instances not in the plan are terminated only when no plan needed them for ``hold_s``
since they were (or would be) ready, so one still booting is never ended. Optionally
(``noise_band_sigmas`` > 0, off by default) spare running instances up to that many standard
deviations of the rate's 5-second Poisson noise stay counted as needed while the plan keeps a
fleet (scale-in hysteresis: noise does not end and relaunch instances). Off because the
simulator bills what churn costs (boot time, billing minimum) and holding the band costs more:
+10% on two days of the Twitter week at 3 sigmas, +3% at 1, for 25-40% fewer launches.
A new instance whose run ends within the horizon (a bridge until a slower, cheaper type is
ready, a transient) pays its launch overhead in the
comparison with FaaS and must beat it by ``bridge_margin`` (1.5): a forecast blip of a few
per cent over a GPU fleet launched ~30 c5.xlarge spot bridges, ended two minutes later (by
the model 5% cheaper than the spill they replaced; on the Twitter day at x20 with spot, all
types, 98 launches/h against the hindsight plan's 14.5, and the margin cut them to 29/h and
the bill by 6%); one that lasts to the horizon amortises it over its life. Instances
under a spot interruption notice are not counted; the plan replaces them. A new instance
serves only from the step it is ready in; the gap is spill's.

FaaS has limits (``faas_limits=True``, :mod:`provisioner.headroom`): the account's
concurrency limit and Lambda's scaling rate cap what spill can absorb at a burst onset. The
plan buys absorption where the replayed history (the last ``cover_window_s``, instances lagging
by the slowest launch delay) says it is cheapest: a floor of ``headroom_x`` x the base rate
(the median of the last half hour's minutes, so a burst in progress does not multiply it and
minute noise does not churn it) on instances, larger (faster) functions, or both; the floor is
at least what keeps the spill FaaS could not absorb within half the SLO's slack, and more
where instances are cheaper than the onset spill they save (a GPU fleet). The FaaS settings
must also absorb the spill under way now (the last ``NOW_S`` seconds), so a first burst the
history has not seen is met by the fastest functions at the next decision. The replay is
refreshed every ``headroom_every_s`` (kept in the policy state). ``Decision.info``:
``headroom_x``, ``headroom_base_rps``, ``headroom_floor_rps``, ``headroom_overload_x`` (what
the fleet takes in an overload per request/s of its capacity: the spill test keeps each
instance's queue within its wait budget, so a CPU fleet serving one request at a time takes
about twice its capacity under the SLO before it spills), ``faas_absorb_rps``,
``faas_memory_mb``, ``expected_unabsorbed_share``, ``headroom_replay_usd_per_h``,
``throttling_accepted`` (1 when the plan accepts throttling), ``throttling_reason`` (1: no
floor up to the maximum keeps the allowance; 3: spill beyond what FaaS absorbs at burst
onsets is left within it, the SLO's minimum floor or a cheaper one; 2: only the cold-start
throttling at burst onsets, ``expected_throttled_share``, is; ``expected_unabsorbed_share``
counts all the requests the plan expects to meet FaaS's limits), ``headroom_period_s`` and
``headroom_duty`` (a burst calendar: the floor is held from a launch delay before each of its
windows to the window's end, ``headroom_floor_now_rps``; a larger FaaS memory only in the
windows or while spill under way needs it). A memory that the spill under way forced is not
the one kept at the next refresh. At small scale the floor is 0 and the cheapest settings
stay.

At MArk's scale a plan holds thousands of instances; the greedy takes a repeated pick at
once where it provably repeats (:func:`greedy_plan`), so a decision costs O(types), not
O(fleet).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from mark.core.instances import Instance, InstanceState, Market
from predictor import RateForecast, RecentQuantile, make_rate_forecast
from provisioner.base import register_policy
from provisioner.context import PolicyContext
from provisioner.faas_batching import faas_config_for
from provisioner.faas_tier import (
    COVER_INSTANCE,
    COVER_NONE,
    COVER_WARM,
    REASON_INSTANCES_PLANNED,
    Cover,
    cold_start_cover,
    faas_tier_cost_per_request,
)
from provisioner.headroom import (
    PERIODS_S,
    UTILISATION,
    base_rate,
    cheapest_instance,
    choose_headroom,
    faas_absorb_rps,
    headroom_options,
    overload_x,
)
from provisioner.headroom import Option as HeadroomOption
from provisioner.records import Decision, FaasConfig, LaunchOrder, ServingPlan, Snapshot
from provisioner.serving import default_serving_plan

#: The mark policy's forecast unless told otherwise (any name registered in :mod:`predictor`
#: is accepted): the one with the lowest cost at the SLO on the shared evaluation traces
#: (``bench/forecaster_cost.py``). For ``"auto-quantile"`` the planner re-derives the
#: quantile from instance vs FaaS prices at each decision (:meth:`MArkGreedy.decide`).
DEFAULT_FORECAST = "auto-quantile"
NOW_S = 10.0  # "now" for the spill FaaS must absorb at once: the last seconds' rate


@dataclass(frozen=True)
class Candidate:
    key: str  # instance id for existing ones, "type/market" for new ones
    instance_type: str
    market: Market
    capacity_rps: float
    price_usd_per_h: float
    overhead_usd: float
    ready_step: int
    existing: bool


@dataclass(frozen=True)
class GreedyState:
    last_needed_s: dict[str, float] = field(default_factory=dict)
    sent_plan: bool = False
    faas: FaasConfig | None = None  # the FaaS settings last sent
    headroom: tuple[HeadroomOption, ...] = ()  # the headroom replay's options ...
    headroom_at: float = -math.inf  # ... as of this time
    faas_floor_mb: float = 0.0  # FaaS memory bought for absorption (0: none)
    in_force: tuple[float, float] | None = None  # (FaaS MB, headroom multiplier) in force


def greedy_plan(
    forecast: np.ndarray,
    candidates: list[Candidate],
    step_s: float,
    faas_cost_per_request: float | Callable[[float], float] = math.inf,
    max_new: int = 1000,
    faas_margin: float = 1.0,
    life_steps: float = 0.0,
    bridge_margin: float = 1.0,
) -> list[Candidate]:
    """The chosen candidates (existing ones at most once, new ones repeatedly).

    Existing instances that are interchangeable (same type, market, capacity, price and
    ready step) are evaluated once per group, so a plan costs O(groups) per pick, not
    O(fleet). Ties go to the first candidate given. ``faas_cost_per_request`` may depend on
    the rate FaaS would take (batching makes a busy FaaS stream cheaper per request); it is
    then evaluated at the residual of the peak step. ``faas_margin``: a candidate's running cost
    per request is multiplied by it before the comparison with FaaS when the peak residual
    is below its capacity (the FaaS tier's launch from zero instances amortises the boot
    and overhead over an expected lifetime; a full instance is not held back).
    ``life_steps`` (> 0): a new instance whose run lasts to the horizon is expected to live
    this many steps, so against other candidates it carries only the horizon's share of its
    launch overhead (a cheaper type replaces a running dearer one when the saving over that
    life pays for the launch); 0: the whole overhead within the horizon (MArk's rule).
    ``bridge_margin``: a new instance whose run ends within the horizon (a bridge until
    slower capacity is ready) is taken only if its cost per request times this is below
    FaaS's.
    """
    faas_at = (faas_cost_per_request if callable(faas_cost_per_request)
               else lambda _rate: float(faas_cost_per_request))
    m = int(forecast.shape[0])
    r = [float(x) for x in forecast]
    chosen: list[Candidate] = []
    groups: dict[tuple[object, ...], list[Candidate]] = {}
    for c in candidates:
        if c.existing:
            key = (c.instance_type, c.market, c.capacity_rps, c.price_usd_per_h, c.ready_step)
            groups.setdefault(key, []).append(c)
    new = [c for c in candidates if not c.existing]
    n_new = 0
    while True:
        pool = [g[0] for g in groups.values() if g] + (new if n_new < max_new else [])
        if not pool:
            break
        first = min(c.ready_step for c in pool)
        if first >= m:
            break
        t_star = max(range(first, m), key=lambda t: r[t])
        if r[t_star] <= 1e-9:
            break
        end = t_star
        while end < m and r[end] > 1e-9:
            end += 1
        best: Candidate | None = None
        best_cpr = run_cpr = math.inf
        for c in pool:
            lo = max(t_star, c.ready_step)
            if lo >= end:
                continue
            cap = c.capacity_rps
            served = sum(min(r[t], cap) for t in range(lo, end)) * step_s
            if served <= 0:
                continue
            running = c.price_usd_per_h / 3600.0 * (end - lo) * step_s
            over = c.overhead_usd
            if life_steps > 0 and end >= m:
                over *= min(1.0, (end - lo) / life_steps)
            cpr = (running + over) / served
            if cpr < best_cpr - 1e-15:
                # against FaaS the launch overhead is left out only for a run that lasts to
                # the horizon (the instance will live on and amortise it); a run that ends
                # within it (a bridge until a slower, cheaper type is ready, a transient)
                # must pay for its launch itself
                lasting = end >= m
                best, best_cpr = c, cpr
                run_cpr = (running + (0.0 if lasting else c.overhead_usd)) / served
        # utilisation within the run counts against FaaS
        # the margin is for an instance the forecast would leave part idle; a full one
        # is not held back (its advantage over FaaS may be smaller than the margin)
        margin = faas_margin if best is not None and r[t_star] < best.capacity_rps else 1.0
        if best is not None and not best.existing and end < m:
            margin *= bridge_margin  # a bridge must clearly beat the spill it replaces
        if best is None or run_cpr * margin > faas_at(r[t_star]):
            # nothing (cheaper than FaaS) serves the peak; drop that run and go on
            for t in range(t_star, end):
                r[t] = 0.0
            continue
        # the same pick repeats while every candidate would still serve the run at full
        # capacity and ``best`` starts no later than any (the residuals then drop by the
        # same amount wherever the peak search looks, so no cost, run or peak changes):
        # take those picks at once (a fleet of thousands costs O(types) picks, not O(fleet))
        cap = best.capacity_rps
        key = (best.instance_type, best.market, cap, best.price_usd_per_h, best.ready_step)
        left = len(groups[key]) if best.existing else max_new - n_new
        k = 1
        if best.ready_step == first and left > 1:
            floor_r = min(r[t] for t in range(t_star, end))
            top_cap = max(c.capacity_rps for c in pool)
            if floor_r >= top_cap + cap:
                k = min(left, 1 + int((floor_r - top_cap) // cap))
                while k > 1 and run_cpr > faas_at(r[t_star] - (k - 1) * cap):
                    k //= 2  # FaaS's price per request moves with the rate it would take
        if best.existing:
            chosen.extend(groups[key][:k])
            del groups[key][:k]
        else:
            chosen.extend([best] * k)
            n_new += k
        for t in range(best.ready_step, m):
            r[t] -= k * cap
    return chosen


@register_policy("mark")
class MArkGreedy:
    """MArk's greedy provisioner with spill (see the module docstring)."""

    name = "mark"
    instant_launch = False

    def __init__(
        self,
        ctx: PolicyContext,
        interval_s: float = 60.0,
        horizon_s: float = 600.0,
        hold_s: float = 60.0,
        forecast: str | RateForecast = DEFAULT_FORECAST,
        forecast_kw: dict[str, Any] | None = None,
        launch_overhead_s: float = 180.0,
        spill: bool = True,
        faas_aware: bool = True,
        adaptive_faas: bool = True,
        spill_plan_share: float = 0.1,
        headroom: float = 1.0,
        serving: ServingPlan | None = None,
        faas_tier: bool = True,
        cover_window_s: int = 6 * 3600,
        first_life_s: float | None = None,
        faas_limits: bool = True,
        noise_band_sigmas: float = 0.0,
        headroom_every_s: float = 300.0,
        life_s: float = 3600.0,
        burst_periods_s: tuple[float, ...] = PERIODS_S,
        bridge_margin: float = 1.5,
    ) -> None:
        self.ctx = ctx
        self.faas_tier = faas_tier and faas_aware and spill
        self.cover_window_s = cover_window_s
        # from zero instances a new one must beat FaaS with its boot and launch overhead
        # spread over ``first_life_s`` of expected lifetime (default: the horizon, all the
        # plan can see; inf: not counted)
        delay = max((ctx.catalogue.instance(t).launch_delay_s for t in ctx.instance_types),
                    default=0.0)
        life = horizon_s if first_life_s is None else first_life_s
        self.first_launch_margin = 1.0 + (delay + launch_overhead_s) / life
        # new capacity arrives a launch delay (the slowest type's) after a decision
        self.headroom_lag_s = delay + interval_s
        self.faas_limits = faas_limits
        self.noise_band_sigmas = noise_band_sigmas
        self.headroom_every_s = headroom_every_s
        self.burst_periods_s = tuple(burst_periods_s)  # () : the floor is always held
        self.life_s = life_s  # expected life of a lasting new instance (0: the horizon)
        self.bridge_margin = bridge_margin  # a bridge must beat FaaS by this (greedy_plan)
        # what a request/s of instance capacity held as headroom costs, and one instance's
        # capacity (the cheapest type per request)
        plan_types = (serving or default_serving_plan(ctx)).types
        self._headroom_inst = cheapest_instance(ctx, plan_types)
        # ... and what it serves in an overload per request/s of that capacity (its queue
        # kept within the wait budget by the spill test: a burst's onset spills only the rest)
        self._headroom_burst_x = overload_x(ctx, plan_types)
        self.interval_s = interval_s
        self.horizon_steps = max(1, math.ceil(horizon_s / interval_s))
        self.hold_s = hold_s
        self.launch_overhead_s = launch_overhead_s
        self.faas_aware = faas_aware and spill and faas_tier
        self.adaptive_faas = adaptive_faas
        self.spill_plan_share = spill_plan_share
        self.headroom = headroom
        base = serving or default_serving_plan(ctx)
        self.serving = ServingPlan(base.types, base.faas, spill)
        kw = dict(forecast_kw or {})
        # "auto-quantile": the quantile is re-derived at each decision (see spill_quantile)
        self.auto_q = forecast == "auto-quantile" and spill and "q" not in kw
        if forecast == "auto-quantile":
            kw.setdefault("q", self.spill_quantile() if spill else 1.0)
        self.forecast: RateForecast = (
            make_rate_forecast(forecast, **kw) if isinstance(forecast, str) else forecast
        )

    def spill_quantile(self, spill_rps: float | None = None, lo: float = 0.2,
                       hi: float = 0.995) -> float:
        """1 - (cheapest instance cost per request at capacity) / (FaaS cost per request),
        FaaS priced for a spill stream of ``spill_rps`` (the default plan's when None). The
        cheapest FaaS settings' price, also when the headroom plan bought larger functions
        for absorption: pricing the steady spill at their price raised the quantile and cost
        more (+2.5% on 8 h of the Twitter day at x20, Inception-v3 CPU types)."""
        faas = (self.serving.faas if spill_rps is None else self.faas_for(spill_rps)
                ).cost_per_request_usd
        if not self.serving.types or faas <= 0:
            return hi
        inst = min(self.ctx.price_usd_per_h(t, m) / 3600.0 / ts.capacity_rps
                   for t, ts in self.serving.types.items() for m in self.ctx.markets)
        return min(max(1.0 - inst / faas, lo), hi)

    def initial_state(self) -> GreedyState:
        return GreedyState()

    def _ready_at(self, inst: Instance) -> float:
        """When ``inst`` became ready, or is expected to (its type's launch delay)."""
        if inst.ready_at_s is not None:
            return inst.ready_at_s
        return inst.launched_at_s + self.ctx.catalogue.instance(inst.instance_type).launch_delay_s

    def _candidates(self, fleet: tuple[Instance, ...], now_s: float) -> list[Candidate]:
        out = []
        cat = self.ctx.catalogue
        for inst in fleet:
            if inst.state == InstanceState.NOTICE or inst.instance_type not in self.serving.types:
                continue
            ready_step = max(0, math.ceil((self._ready_at(inst) - now_s) / self.interval_s))
            out.append(Candidate(
                inst.id, inst.instance_type, inst.market,
                self.serving.types[inst.instance_type].capacity_rps / self.headroom,
                self.ctx.price_usd_per_h(inst.instance_type, inst.market), 0.0, ready_step, True,
            ))
        # spot fallback: while a type's spot instance is under notice, its replacement is
        # launched on demand (the next reclaim may be near; a running on-demand instance is
        # then kept as long as plans need it)
        noticed = {i.instance_type for i in fleet
                   if i.state == InstanceState.NOTICE and i.market == Market.SPOT}
        for t, ts in self.serving.types.items():
            it = cat.instance(t)
            for mkt in self.ctx.markets:
                if mkt == Market.SPOT and t in noticed:
                    continue
                price = it.price_usd_per_h(mkt)
                # billed while booting, plus MArk's fixed launch overhead
                overhead = price / 3600.0 * (it.launch_delay_s + self.launch_overhead_s)
                out.append(Candidate(
                    f"{t}/{mkt}", t, mkt, ts.capacity_rps / self.headroom, price, overhead,
                    math.ceil(it.launch_delay_s / self.interval_s), False,
                ))
        return out

    def faas_for(self, spill_rps: float) -> FaasConfig:
        """BATCH-style FaaS settings for a spill stream of ``spill_rps`` (memoised, 5% bins)."""
        if not self.adaptive_faas:
            return self.serving.faas
        return faas_config_for(self.ctx, spill_rps)

    def spill_rate_rps(self, snap: Snapshot, window_s: float | None = None) -> float:
        """Requests/s that exceeded the ready fleet's capacity over the last interval (or
        the last ``window_s`` seconds)."""
        cap = sum(self.serving.types[i.instance_type].capacity_rps for i in snap.fleet
                  if i.serving and i.instance_type in self.serving.types)
        last = snap.recent(self.interval_s if window_s is None else window_s)
        if last.size == 0:
            return 0.0
        return float(np.maximum(last - cap, 0.0).mean())

    def decide(self, snap: Snapshot, state: GreedyState) -> tuple[Decision, GreedyState]:
        forecast = self.forecast
        if self.auto_q and isinstance(forecast, RecentQuantile):
            # what spills when the rate exceeds the quantile is a stream of a fraction
            # (spill_plan_share) of the load: price FaaS (batched) for that stream
            level = snap.recent_rate(forecast.window_s)
            forecast = replace(forecast, q=self.spill_quantile(
                max(self.spill_plan_share * level, 1.0)))
        f = forecast(snap.counts, self.horizon_steps, self.interval_s)

        def faas_cpr(rate: float) -> float:
            if not self.faas_aware:
                return math.inf
            return faas_tier_cost_per_request(self.ctx, self.faas_for(rate), rate)

        chosen = greedy_plan(f, self._candidates(snap.fleet, snap.now_s), self.interval_s,
                             faas_cpr if self.adaptive_faas else faas_cpr(1.0),
                             max_new=self._max_new(float(np.max(f, initial=0.0))),
                             life_steps=self.life_s / self.interval_s,
                             bridge_margin=self.bridge_margin,
                             faas_margin=self.first_launch_margin if self.faas_tier and not any(
                                 i.state != InstanceState.NOTICE for i in snap.fleet) else 1.0)
        left = max(float(f[0]) - sum(c.capacity_rps for c in chosen if c.ready_step == 0), 0.0)
        rate = snap.recent_rate(self.interval_s)
        guess = self.spill_plan_share * rate
        spill_for = max(self.spill_rate_rps(snap), left, guess)
        faas = self.faas_for(spill_for)
        cover = Cover(COVER_NONE, REASON_INSTANCES_PLANNED)
        if self.faas_tier and not chosen:
            # FaaS carries the whole stream: settings for its mean rate (as BATCH does)
            spill_for = rate
            faas = self.faas_for(rate)
            cover, chosen, faas = self._cover(snap, float(f[0]), faas)
        headroom: dict[str, float] = {}
        opts, opts_at = state.headroom, state.headroom_at
        floor_mb = 0.0
        head_m = state.in_force
        if self.serving.spill and self.faas_limits and self.serving.types:
            if not opts or snap.now_s - opts_at >= self.headroom_every_s:
                # the replay over hours of history moves slowly: refreshed every few minutes
                opts, opts_at = headroom_options(
                    self.ctx, faas, snap.counts, self.headroom_lag_s, self.cover_window_s,
                    spill_rps=spill_for, inst=self._headroom_inst,
                    q=getattr(forecast, "q", None), burst_x=self._headroom_burst_x,
                    current=state.in_force, end_s=snap.now_s,
                    periods_s=self.burst_periods_s), snap.now_s
            # FaaS must absorb the spill under way now (a burst's first minute: the last
            # seconds' rate, not the interval's mean) and the spill planned
            need = max(self.spill_rate_rps(snap, NOW_S), left)
            hr = choose_headroom(opts, base_rate(snap.counts), need,
                                 memory_mb=max(state.faas_floor_mb, faas.memory_mb))
            headroom = {**hr.info(), "headroom_overload_x": self._headroom_burst_x}
            # the option in force (its memory and multiplier): kept at the next refresh
            # unless another saves 5% (Replay.cheapest_m)
            head_m = (float((hr.faas or faas).memory_mb), hr.multiplier)
            if hr.faas is not None and hr.faas.memory_mb > faas.memory_mb:
                # a larger memory absorbs more: the settings the replay judged (one the
                # spill under way forced is for now: the memory to keep stays the replay's);
                # with a calendar, only in its windows or while the spill under way is more
                # than the cheapest settings absorb (a burst it did not foresee)
                floor_mb = state.faas_floor_mb if hr.forced else hr.faas.memory_mb
                if hr.in_window(snap.now_s, snap.now_s + self.interval_s) or (
                        need > UTILISATION * faas_absorb_rps(self.ctx, faas)):
                    faas = replace(hr.faas, provisioned=faas.provisioned)
            # with a burst calendar, held from a launch delay before each of its windows
            # (capacity launched now is ready within ``headroom_lag_s``) to the window's end
            floor = hr.floor_between(snap.now_s, snap.now_s + self.headroom_lag_s)
            headroom["headroom_floor_now_rps"] = floor
            chosen = self._hold_floor(snap, chosen, floor)
        needed = dict(state.last_needed_s)
        ready = {i.id: self._ready_at(i) for i in snap.fleet}
        for c in chosen:
            if c.existing:
                # the hold runs from when it is needed, but not from before it is ready: one
                # planned while it boots and left out when it is up is not ended unused
                needed[c.key] = max(snap.now_s, ready.get(c.key, snap.now_s))
        for key in self._noise_band(snap, chosen, rate):
            needed[key] = snap.now_s
        launch = tuple(LaunchOrder(c.instance_type, c.market) for c in chosen if not c.existing)
        terminate = []
        live = {i.id for i in snap.fleet}
        for inst in snap.fleet:
            if inst.state == InstanceState.NOTICE:
                continue
            # the hold runs from when the instance is (expected) ready: one still booting
            # has paid for its launch and is not ended before it could serve
            last = needed.setdefault(inst.id, self._ready_at(inst))
            if snap.now_s - last >= self.hold_s:
                terminate.append(inst.id)
        needed = {k: v for k, v in needed.items() if k in live and k not in terminate}
        cap = sum(c.capacity_rps for c in chosen)
        send = not state.sent_plan or faas != state.faas
        decision = Decision(
            launch=launch, terminate=tuple(terminate),
            serving=ServingPlan(self.serving.types, faas, self.serving.spill) if send else None,
            info={"forecast_rps": float(f[0]), "planned_rps": cap,
                  "planned_instances": float(len(chosen)),
                  **(cover.info() if self.faas_tier else {}), **headroom,
                  **self._type_reasons(chosen)},
        )
        return decision, GreedyState(needed, True, faas, opts, opts_at, floor_mb, head_m)

    def _type_reasons(self, chosen: list[Candidate]) -> dict[str, float]:
        """Why each type is (or is not) in the plan, as numbers: per type and market, its
        cost per million requests when serving at its capacity under the SLO
        (``type:<t>:<market>:usd_per_m``), its launch delay (``type:<t>:launch_delay_s``:
        capacity that comes later is bridged by spill or faster types) and the instances of
        it the plan holds (``type:<t>:<market>:planned``). The greedy picks per run the
        lowest cost per request of what it would serve, launch overhead included."""
        out: dict[str, float] = {}
        held: dict[tuple[str, str], int] = {}
        for c in chosen:
            key = (c.instance_type, c.market.value)
            held[key] = held.get(key, 0) + 1
        cat = self.ctx.catalogue
        for t, ts in self.serving.types.items():
            out[f"type:{t}:launch_delay_s"] = cat.instance(t).launch_delay_s
            for m in self.ctx.markets:
                usd_per_req = self.ctx.price_usd_per_h(t, m) / 3600.0 / ts.capacity_rps
                out[f"type:{t}:{m.value}:usd_per_m"] = usd_per_req * 1e6
                out[f"type:{t}:{m.value}:planned"] = float(held.get((t, m.value), 0))
        return out

    def _noise_band(self, snap: Snapshot, chosen: list[Candidate], rate: float) -> list[str]:
        """Running instances the plan left out but that stay counted as needed (when it keeps
        any instance at all): up to
        ``noise_band_sigmas`` standard deviations of the 5-second Poisson rate, so a plan
        that dips with noise does not end instances the next one launches again (scale-in
        hysteresis); the cheapest per request are kept."""
        band = self.noise_band_sigmas * math.sqrt(max(rate, 0.0) * 5.0) / 5.0
        if band <= 0 or not chosen:  # hysteresis on a fleet's size, not on having one
            return []
        taken = {c.key for c in chosen if c.existing}
        spare = sorted((c for c in self._candidates(snap.fleet, snap.now_s)
                        if c.existing and c.key not in taken and c.ready_step == 0),
                       key=lambda c: c.price_usd_per_h / c.capacity_rps)
        kept, cap = [], 0.0
        for c in spare:
            if cap >= band:
                break
            kept.append(c.key)
            cap += c.capacity_rps
        return kept

    def _hold_floor(self, snap: Snapshot, chosen: list[Candidate], floor_rps: float
                    ) -> list[Candidate]:
        """``chosen`` plus the cheapest capacity that brings it to ``floor_rps`` (instance
        headroom for what FaaS cannot absorb; never left to spill)."""
        short = floor_rps - sum(c.capacity_rps for c in chosen)
        if short <= 0:
            return chosen
        taken = {c.key for c in chosen if c.existing}
        rest = [c for c in self._candidates(snap.fleet, snap.now_s)
                if not (c.existing and c.key in taken)]
        # a standing reserve, not an emergency: planned from when every type could be ready,
        # so a slow-booting cheap type is not bridged by short-lived fast-booting ones
        need = np.full(self.horizon_steps, short)
        need[: max((c.ready_step for c in rest if not c.existing), default=0)] = 0.0
        return chosen + greedy_plan(need, rest, self.interval_s, max_new=self._max_new(short))

    def _max_new(self, rate_rps: float) -> int:
        """New instances one plan may launch: enough to carry ``rate_rps`` on the type with
        the least capacity (``greedy_plan``'s default of 1,000 is ~3,500 req/s of
        Inception-v3 c5.xlarge: at x100 a burst onset needs several thousand at once, and
        a cap spreads the catch-up over as many decisions as it is short)."""
        caps = [ts.capacity_rps / self.headroom for ts in self.serving.types.values()
                if ts.capacity_rps > 0]
        if not caps or not math.isfinite(rate_rps):
            return 1000
        return max(1000, math.ceil(rate_rps / min(caps)) + 1)

    def _cover(self, snap: Snapshot, rate: float, faas: FaasConfig
               ) -> tuple[Cover, list[Candidate], FaasConfig]:
        """Cold-start cover for a plan with no instance: warm containers in the FaaS
        settings, or one instance (a running one when there is one) in the plan."""
        rate = max(rate, snap.recent_rate(self.interval_s))
        cover = cold_start_cover(self.ctx, faas, snap.counts, rate, self.cover_window_s,
                                 self.serving)
        if cover.kind == COVER_WARM:
            return cover, [], replace(faas, provisioned=cover.warm)
        if cover.kind == COVER_INSTANCE:
            cands = self._candidates(snap.fleet, snap.now_s)
            running = [c for c in cands if c.existing]
            if running:
                return cover, [min(running, key=lambda c: c.price_usd_per_h)], faas
            new = [c for c in cands if not c.existing and c.instance_type == cover.instance_type
                   and c.market == cover.market]
            return cover, new[:1], faas
        return cover, [], faas


@register_policy("mark-no-faas")
class MArkNoFaas(MArkGreedy):
    """MArk's shape: no FaaS tier in the plan (instances cover the forecast, FaaS only
    absorbs what they miss); otherwise the same as ``"mark"``."""

    name = "mark-no-faas"

    def __init__(self, ctx: PolicyContext, forecast: str | RateForecast = DEFAULT_FORECAST,
                 forecast_kw: dict[str, Any] | None = None, **kw: Any) -> None:
        kw.setdefault("faas_tier", False)
        super().__init__(ctx, forecast=forecast, forecast_kw=forecast_kw, **kw)
