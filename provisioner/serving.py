"""The default serving plan of a context: batching, capacity and spill budget per instance
type, and FaaS settings, derived from the context alone (memoised in ``ctx.memo``).

Per type the wait budget keeps back the spread margin of its batching settings
(:func:`provisioner.spill.spread_margin_s`, from the profile's ``service_cv``), and its
capacity is counted at that wait budget: what an instance sustains with requests admitted
only within it. With ``service_cv`` = 0 both are the SLO budget's. Every policy that plans
on instance capacities (mark, the hindsight plan, the baselines) takes them from here, so
their costs compare like with like.
"""

from __future__ import annotations

from provisioner.batching import choose_batching
from provisioner.context import PolicyContext
from provisioner.faas_batching import faas_config_for
from provisioner.records import ServingPlan, TypeServing
from provisioner.spill import SpillPolicy


def default_serving_plan(ctx: PolicyContext) -> ServingPlan:
    """Batching, capacity and spill budget per type; FaaS settings for the SLO."""
    plan = ctx.memo.get("serving")
    if plan is None:
        plan = ctx.memo["serving"] = _plan(ctx)
    assert isinstance(plan, ServingPlan)
    return plan


def _plan(ctx: PolicyContext, spill: SpillPolicy | None = None) -> ServingPlan:
    spill = spill or SpillPolicy()
    cv = ctx.profile.service_cv
    budget = spill.wait_budget_s(ctx.slo, ctx.network_overhead_ms)
    types: dict[str, TypeServing] = {}
    for t in ctx.instance_types:
        svc = ctx.profile.of(t).table_s()
        cfg, cap = choose_batching(svc, ctx.slo, budget, service_cv=cv,
                                   miss_share=spill.miss_share(ctx.slo))
        if cap <= 0:
            continue  # this type cannot meet the SLO at all
        margin = spill.spread_margin_s(svc, cfg, budget, ctx.slo, cv)
        types[t] = TypeServing(t, cfg, cap, spill.wait_budget_s(ctx.slo, ctx.network_overhead_ms,
                                                                 margin))
    return ServingPlan(types, faas_config_for(ctx, 1.0), spill=True)
