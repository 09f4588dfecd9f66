"""Results of a simulation: latencies, SLO attainment, cost by market, spill share, timeline.

``SimResult.to_json()`` is the ``mark simulate --json`` document::

    {"policy", "requests", "slo_attainment", "latency_ms": {"p50", "p98", "p99"},
     "cost_usd": {"total", "on_demand", "spot", "faas"}, "cost_per_million_usd",
     "spill_share", "wall_seconds", "lower_bound_usd", ...extra counters}

``lower_bound_usd`` is :func:`provisioner.bound.lower_bound_usd` of the counts simulated (the
least any plan meeting the SLO can cost; null where nothing serves within the bound).

Requests that found no instance under a policy without spill count as failed: infinite
latency, never within the SLO. So do those a spot reclaim lost that the front end could not
re-send (:mod:`mark.sim.world`); the counters ``reclaim_lost`` (requests reclaimed instances
held), ``reclaim_retried`` (re-sent to another instance), ``reclaim_spilled`` (sent to FaaS,
reaching it at the reclaim) and ``reclaim_failed`` (in ``failed`` too) say what became of them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mark.core import queueing
from mark.core.billing import instance_cost_usd
from mark.core.errors import ConfigError
from mark.core.instances import Market
from mark.sim.world import World
from provisioner.bound import lower_bound_usd
from provisioner.faas_tier import COVERS, REASONS

#: An instance the policy ends within this long of its launch is churn: it paid its boot and
#: billing minimum for little or no service (reported as instance-minutes billed).
CHURN_LIFE_S = 600.0


@dataclass
class SimResult:
    policy: str
    requests: int
    slo_attainment: float
    latency_ms: dict[str, float]
    cost_usd: dict[str, float]
    cost_per_million_usd: float
    spill_share: float
    wall_seconds: float
    latencies_s: np.ndarray = field(repr=False)
    spilled: np.ndarray = field(repr=False)
    slo_ms: float = 0.0
    timeline: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        def clean(x: float) -> float | None:
            return None if not math.isfinite(x) else round(x, 6)

        return {
            "policy": self.policy,
            "requests": self.requests,
            "slo_attainment": round(self.slo_attainment, 6),
            "latency_ms": {k: clean(v) for k, v in self.latency_ms.items()},
            "cost_usd": {k: round(v, 6) for k, v in self.cost_usd.items()},
            "cost_per_million_usd": clean(self.cost_per_million_usd),
            "spill_share": round(self.spill_share, 6),
            "wall_seconds": round(self.wall_seconds, 3),
            **self.extra,
        }


def _faas(world: World, at: np.ndarray) -> tuple[np.ndarray, float, dict[str, float]]:
    """Serve spilled requests reaching Lambda at ``at`` (sorted); returns their latencies
    from then, cost and counters."""
    lat = np.zeros(at.size)
    if at.size == 0 or not world.faas_changes:
        return lat, 0.0, {"faas_invocations": 0, "faas_cold_starts": 0, "faas_throttled": 0,
                          "faas_max_concurrency": 0}
    spec = world.cat.lambda_
    prof = world.ctx.profile.lambda_
    if prof is None:
        raise ConfigError(f"profile {world.ctx.profile.model!r} has no 'lambda' section")
    mems = sorted({int(m) for m in spec.memory_mb} | {f.memory_mb for _, f in world.faas_changes})
    mb = prof.points.max_batch
    svc = np.zeros((len(mems), mb + 1))
    for r, m in enumerate(mems):
        for b in range(1, mb + 1):
            svc[r, b] = prof.service_s(m, b, spec.mb_per_vcpu, spec.max_vcpu)
    step = world.policy.interval_s
    nsteps = max(1, math.ceil(world.counts.size / step))
    pb = np.ones(nsteps, dtype=np.int32)
    pt = np.zeros(nsteps)
    pm = np.zeros(nsteps, dtype=np.int32)
    pw = np.zeros(nsteps, dtype=np.int32)
    for t, f in world.faas_changes:
        k = min(int(t // step), nsteps - 1)
        pb[k:] = min(f.batch, mb)
        pt[k:] = f.timeout_s
        pm[k:] = mems.index(f.memory_mb)
        pw[k:] = f.provisioned
    stats = np.zeros(5)
    queueing.serve_faas(
        np.ascontiguousarray(at), float(step), pb, pt, pm, pw,
        np.array(mems, dtype=np.float64), svc, spec.cold_start_s, spec.keep_alive_s,
        spec.concurrency_limit, spec.scaling_per_s, float(spec.scaling_per_10s),
        spec.init_billed, spec.billing_granularity_ms, lat, stats,
    )
    cost = stats[0] / 1000.0 / 1024.0 * spec.usd_per_gb_s + stats[1] * spec.usd_per_request
    return lat, float(cost), {"faas_invocations": int(stats[1]), "faas_cold_starts": int(stats[2]),
                              "faas_throttled": int(stats[3]), "faas_max_concurrency": int(stats[4])}


def _faas_spilled(world: World, sp_idx: np.ndarray
                  ) -> tuple[np.ndarray, float, dict[str, float]]:
    """:func:`_faas` of the spilled requests ``sp_idx``, latencies from their arrivals: those
    a reclaim sent there reach FaaS at the reclaim (:mod:`mark.sim.world`), the rest at
    their arrival."""
    at = world.arr[sp_idx]
    if world.resent_idx and sp_idx.size:
        ri = np.concatenate(world.resent_idx)  # each index at most once
        rt = np.concatenate(world.resent_at)
        pos = np.searchsorted(sp_idx, ri)
        ok = pos < sp_idx.size
        ok[ok] = sp_idx[pos[ok]] == ri[ok]
        if ok.any():
            late = at.copy()
            late[pos[ok]] = rt[ok]
            order = np.argsort(late, kind="stable")
            lat_sorted, cost, stats = _faas(world, late[order])
            lat = np.empty_like(lat_sorted)
            lat[order] = lat_sorted
            return lat + (late - at), cost, stats
    return _faas(world, at)


def provisioned_cost_usd(world: World) -> float:
    """Provisioned concurrency held over the run (GB-s held x the catalogue's price),
    from the FaaS settings in force per policy step; billed whether or not requests come."""
    if not world.faas_changes:
        return 0.0
    step = world.policy.interval_s
    end = float(world.counts.size)
    nsteps = max(1, math.ceil(end / step))
    gb_warm = np.zeros(nsteps)
    for t, f in world.faas_changes:
        k = min(int(t // step), nsteps - 1)
        gb_warm[k:] = f.provisioned * f.memory_mb / 1024.0
    dur = np.minimum(np.arange(1, nsteps + 1) * step, end) - np.arange(nsteps) * step
    return float((gb_warm * dur).sum() * world.cat.lambda_.provisioned_usd_per_gb_s)


def summarise(world: World, name: str, wall_s_so_far: float, timeline: bool) -> SimResult:
    t0 = time.perf_counter()
    arr = world.arr
    n = arr.size
    bid = world.out_bid
    lat = np.empty(n)
    iaas = bid >= 0
    lat[iaas] = world.batch_done[bid[iaas]] - arr[iaas]
    spilled = ~iaas & ~world.failed
    sp_idx = np.flatnonzero(spilled)
    flat, faas_cost, faas_stats = _faas_spilled(world, sp_idx)
    prov = provisioned_cost_usd(world)
    faas_cost += prov
    lat[sp_idx] = flat
    lat[world.failed] = np.inf
    slo = world.ctx.slo
    att = float(np.mean(lat <= slo.latency_s)) if n else 1.0
    if n:
        # failed requests are infinitely late: no interpolation across them (inf - inf)
        q = np.percentile(lat, [50, 98, 99],
                          method="higher" if world.failed.any() else "linear")
        lat_ms = {"p50": q[0] * 1000, "p98": q[1] * 1000, "p99": q[2] * 1000}
    else:
        lat_ms = {"p50": 0.0, "p98": 0.0, "p99": 0.0}
    od = spot = 0.0
    churned = churn_s = 0.0
    for inst in world.insts:
        price = world.ctx.price_usd_per_h(inst.instance_type, inst.market) * world.billing_factor
        assert inst.ended_at_s is not None, f"{inst.id} still running at the end"
        c = instance_cost_usd(price, inst.ended_at_s - inst.launched_at_s,
                              world.cat.billing_minimum_s, world.cat.billing_granularity_s)
        if inst.market == Market.SPOT:
            spot += c
        else:
            od += c
        life = inst.ended_at_s - inst.launched_at_s
        if inst.ended_by == "policy" and life < CHURN_LIFE_S:
            churned += 1
            churn_s += max(life, world.cat.billing_minimum_s)
    total = od + spot + faas_cost
    extra: dict[str, Any] = {
        "launches": world.n_launches,
        "terminations": sum(1 for i in world.insts if i.ended_by == "policy"),
        "churned_instances": int(churned),
        "churn_instance_minutes": round(churn_s / 60.0, 2),
        "spot_interruptions": world.n_interruptions,
        "failed": int(world.failed.sum()),
        **world.reclaim,
        "slo_ms": slo.latency_ms,
        "service_cv": world.service_cv,
        "slo_percentile": slo.percentile,
        "billing_factor": world.billing_factor,
        **faas_stats,
    }
    if prov > 0:
        extra["faas_provisioned_usd"] = round(prov, 6)
    acc = [a for a in world.timeline.get("throttling_accepted", []) if math.isfinite(a)]
    if acc:  # the plan's own word on throttling (Decision.info), share of its decisions
        extra["throttling_accepted_share"] = round(sum(acc) / len(acc), 6)
    for k in ("expected_throttled_share", "expected_unabsorbed_share"):
        exp = [a for a in world.timeline.get(k, []) if math.isfinite(a)]
        if exp:  # ... and how much it expected (share of requests, mean over its decisions)
            extra[k] = round(sum(exp) / len(exp), 8)
    tier = faas_tier_summary(world)
    if tier:
        extra["faas_tier"] = tier
    ctx = world.ctx
    lb = lower_bound_usd(world.counts, ctx.catalogue, ctx.profile, slo, spot=ctx.spot,
                         types=ctx.types, service_cv=world.service_cv)
    extra["lower_bound_usd"] = math.floor(lb * 1e6) / 1e6 if math.isfinite(lb) else None
    est = getattr(world.policy, "bound_usd", None)  # the hindsight plan's own estimate
    if est is not None and math.isfinite(est):
        extra["oracle_bound_usd"] = round(float(est), 6)
    tl: dict[str, np.ndarray] = {}
    if timeline:
        tl = _timeline(world, lat, spilled)
    return SimResult(
        policy=name, requests=n, slo_attainment=att, latency_ms=lat_ms,
        cost_usd={"total": total, "on_demand": od, "spot": spot, "faas": faas_cost},
        cost_per_million_usd=total / n * 1e6 if n else math.nan,
        spill_share=float(spilled.mean()) if n else 0.0,
        wall_seconds=wall_s_so_far + (time.perf_counter() - t0),
        latencies_s=lat, spilled=spilled, slo_ms=slo.latency_ms, timeline=tl, extra=extra,
    )


def faas_tier_summary(world: World) -> dict[str, Any]:
    """The FaaS tier's record (policies that plan FaaS as a tier report ``faas_cover`` in
    ``Decision.info``): share of time with no instance (scale to zero), how often each
    cold-start cover was chosen at the policy's decisions, and the prevailing reason."""
    tl = world.timeline
    covers = [c for c in tl.get("faas_cover", []) if math.isfinite(c)]
    if not covers:
        return {}
    end = float(world.counts.size)
    iv = sorted((i.launched_at_s, min(i.ended_at_s if i.ended_at_s is not None else end, end))
                for i in world.insts)
    busy = 0.0
    cur_a = cur_b = -1.0
    for a, b in iv:  # union of instance lifetimes
        if a > cur_b:
            busy += max(cur_b - cur_a, 0.0)
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    busy += max(cur_b - cur_a, 0.0)
    reasons = [r for r in tl.get("faas_cover_reason", []) if math.isfinite(r)]
    n = len(covers)
    share = {COVERS[k]: round(sum(1 for c in covers if c == k) / n, 6) for k in COVERS}
    rshare = {REASONS[k]: round(sum(1 for r in reasons if r == k) / max(len(reasons), 1), 6)
              for k in REASONS}
    chosen = max((k for k in COVERS if k != 0.0), key=lambda k: share[COVERS[k]])
    used = share[COVERS[chosen]] > 0
    why = [r for c, r in zip(covers, reasons, strict=False) if c == chosen]
    return {
        "zero_instance_share": round(max(0.0, 1.0 - busy / end) if end else 0.0, 6),
        "cover_share": share,
        "cover": COVERS[chosen] if used else "none",
        "cover_reason": REASONS[max(set(why), key=why.count)] if used and why else
        (max(rshare, key=lambda k: rshare[k]) if reasons else ""),
        "reason_share": rshare,
    }


def _timeline(world: World, lat: np.ndarray, spilled: np.ndarray) -> dict[str, np.ndarray]:
    step = world.policy.interval_s
    nsteps = max(1, math.ceil(world.counts.size / step))
    edges = np.searchsorted(world.arr, np.arange(nsteps + 1) * step)
    p99 = np.full(nsteps, np.nan)
    for k in range(nsteps):
        seg = lat[edges[k] : edges[k + 1]]
        if seg.size:
            p99[k] = np.percentile(seg, 99) * 1000
    per = np.diff(edges).astype(np.float64) / step
    bins = np.minimum((world.arr // step).astype(np.int64), nsteps - 1)
    sp = np.bincount(bins[spilled], minlength=nsteps)[:nsteps] / step
    tl = {k: np.asarray(v) for k, v in world.timeline.items()}
    return {"step_t_s": np.arange(nsteps) * step, "rate_rps": per, "faas_rps": sp,
            "p99_ms": p99, **tl}
