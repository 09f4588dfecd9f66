"""The simulated world: a trace, a fleet on a virtual clock, one policy, the hot path.

:func:`simulate` replays per-second arrival counts (spread uniformly and seeded within each
second) against a provisioning policy. The event core (:mod:`mark.sim.core`) carries policy
ticks, instances becoming ready after their launch delay, spot interruption notices (2
minutes before the reclaim) and reclaims (a reclaimed instance loses what it holds, re-sent
as the front end re-sends it: :mod:`mark.sim.world`). Before any event changes the fleet,
the requests that arrived since the previous one are routed by
:class:`frontend.routing.WeightedRoundRobin` (one schedule per fleet, weights = capacities
in requests/s, tiled with numpy) and served by :func:`mark.core.queueing.serve_segment`
(Triton dynamic batching, spill test). Spilled requests are served at the end by
:func:`mark.core.queueing.serve_faas` (buffer, cold starts, concurrency limit, per-ms
billing), which is exact because FaaS does not feed back into the fleet. Billing follows
:mod:`mark.core.billing`. Instance service times vary around the profile's means (its
``service_cv``) while spill predicts with the means, as live.

The service is assumed running at t=0: what the policy's first decision launches is ready
at once. It does not see the future: its past before t=0 is a separate warm-up slice
(``history``) or nothing at all.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
from tqdm import tqdm

from mark.core.catalogue import Catalogue, load_catalogue
from mark.core.errors import ConfigError
from mark.core.profiles import Profile, load_profile
from mark.core.slo import Slo
from mark.sim.core import PRIO_CONTROL
from mark.sim.metrics import SimResult, summarise
from mark.sim.world import World, spread_arrivals
from provisioner import POLICIES, PolicyContext, ProvisioningPolicy, make_policy

__all__ = ["simulate"]


def simulate(
    counts: Any,
    policy: str | ProvisioningPolicy = "mark",
    *,
    profile: str | Profile = "minilm",
    catalogue: Catalogue | None = None,
    slo: Slo | None = None,
    spot: bool = False,
    scale: float = 1.0,
    seed: int = 0,
    spot_interruption_scale: float = 1.0,
    ml_premium: bool = True,
    types: tuple[str, ...] | None = None,
    policy_kw: dict[str, Any] | None = None,
    progress: bool = False,
    timeline: bool = True,
    name: str | None = None,
    history: Any = None,
    service_cv: float | None = None,
) -> SimResult:
    """Run ``policy`` over per-second ``counts`` (an array, or a Trace with ``.counts``).

    ``scale`` multiplies the counts (rounded stochastically, seeded). ``policy`` is a name
    registered in :mod:`provisioner` or a policy object (then ``policy_kw`` is ignored).
    ``spot_interruption_scale`` multiplies the catalogue's interruption rates (stress tests).
    ``ml_premium``: a policy with ``price_factor`` (SageMaker) is billed at ml.* prices.
    A policy named without ``policy_kw`` whose class has a ``search_space`` (hindsight) is
    run once per variant and the cheapest run meeting the SLO is returned.
    ``history``: per-second counts before the trace (an array or a Trace, scaled alike), the
    policy's past at its first decision and after (a planner that has been running); None:
    no past (its first decision at t=0 sees no requests).
    ``service_cv``: spread of actual instance service times around the profiled means (a
    lognormal per batch; None: the profile's ``service_cv``, 0: exactly the means). Spill
    predicts with the means, as the front end does, so a kept request can miss the SLO.
    """
    if isinstance(policy, str) and not policy_kw:
        space = getattr(POLICIES.get(policy), "search_space", ())
        if space:  # a hindsight policy: run its variants, keep the cheapest meeting the SLO
            t0 = time.perf_counter()
            kw: dict[str, Any] = {
                "profile": profile, "catalogue": catalogue, "slo": slo, "spot": spot,
                "scale": scale, "seed": seed, "ml_premium": ml_premium, "types": types,
                "spot_interruption_scale": spot_interruption_scale, "progress": progress,
                "timeline": timeline, "name": name, "history": history,
                "service_cv": service_cv,
            }
            target = (slo or Slo()).percentile / 100.0
            # only the best run so far is kept: each holds its per-request latencies (9 bytes
            # a request, ~1 GB per run at x20 for a day), five of them at once ran out of memory
            best: SimResult | None = None
            v: dict[str, Any] = {}
            usd: list[float] = []
            for variant in space:
                r = simulate(counts, policy, policy_kw=dict(variant), **kw)
                usd.append(round(r.cost_usd["total"], 6))
                if best is None or _rank(r, target) < _rank(best, target):
                    best, v = r, variant
                del r
            assert best is not None
            best.extra["variant"] = v
            best.extra["variants_usd"] = usd
            best.wall_seconds = time.perf_counter() - t0
            return best
    t0 = time.perf_counter()
    c = _counts(counts, scale, seed)
    prof = load_profile(profile) if isinstance(profile, str) else profile
    cv = prof.service_cv if service_cv is None else float(service_cv)
    if not 0 <= cv <= 10:
        raise ConfigError(f"service_cv must be in 0..10, got {cv}")
    if cv != prof.service_cv:  # the plan knows the spread the world has
        prof = replace(prof, service_cv=cv)
    ctx = PolicyContext(catalogue or load_catalogue(), prof, slo or Slo(), spot, types,
                        trace_counts=c)
    pol = make_policy(policy, ctx, **(policy_kw or {})) if isinstance(policy, str) else policy
    factor = float(getattr(pol, "price_factor", 1.0)) if ml_premium else 1.0
    arr = spread_arrivals(c, seed)
    hist = None if history is None else _counts(history, scale, seed + 13)
    world = World(c, arr, pol, ctx, spot_interruption_scale=spot_interruption_scale, seed=seed,
                  billing_factor=factor, history=hist, service_cv=cv)
    world.env.schedule(0.0, world.tick, PRIO_CONTROL)
    end = float(c.size)
    bar = _bar(progress, end)
    step = max(end / 200.0, pol.interval_s)
    t = 0.0
    while t < end:
        t = min(t + step, end)
        world.env.run(until_s=t - 1e-9 if t >= end else t)
        if bar is not None:
            bar.update(world.env.now - bar.n)
    world.advance(end)
    for inst in list(world.live.values()):
        world._end(inst, "end")
    if bar is not None:
        bar.close()
    label = name or str(getattr(pol, "name", policy))
    return summarise(world, label, time.perf_counter() - t0,
                     timeline)


def _rank(r: SimResult, target: float) -> tuple[bool, float]:
    """A hindsight run's rank (lower is better): meeting the SLO first, then the cheaper."""
    return r.slo_attainment < target, r.cost_usd["total"]


def _counts(counts: Any, scale: float, seed: int) -> np.ndarray:
    raw = getattr(counts, "counts", counts)
    step = int(getattr(counts, "step_s", 1))
    c = np.asarray(raw, dtype=np.float64)
    if c.ndim != 1 or c.size == 0 or not np.all(np.isfinite(c)) or c.min() < 0:
        raise ConfigError("trace counts must be a non-empty 1-D series of non-negative numbers "
                          "(requests per second)")
    if not scale > 0:
        raise ConfigError(f"scale must be > 0, got {scale}")
    if step != 1:  # spread coarser steps evenly over their seconds
        c = np.repeat(c / step, step)
    if scale != 1.0 or step != 1:
        c = c * scale
        base = np.floor(c)
        c = base + (np.random.default_rng(seed + 7).random(c.size) < c - base)
    return np.asarray(c, dtype=np.int64)


def _bar(progress: bool, total: float) -> Any:
    if not progress:
        return None
    return tqdm(total=total, unit="sim-s", unit_scale=True, desc="simulate", leave=False)
