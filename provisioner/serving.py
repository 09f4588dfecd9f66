"""The default serving plan of a context: batching, capacity and spill budget per instance
type, and FaaS settings, derived from the context alone (memoised in ``ctx.memo``)."""

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


def _plan(ctx: PolicyContext) -> ServingPlan:
    spill = SpillPolicy()
    types: dict[str, TypeServing] = {}
    for t in ctx.instance_types:
        cfg, cap = choose_batching(ctx.profile.of(t).table_s(), ctx.slo, ctx.budget_s)
        if cap <= 0:
            continue  # this type cannot meet the SLO at all
        types[t] = TypeServing(t, cfg, cap, spill.wait_budget_s(ctx.slo, ctx.network_overhead_ms))
    return ServingPlan(types, faas_config_for(ctx, 1.0), spill=True)
