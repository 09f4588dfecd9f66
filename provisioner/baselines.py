"""Baselines mark is measured against, each a policy like any other.

- ``sagemaker``: SageMaker-style reactive target tracking on invocations per instance
  (Application Auto Scaling semantics: scale out when the last ``out_datapoints`` one-minute
  values exceed the target, scale in after ``in_datapoints`` below 90% of it, cooldowns),
  one instance type, minutes to provision (``provision_s``, 5 minutes: endpoint updates
  take several minutes, against 2 for a bare EC2 instance), optional 2x over-provisioning
  (target at half the capacity), no spill: what instances cannot serve queues. Billed at ml.* prices when
  ``ml_premium`` (the catalogue's SageMaker factor, ~1.4x EC2).
- ``lambda``: every request is one Lambda invocation (memory chosen cheapest under the SLO).
- ``batch``: BATCH, Lambda only with an adaptive buffer; (B, T, memory) re-chosen every
  interval for the rate of the last interval.
- ``mark-released``: MArk as released: a fixed fleet for 1.2x the all-time peak (the trace's
  when given, else the peak seen so far), packed greedily, no spill, prediction unused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from mark.core.instances import InstanceState, Market
from provisioner.base import register_policy
from provisioner.context import PolicyContext
from provisioner.faas_batching import choose_faas_config, faas_config_for
from provisioner.greedy import Candidate, greedy_plan
from provisioner.records import Decision, FaasConfig, LaunchOrder, ServingPlan, Snapshot
from provisioner.serving import default_serving_plan


@dataclass(frozen=True)
class TrackingState:
    last_out_s: float = -math.inf
    last_in_s: float = -math.inf
    sent_plan: bool = False


@register_policy("sagemaker")
class SageMakerTargetTracking:
    name = "sagemaker"
    instant_launch = False

    def __init__(
        self,
        ctx: PolicyContext,
        instance_type: str | None = None,
        overprovision: float = 2.0,
        interval_s: float = 60.0,
        out_datapoints: int = 3,
        in_datapoints: int = 15,
        out_cooldown_s: float = 300.0,
        in_cooldown_s: float = 300.0,
        ml_premium: bool = True,
        min_instances: int = 1,
        provision_s: float = 300.0,
    ) -> None:
        self.ctx = ctx
        plan = default_serving_plan(ctx)
        if instance_type is None:  # cheapest CPU type per request at full load, on demand
            cpu = [t for t in plan.types if not ctx.catalogue.instance(t).is_gpu] or list(plan.types)
            instance_type = min(
                cpu, key=lambda t: ctx.price_usd_per_h(t, Market.ON_DEMAND) / plan.types[t].capacity_rps
            )
        self.instance_type = instance_type
        self.capacity_rps = plan.types[instance_type].capacity_rps
        self.target_rps = self.capacity_rps / overprovision  # invocations/s per instance
        self.interval_s = interval_s
        self.out_n, self.in_n = out_datapoints, in_datapoints
        self.out_cd, self.in_cd = out_cooldown_s, in_cooldown_s
        self.price_factor = ctx.catalogue.sagemaker_premium if ml_premium else 1.0
        self.min_instances = min_instances
        self.provision_s = provision_s
        self.serving = ServingPlan({instance_type: plan.types[instance_type]}, plan.faas,
                                   spill=False)

    def order(self) -> LaunchOrder:
        return LaunchOrder(self.instance_type, Market.ON_DEMAND, self.provision_s)

    def initial_state(self) -> TrackingState:
        return TrackingState()

    def decide(self, snap: Snapshot, state: TrackingState) -> tuple[Decision, TrackingState]:
        now = snap.now_s
        live = [i for i in snap.fleet if i.state != InstanceState.NOTICE]
        n = len(live)
        ready = max(sum(1 for i in live if i.state == InstanceState.READY), 1)
        c = snap.counts.astype(np.float64)
        minute_rates = [c[max(0, c.size - 60 * (k + 1)) : c.size - 60 * k].mean()
                        if c.size > 60 * k else 0.0 for k in range(max(self.out_n, self.in_n))]
        per_inst = [r / ready for r in minute_rates]
        launch: tuple[LaunchOrder, ...] = ()
        terminate: tuple[str, ...] = ()
        desired = max(self.min_instances, math.ceil(minute_rates[0] / self.target_rps))
        if n < self.min_instances:
            launch = (self.order(),) * (self.min_instances - n)
        elif (all(p > self.target_rps for p in per_inst[: self.out_n])
              and now - state.last_out_s >= self.out_cd and desired > n):
            launch = (self.order(),) * (desired - n)
            state = replace(state, last_out_s=now)
        elif (all(p < 0.9 * self.target_rps for p in per_inst[: self.in_n])
              and now - state.last_in_s >= self.in_cd and now - state.last_out_s >= self.in_cd
              and desired < n):
            victims = sorted(live, key=lambda i: (i.state == InstanceState.READY, -i.launched_at_s))
            terminate = tuple(i.id for i in victims[: n - desired])
            state = replace(state, last_in_s=now)
        dec = Decision(launch, terminate, None if state.sent_plan else self.serving,
                       {"forecast_rps": minute_rates[0], "planned_rps": n * self.capacity_rps})
        return dec, replace(state, sent_plan=True)


@dataclass(frozen=True)
class FaasState:
    sent_plan: bool = False


@register_policy("lambda")
class LambdaOnly:
    """Every request is one invocation; memory is the cheapest meeting the SLO."""

    name = "lambda"
    instant_launch = False

    def __init__(self, ctx: PolicyContext, interval_s: float = 60.0) -> None:
        self.interval_s = interval_s
        faas = choose_faas_config(ctx, 1.0, batches=(1,), timeouts_s=(0.0,))
        self.serving = ServingPlan({}, faas, spill=True)

    def initial_state(self) -> FaasState:
        return FaasState()

    def decide(self, snap: Snapshot, state: FaasState) -> tuple[Decision, FaasState]:
        return Decision(serving=None if state.sent_plan else self.serving), FaasState(True)


@register_policy("batch")
class BatchAdaptive:
    """BATCH: Lambda with a buffer whose (B, T, memory) follow the last interval's rate."""

    name = "batch"
    instant_launch = False

    def __init__(self, ctx: PolicyContext, interval_s: float = 60.0) -> None:
        self.ctx = ctx
        self.interval_s = interval_s

    def initial_state(self) -> FaasState:
        return FaasState()

    def config_for(self, rate_rps: float) -> FaasConfig:
        return faas_config_for(self.ctx, rate_rps)

    def decide(self, snap: Snapshot, state: FaasState) -> tuple[Decision, FaasState]:
        rate = snap.recent_rate(self.interval_s)
        faas = self.config_for(rate)
        return Decision(serving=ServingPlan({}, faas, spill=True),
                        info={"forecast_rps": rate}), FaasState(True)


_CARRYING = frozenset({InstanceState.PENDING, InstanceState.READY})


@dataclass(frozen=True)
class ReleasedState:
    provisioned_for_rps: float = 0.0  # the target the fleet last covered (1.2x the peak)
    sent_plan: bool = False


@register_policy("mark-released")
class MArkReleased:
    """Fixed fleet for ``factor`` x the all-time peak, cheapest per request, no spill.

    At every decision the fleet (pending and ready instances) is topped up to the target:
    one plan launches at most ``greedy_plan``'s ``max_new`` new instances, so a larger
    fleet is reached over several decisions; reclaimed spot capacity is replaced alike."""

    name = "mark-released"
    instant_launch = False

    def __init__(self, ctx: PolicyContext, factor: float = 1.2, interval_s: float = 60.0,
                 peak_rps: float | None = None) -> None:
        self.ctx = ctx
        self.factor = factor
        self.interval_s = interval_s
        if peak_rps is None and ctx.trace_counts is not None:
            peak_rps = float(np.max(ctx.trace_counts)) if ctx.trace_counts.size else 0.0
        self.peak_rps = peak_rps
        base = default_serving_plan(ctx)
        self.serving = ServingPlan(base.types, base.faas, spill=False)

    def initial_state(self) -> ReleasedState:
        return ReleasedState()

    def capacity_rps(self, snap: Snapshot) -> float:
        """What the fleet carries once booted: ready and pending instances (not those under
        a spot notice, draining or unhealthy: they are leaving or not serving)."""
        return sum(self.serving.types[i.instance_type].capacity_rps for i in snap.fleet
                   if i.state in _CARRYING and i.instance_type in self.serving.types)

    def decide(self, snap: Snapshot, state: ReleasedState) -> tuple[Decision, ReleasedState]:
        seen = float(snap.counts.max()) if snap.counts.size else 0.0
        peak = max(self.peak_rps or 0.0, seen)
        target = self.factor * peak
        have = self.capacity_rps(snap)
        launch: tuple[LaunchOrder, ...] = ()
        if target > have * 1.0001:  # short of the target (never planned, capped, reclaimed)
            cands = [
                Candidate(f"{t}/{m}", t, m, ts.capacity_rps, self.ctx.price_usd_per_h(t, m),
                          0.0, 0, False)
                for t, ts in self.serving.types.items() for m in self.ctx.markets
            ]
            chosen = greedy_plan(np.array([target - have]), cands, self.interval_s)
            launch = tuple(LaunchOrder(c.instance_type, c.market) for c in chosen)
            have += sum(c.capacity_rps for c in chosen)
        dec = Decision(launch, (), None if state.sent_plan else self.serving,
                       {"forecast_rps": target, "planned_rps": target})
        return dec, ReleasedState(min(have, target), True)
