"""The hindsight plan (policy ``hindsight``, alias ``oracle``): a plan that knows the whole
trace and launches instantly. It is a strong plan, not a bound: the true lower bound on
cost is :func:`provisioner.bound.lower_bound_usd` (a relaxation with its argument), which
no plan, this one included, goes below.

Per step of ``step_s`` seconds it picks the cheapest mix of instance types and markets
(unbounded knapsack over capacities, no spot interruptions) together with the part of the
step's load left to FaaS: capacity X costs ``fleet_cost(X)`` for the step, and every
second's requests above X go to FaaS, batched in the manner of BATCH with settings chosen
for that overflow's rate (a few fixed-point rounds per step). The X that
minimises the sum is chosen, so the plan is never dearer than either pure IaaS or pure
FaaS for that step. Launches are instant (the world honours ``instant_launch``), and a
fleet kept from step to step meets the 60 s billing minimum by construction (steps >= 60 s).
``bound_usd`` is the plan's analytic cost estimate (reported as ``oracle_bound_usd``, a
name kept for the committed results): a model's estimate of what the plan costs, not a
bound; the simulator's bill of the plan may lie above or below it.

What the fleet must carry is the trace's moving-mean rate over ``smooth_s`` seconds: with
1 s every per-second excess is FaaS's; longer windows let instance queues absorb short
bursts (within the wait budget; the simulator's spill handles any excess). No single window
is cheapest on every trace, so the simulator runs the variants in ``search_space`` and keeps
the cheapest that meets the SLO. This is a strong hindsight baseline, not a proven optimum:
on smooth traces a good online policy can come within a fraction of a percent of it.

FaaS is a tier here as in the planner (:mod:`provisioner.faas_tier`): a step may have no
instance at all, and such a step gets the same cold-start cover the planner would give it
(warm containers or one instance, the cheaper, priced into the estimate). The analytic FaaS
price (BATCH's model of the buffer) is evaluated per capacity level for the overflow that
level leaves (a busier stream batches better); ``faas_weight`` < 1 leans on FaaS harder
when choosing the split (a sensitivity knob, not in the default search). The FaaS
settings of a step with no instance are chosen for that step's rate or, with
``faas_rate_lag`` = 1, for the previous step's (BATCH's rule; the settings are chosen by
an analytic model whose near-ties do not always fall the way the simulator bills them, so
both hindsight plans are tried).

``launch_lead=True`` gives the hindsight plan the same launch delays as every other
policy: each step's fleet is launched a type's launch delay ahead (billed while it boots),
so it is what a real cloud could run with perfect foresight; the default launches
instantly (cheaper than any real cloud allows, still not a bound).

FaaS's limits (``faas_limits=True``, the default) bind the hindsight plan as they bind the
planner (:mod:`provisioner.headroom`): a step's capacity leaves at most ``UTILISATION`` x
what FaaS absorbs at a burst onset (concurrency limit, scaling burst) to FaaS at the step's
peak second, so the plan's cost is not bought with throttling.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mark.core.errors import ConfigError
from mark.core.instances import InstanceState, Market
from provisioner.base import register_policy
from provisioner.context import PolicyContext
from provisioner.faas_batching import faas_config_for
from provisioner.faas_tier import COVER_INSTANCE, COVER_WARM, cold_start_cover
from provisioner.headroom import UTILISATION, faas_absorb_rps
from provisioner.records import Decision, FaasConfig, LaunchOrder, ServingPlan, Snapshot
from provisioner.serving import default_serving_plan

GRID = 600  # capacity levels evaluated per step
MAX_UNITS = 400_000  # size of the knapsack table at most


def knapsack_min_cost(
    caps: list[float], costs: list[float], max_cap: float, unit: float
) -> tuple[np.ndarray, np.ndarray]:
    """``best[x]``: min cost of a mix with capacity >= x*unit; ``pick[x]``: last item taken.

    Capacities are counted in whole units, rounded down (never more than an item serves);
    an item below one unit is left out."""
    n = math.ceil(max_cap / unit) + 1
    best = np.full(n, np.inf)
    pick = np.full(n, -1, dtype=np.int64)
    best[0] = 0.0
    units = [int(c // unit) for c in caps]
    for x in range(1, n):
        for j, (u, c) in enumerate(zip(units, costs, strict=True)):
            if u < 1:
                continue
            v = best[max(0, x - u)] + c
            if v < best[x]:
                best[x], pick[x] = v, j
    return best, pick


@dataclass(frozen=True)
class OracleState:
    sent_plan: bool = False
    faas: FaasConfig | None = None


@register_policy("oracle")  # the former name, kept as an alias
@register_policy("hindsight")
class Oracle:
    """The hindsight plan; see the module docstring.

    ``smooth_s``: the plan covers the trace's ``smooth_s``-second moving-mean rate (1: the
    raw per-second counts; longer: queues absorb sub-window bursts). ``search_space`` lists
    the variants the simulator tries when asked for ``"hindsight"`` (or ``"oracle"``) without
    options; it reports the cheapest run that meets the SLO: the best of several hindsight
    plans, not a proof of optimality (see :mod:`provisioner.bound` for a bound).
    """

    name = "hindsight"
    instant_launch = True
    search_space: tuple[dict[str, Any], ...] = (
        {"smooth_s": 1}, {"smooth_s": 10}, {"smooth_s": 60}, {"smooth_s": 300},
        {"smooth_s": 300, "faas_rate_lag": 1},
    )

    def __init__(self, ctx: PolicyContext, step_s: int = 60, smooth_s: int = 60,
                 faas_weight: float = 1.0, faas_rate_lag: int = 0,
                 faas_limits: bool = True, launch_lead: bool = False) -> None:
        if ctx.trace_counts is None:
            raise ConfigError("the hindsight plan needs the trace (PolicyContext.trace_counts)")
        if step_s < 60:
            raise ConfigError(f"hindsight step_s must be >= 60 (billing minimum), got {step_s}")
        self.ctx = ctx
        self.interval_s = float(step_s)
        # launch_lead: the same launch delays as any policy, each step's fleet launched a
        # launch delay ahead (a hindsight plan a real cloud could run); else instant
        self.instant_launch = not launch_lead
        self.lead_steps = {t: math.ceil(ctx.catalogue.instance(t).launch_delay_s / step_s)
                           for t in ctx.instance_types} if launch_lead else {}
        self.serving = default_serving_plan(ctx)
        self.plan: list[Counter[tuple[str, Market]]] = []
        self.bound_usd = 0.0
        counts = np.asarray(ctx.trace_counts, dtype=np.float64)
        items = [(t, m) for t in self.serving.types for m in ctx.markets]
        caps = [self.serving.types[t].capacity_rps for t, _ in items]
        costs = [ctx.price_usd_per_h(t, m) * step_s / 3600.0 for t, m in items]
        peak = float(counts.max()) if counts.size else 0.0
        # an eighth of the smallest capacity (counted within 12.5%, never over), coarser
        # only where the table would pass MAX_UNITS (a peak of tens of thousands of req/s)
        unit = max(min(caps) / 8.0, peak / MAX_UNITS, 1e-6) if caps else 1.0
        best, pick = knapsack_min_cost(caps, costs, peak + max(caps, default=0.0), unit)
        nsteps = math.ceil(counts.size / step_s)
        self.bound_usd = 0.0
        pad = np.zeros(nsteps * step_s)
        pad[: counts.size] = counts
        if smooth_s > 1:  # rate the fleet must carry: moving mean (queues absorb the rest)
            kern = np.ones(smooth_s) / smooth_s
            pad = np.convolve(pad, kern, mode="same")
        def faas_at(rate: float) -> FaasConfig:  # BATCH-style settings for a stream
            return faas_config_for(ctx, rate)

        self.faas_plan: list[FaasConfig] = []
        raw = np.asarray(ctx.trace_counts, dtype=np.float64)

        def faas_only(k: int, total: float) -> None:
            """Step ``k`` on FaaS alone, with the planner's cold-start cover."""
            j = max(k - faas_rate_lag, 0)
            cfg = faas_at(total / step_s if not faas_rate_lag
                          else float(raw[j * step_s : (j + 1) * step_s].mean()))
            cost = total * cfg.cost_per_request_usd
            fleet: Counter[tuple[str, Market]] = Counter()
            if total > 0:
                cover = cold_start_cover(ctx, cfg, raw[: (k + 1) * step_s], total / step_s,
                                         serving=self.serving)
                if cover.kind == COVER_WARM:
                    cfg = replace(cfg, provisioned=cover.warm)
                    cost += cover.usd_per_h * step_s / 3600.0
                elif cover.kind == COVER_INSTANCE and cover.instance_type and cover.market:
                    fleet[(cover.instance_type, cover.market)] = 1
                    cost = cover.usd_per_h * step_s / 3600.0  # the instance serves the step
            self.plan.append(fleet)
            self.faas_plan.append(cfg)
            self.bound_usd += cost

        for k in range(nsteps):
            c = np.sort(pad[k * step_s : (k + 1) * step_s])
            top = c[-1]
            if top <= 0 or not caps:
                faas_only(k, float(c.sum()))
                continue
            xs = np.unique(np.linspace(0, math.ceil(top / unit), GRID).astype(np.int64))
            csum = np.concatenate(([0.0], np.cumsum(c[::-1])))  # sums of the largest j counts
            lv = xs * unit
            j = c.size - np.searchsorted(c, lv, side="right")  # seconds above the level
            over = csum[j] - j * lv
            # FaaS cost per request depends on the overflow's rate (batching): iterate
            # FaaS priced per level for the overflow that level leaves (batching: a busier
            # stream is cheaper per request); 5%-wide rate bins, memoised
            keys = np.round(np.log(np.maximum(over / step_s, 1e-3)) * 20).astype(np.int64)
            uk = np.unique(keys)
            cpr_u = np.array([faas_at(math.exp(u / 20)).cost_per_request_usd for u in uk])
            cpr = cpr_u[np.searchsorted(uk, keys)]
            total = best[xs] + faas_weight * over * cpr
            if faas_limits:
                # FaaS's limits hold for hindsight too: a level whose overflow at the step's
                # peak second exceeds what FaaS absorbs at a burst onset is not a plan
                ab = np.array([UTILISATION * faas_absorb_rps(ctx, faas_at(math.exp(u / 20)))
                               for u in uk])[np.searchsorted(uk, keys)]
                total = np.where(top - lv <= ab, total, np.inf)
                if not np.isfinite(total).any():
                    total[-1] = 0.0
            i = int(np.argmin(total))
            if xs[i] == 0:
                faas_only(k, float(c.sum()))
                continue
            cfg = faas_at(math.exp(int(keys[i]) / 20))
            total = best[xs] + over * cpr
            self.faas_plan.append(cfg)
            self.bound_usd += float(total[i])
            fleet: Counter[tuple[str, Market]] = Counter()
            x = int(xs[i])
            while x > 0 and pick[x] >= 0:
                it = int(pick[x])
                fleet[items[it]] += 1
                x = max(0, x - max(1, int(caps[it] // unit)))
            self.plan.append(fleet)

    def initial_state(self) -> OracleState:
        return OracleState()

    def decide(self, snap: Snapshot, state: OracleState) -> tuple[Decision, OracleState]:
        k = min(int(snap.now_s // self.interval_s), len(self.plan) - 1) if self.plan else 0
        want = self.plan[k] if self.plan else Counter()
        if self.lead_steps and self.plan:  # hold now what a step within the delay needs
            want = Counter(want)
            for (t, m) in {key for p in self.plan[k : k + max(self.lead_steps.values()) + 1]
                           for key in p}:
                ahead = self.plan[k : k + self.lead_steps.get(t, 0) + 1]
                want[(t, m)] = max(p.get((t, m), 0) for p in ahead)
        have: dict[tuple[str, Market], list[str]] = {}
        for i in snap.fleet:
            if i.state != InstanceState.NOTICE:
                have.setdefault((i.instance_type, i.market), []).append(i.id)
        launch: list[LaunchOrder] = []
        terminate: list[str] = []
        for key in set(want) | set(have):
            ids = sorted(have.get(key, []))
            n = want.get(key, 0)
            if n > len(ids):
                launch += [LaunchOrder(*key)] * (n - len(ids))
            else:
                terminate += ids[n:]
        cap = sum(self.serving.types[t].capacity_rps * n for (t, _), n in want.items())
        faas = self.faas_plan[k] if self.faas_plan else self.serving.faas
        send = not state.sent_plan or faas != state.faas
        plan = ServingPlan(self.serving.types, faas, self.serving.spill) if send else None
        dec = Decision(tuple(launch), tuple(terminate), plan, {"planned_rps": cap})
        return dec, OracleState(True, faas)
