"""Instance headroom for what FaaS cannot absorb: its concurrency limit and scaling rate.

Spill is the planner's fallback at burst onsets, while new instances boot. But FaaS takes
at most ``min(concurrency limit, scaling burst)`` new environments at once (Lambda: 1,000
concurrent executions per account by default, and 1,000 new environments per 10 s per
function); a spill stream beyond what those environments serve builds a backlog that every
later spilled request waits behind, so *all* of it misses the SLO, not only the excess.

Two levers keep a burst onset within what FaaS absorbs, and the plan takes the cheaper mix:

- **instance headroom**: the fleet holds at least ``m`` x the *base* rate (the median of the
  last ``BASE_S`` seconds' 1-minute means: the level bursts start from; a burst in progress
  does not raise it, so the floor is not multiplied by the burst itself, and minute-to-minute
  noise does not move it, so it does not churn the fleet);
- **FaaS memory**: a larger function runs an inference faster (more vCPUs), so the same
  1,000 environments absorb more requests per second, at a higher price per request.

For each memory size at or above the cheapest FaaS settings' (each with its cheapest batching
for the spill stream), the history is replayed (:class:`Replay`) with a fleet of
``max(forecast, m x base)`` planned ``lag_s`` earlier (the forecast: the planner's quantile
of the previous two minutes' 5-second rates). The smallest ``m`` whose spill in the 5-second
windows where it exceeds ``UTILISATION`` x FaaS's rate stays within a share of the SLO's
slack (the rest is left to cold starts and prediction error) is the SLO's minimum; above it,
``m`` goes as far as the replayed cost (instances held x the cheapest type's price per
request-second, spill x that memory's FaaS price per request) keeps falling by at least 5%
(a GPU fleet is cheaper than the onset spill it saves; CPU instances usually are not). The
cheapest feasible (memory, ``m``) is planned; the memory in force is kept unless another
saves 5%. At small scale FaaS absorbs every burst, ``m`` is 0 (no floor) and the cheapest
FaaS settings stay. If no pair gets there, the plan holds ``max_multiplier`` with the
largest memory, accepts throttling and says so (``Decision.info``).

Pure functions of the observed counts and the context.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from provisioner.capacity import saturation_rps
from provisioner.context import PolicyContext
from provisioner.faas_batching import choose_faas_config
from provisioner.records import FaasConfig, TypeServing
from provisioner.serving import default_serving_plan

RESOLUTION_S = 5  # rates are judged on 5-second means (cheap; Poisson noise smoothed)
LEVEL_S = 60  # the plan's view of the current rate: the last minute's mean
BASE_S = 1800  # the base rate: median of this many seconds' 1-minute means
UTILISATION = 0.8  # FaaS is planned to run at most this busy at a burst onset


def faas_absorb_rps(ctx: PolicyContext, cfg: FaasConfig) -> float:
    """Requests/s FaaS takes at a burst onset under ``cfg``: the environments it can start at
    once (the concurrency limit, or the scaling burst if smaller), each serving full batches
    back to back at the warm service time."""
    spec, lp = ctx.catalogue.lambda_, ctx.profile.lambda_
    if lp is None:
        return 0.0
    envs = min(spec.concurrency_limit, spec.scaling_per_10s)
    svc = lp.service_s(cfg.memory_mb, max(cfg.batch, 1), spec.mb_per_vcpu, spec.max_vcpu)
    return envs * max(cfg.batch, 1) / (svc + cfg.timeout_s)


def base_rate(counts: np.ndarray, base_s: int = BASE_S) -> float:
    """Median of the 1-minute mean rates over the last ``base_s`` seconds (req/s)."""
    n = min(counts.size, base_s) // LEVEL_S
    if n == 0:
        return float(np.mean(counts)) if counts.size else 0.0
    w = np.asarray(counts[-n * LEVEL_S:], dtype=np.float64).reshape(n, LEVEL_S).mean(axis=1)
    return float(np.median(w))


@dataclass(frozen=True)
class Headroom:
    multiplier: float  # the fleet holds at least this x the base rate (0: no floor)
    base_rps: float  # the base rate now (the floor is multiplier x base_rps)
    unabsorbed_share: float  # of requests in the history, at that multiplier
    absorb_rps: float  # what FaaS takes at a burst onset under ``faas``
    accepted_throttling: bool  # no pair up to the maximum kept within the allowance
    faas: FaasConfig | None = None  # the FaaS settings planned with (None: unchanged)
    usd_per_h: float = 0.0  # replayed cost of the chosen pair, per hour of history

    @property
    def floor_rps(self) -> float:
        return self.multiplier * self.base_rps

    def info(self) -> dict[str, float]:
        return {"headroom_x": self.multiplier, "headroom_base_rps": self.base_rps,
                "headroom_floor_rps": self.floor_rps, "faas_absorb_rps": self.absorb_rps,
                "faas_memory_mb": float(self.faas.memory_mb) if self.faas else math.nan,
                "expected_unabsorbed_share": self.unabsorbed_share,
                "headroom_replay_usd_per_h": self.usd_per_h,
                "throttling_accepted": float(self.accepted_throttling)}


@dataclass(frozen=True)
class Replay:
    """5-second rates ``r`` and, aligned with them, what a plan made ``lag_s`` earlier saw:
    the last minute's rate ``lvl`` and the base rate ``base``."""

    r: np.ndarray
    lvl: np.ndarray
    base: np.ndarray
    burst_x: float = 1.0  # what the fleet serves in an overload, per request/s of capacity

    @classmethod
    def of(cls, counts: np.ndarray, lag_s: float, q: float | None = None,
           burst_x: float = 1.0) -> Replay:
        """``q``: the plan covers the ``q``-quantile of the last two minutes' 5-second rates
        (the planner's forecast); None: the last minute's mean. ``burst_x``: requests/s the
        fleet serves in an overload per request/s of its capacity under the SLO (its
        instances' back-to-back throughput, :func:`overload_x`; 1: the capacity only)."""
        c = np.asarray(counts, dtype=np.float64)
        n_min = c.size // LEVEL_S
        empty = cls(np.zeros(0), np.zeros(0), np.zeros(0), burst_x)
        if n_min < 2:
            return empty
        c = c[c.size - n_min * LEVEL_S:]
        r = c.reshape(-1, RESOLUTION_S).mean(axis=1)
        mins = c.reshape(n_min, LEVEL_S).mean(axis=1)
        seen = mins
        if q is not None:
            per = LEVEL_S // RESOLUTION_S
            two = np.concatenate((r[:per], r)).reshape(n_min + 1, per)
            pairs = np.concatenate((two[:-1], two[1:]), axis=1)
            seen = np.quantile(pairs, q, axis=1)
        k = max(1, BASE_S // LEVEL_S)
        pad = np.concatenate((np.full(k - 1, mins[0]), mins))
        med = np.median(np.lib.stride_tricks.sliding_window_view(pad, k), axis=1)
        # window i ends at e_i; its fleet was planned at the last minute boundary <= e_i - lag
        ends = (np.arange(r.size) + 1) * RESOLUTION_S
        j = np.floor((ends - lag_s) / LEVEL_S).astype(np.int64) - 1  # the minute it saw
        ok = j >= 0
        if not ok.any():
            return empty
        return cls(r[ok], seen[j[ok]], med[j[ok]], burst_x)

    def fleet(self, m: float) -> np.ndarray:
        return np.maximum(self.lvl, m * self.base)

    def share(self, absorb_rps: float, m: float) -> float:
        """Share of the requests spilled in windows where the spill exceeds ``UTILISATION`` x
        what FaaS takes (``absorb_rps``), with a floor of ``m`` x base (the fleet taking
        ``burst_x`` x its capacity before it spills)."""
        total = float(self.r.sum())
        if total <= 0:
            return 0.0
        spill = np.maximum(self.r - self.burst_x * self.fleet(m), 0.0)
        return float(spill[spill > UTILISATION * absorb_rps].sum() / total)

    def usd_per_h(self, m: float | np.ndarray, inst_usd_per_req_s: float,
                  faas_usd_per_req: float) -> np.ndarray:
        """Replayed cost per hour for each multiplier in ``m``: the fleet held, at the
        cheapest type's price per request/s of capacity, plus the spill at the FaaS price."""
        ms = np.atleast_1d(np.asarray(m, dtype=np.float64))
        if self.r.size == 0:
            return np.zeros(ms.size)
        fleet = np.maximum(self.lvl[None, :], ms[:, None] * self.base[None, :])
        spill = np.maximum(self.r[None, :] - self.burst_x * fleet, 0.0)
        per_s = (inst_usd_per_req_s * fleet.sum(axis=1)
                 + faas_usd_per_req * spill.sum(axis=1)) / self.r.size
        return per_s * 3600.0

    def cheapest_m(self, lo: float, hi: float, inst_usd_per_req_s: float,
                   faas_usd_per_req: float, min_saving: float = 0.05,
                   current: float | None = None) -> tuple[float, float]:
        """The multiplier in [lo, hi] (a coarse, then a fine grid) with the lowest replayed
        cost, and that cost per hour: more headroom than the SLO needs where instances are
        cheaper than the spill they save at burst onsets (a GPU fleet against FaaS). The
        replay is a model (a continuous fleet, the forecast as a quantile): a multiplier
        above ``lo`` is taken only if it saves at least ``min_saving`` of ``lo``'s cost.
        ``current``: the multiplier in force; once above ``lo`` (the cheapest saved
        ``min_saving`` when it was taken), the cheapest is kept while it saves anything on
        ``lo`` (hysteresis: a replay refreshed every few minutes moves the costs by a few
        per cent, and a floor that drops to ``lo`` and back ends and relaunches instances,
        or drops just before a burst: a GPU floor fell 4.1x -> 2.6x the base two minutes
        before one on the Twitter day at x20)."""
        args = (inst_usd_per_req_s, faas_usd_per_req)
        if current is not None and current > lo:
            min_saving = 0.0
        at_lo = float(self.usd_per_h(lo, *args)[0])
        coarse = np.linspace(lo, hi, 17)
        usd = self.usd_per_h(coarse, *args)
        i = int(np.argmin(usd))
        width = (hi - lo) / 16
        fine = np.linspace(max(lo, coarse[i] - width), min(hi, coarse[i] + width), 17)
        f_usd = self.usd_per_h(fine, *args)
        j = int(np.argmin(f_usd))
        m, best = (float(fine[j]), float(f_usd[j])) if f_usd[j] < usd[i] else (
            float(coarse[i]), float(usd[i]))
        if best >= (1.0 - min_saving) * at_lo:
            return lo, at_lo
        return m, best


def _smallest_m(rp: Replay, absorb: float, allowed: float, max_m: float) -> float | None:
    if rp.share(absorb, 0.0) <= allowed:
        return 0.0
    if rp.share(absorb, max_m) > allowed:
        return None
    lo, hi = 0.0, max_m
    while hi - lo > 0.02:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if rp.share(absorb, mid) <= allowed else (mid, hi)
    return hi


def memory_options(ctx: PolicyContext, cfg: FaasConfig, rate_rps: float) -> list[FaasConfig]:
    """``cfg`` and, per larger memory size, its cheapest settings for a stream of
    ``rate_rps`` (memoised per ~5% rate bin): what the plan may trade price for absorption."""
    key = ("faas-mem", cfg, round(math.log(max(rate_rps, 1e-3)) * 20))
    out = ctx.memo.get(key)
    if out is None:
        out = [cfg] + [choose_faas_config(ctx, math.exp(key[2] / 20), memories_mb=(m,))
                       for m in ctx.catalogue.lambda_.memory_mb if m > cfg.memory_mb]
        ctx.memo[key] = out
    assert isinstance(out, list)
    return out


def cheapest_instance(ctx: PolicyContext,
                      types: Mapping[str, TypeServing] | None = None) -> tuple[float, float]:
    """($ per second per request/s of capacity, capacity in requests/s) of the cheapest
    type and market per request under the SLO (``(inf, 0)`` without types); ``types``:
    the serving plan's (default: the context's default plan)."""
    return _cheapest(ctx, types)[:2]


def overload_x(ctx: PolicyContext, types: Mapping[str, TypeServing] | None = None) -> float:
    """What the cheapest type (:func:`cheapest_instance`) serves in an overload per request/s
    of its capacity under the SLO: its back-to-back throughput with full batches
    (:func:`provisioner.capacity.saturation_rps`) over that capacity, at least 1. At a burst
    onset the spill test keeps each instance's queue within its wait budget and sends only
    the rest to FaaS, so an Inception-v3 CPU fleet (one request at a time, 132 ms on a
    c5.xlarge against a 465 ms budget) takes ~2.2x its capacity before it spills; a GPU
    batching 16 at its capacity's edge, ~1x."""
    return _cheapest(ctx, types)[2]


def _cheapest(ctx: PolicyContext, types: Mapping[str, TypeServing] | None
              ) -> tuple[float, float, float]:
    plan = default_serving_plan(ctx).types if types is None else types
    best = (math.inf, 0.0, 1.0)
    for t, ts in plan.items():
        for m in ctx.markets:
            usd = ctx.price_usd_per_h(t, m) / 3600.0 / ts.capacity_rps
            if usd < best[0]:
                sat = saturation_rps(ctx.profile.of(t).table_s(), ts.batch)
                best = (usd, ts.capacity_rps, max(1.0, sat / ts.capacity_rps))
    return best


@dataclass(frozen=True)
class Option:
    """One FaaS memory size replayed: its settings, what they absorb at a burst onset, the
    multiplier chosen (None: none up to the maximum keeps the allowance), its replayed cost
    per hour and unabsorbed share."""

    faas: FaasConfig
    absorb_rps: float
    multiplier: float | None
    usd_per_h: float
    unabsorbed_share: float


def headroom_options(ctx: PolicyContext, cfg: FaasConfig, counts: np.ndarray, lag_s: float,
                     window_s: int, slack_use: float = 0.5, max_multiplier: float = 8.0,
                     spill_rps: float = 0.0, memories: bool = True,
                     inst: tuple[float, float] | None = None, q: float | None = None,
                     burst_x: float | None = None,
                     current: tuple[float, float] | None = None) -> tuple[Option, ...]:
    """Per FaaS memory size (``cfg``'s and larger ones, each with its cheapest batching for
    a spill stream of ``spill_rps``; only ``cfg`` with ``memories=False``): the cheapest
    multiplier whose unabsorbed share over the last ``window_s`` seconds is within
    ``slack_use`` x the SLO percentile's slack. ``inst``: (price of a request/s of instance
    capacity per second, capacity of one instance), default the cheapest type's; ``q``: the
    planner's forecast quantile (see :meth:`Replay.of`); ``burst_x``: what the fleet takes
    in an overload per request/s of capacity (default: :func:`overload_x`); ``current``:
    (FaaS memory in MB, multiplier) in force: that memory's option keeps the multiplier
    unless another saves 5% on it (:meth:`Replay.cheapest_m`). The expensive half of
    :func:`plan_headroom`: a policy may keep it for a few minutes (the history window moves
    slowly) and re-choose with :func:`choose_headroom` at every decision."""
    w = np.asarray(counts[-window_s:], dtype=np.float64)
    rp = Replay.of(w, lag_s, q, overload_x(ctx) if burst_x is None else burst_x)
    allowed = slack_use * (100.0 - ctx.slo.percentile) / 100.0
    opts = memory_options(ctx, cfg, max(spill_rps, 1.0)) if memories else [cfg]
    price = cheapest_instance(ctx)[0] if inst is None else inst[0]
    out = []
    for o in opts:
        o = replace(o, provisioned=cfg.provisioned)
        absorb = faas_absorb_rps(ctx, o)
        m = _smallest_m(rp, absorb, allowed, max_multiplier)
        usd = math.inf
        if m is not None and math.isfinite(price):
            m, usd = rp.cheapest_m(m, max_multiplier, price, o.cost_per_request_usd,
                                   current=current[1] if current is not None
                                   and current[0] == o.memory_mb else None)
        mm = max_multiplier if m is None else m
        out.append(Option(o, absorb, m, usd, rp.share(absorb, mm)))
    return tuple(out)


def choose_headroom(options: tuple[Option, ...], base_rps: float, need_rps: float = 0.0,
                    max_multiplier: float = 8.0, memory_mb: float | None = None,
                    min_saving: float = 0.05) -> Headroom:
    """The cheapest feasible option whose FaaS settings absorb ``need_rps`` (spill seen or
    planned now, a burst under way) at ``UTILISATION``; if none absorbs it, the largest;
    if none is feasible, the largest at the maximum multiplier, throttling accepted.
    ``memory_mb``: the memory size the FaaS settings have now; its option is kept unless
    another saves ``min_saving`` of its replayed cost (the options are priced for the spill
    stream of when they were replayed: near-ties are noise)."""
    fits = [o for o in options if UTILISATION * o.absorb_rps >= need_rps]
    pool = fits or [max(options, key=lambda o: o.absorb_rps)]
    ok = [o for o in pool if o.multiplier is not None]
    if ok:
        o = min(ok, key=lambda o: o.usd_per_h)  # first (cheapest settings) on ties
        same = [c for c in ok if c.faas.memory_mb == memory_mb]
        if same and o is not same[0] and o.usd_per_h > (1.0 - min_saving) * same[0].usd_per_h:
            o = same[0]
        assert o.multiplier is not None
        return Headroom(o.multiplier, base_rps, o.unabsorbed_share, o.absorb_rps, False,
                        o.faas, o.usd_per_h if math.isfinite(o.usd_per_h) else 0.0)
    o = max(pool, key=lambda o: o.absorb_rps)
    return Headroom(max_multiplier, base_rps, o.unabsorbed_share, o.absorb_rps, True, o.faas)


def plan_headroom(ctx: PolicyContext, cfg: FaasConfig, counts: np.ndarray, lag_s: float,
                  window_s: int, slack_use: float = 0.5, max_multiplier: float = 8.0,
                  spill_rps: float = 0.0, memories: bool = True,
                  inst: tuple[float, float] | None = None, need_rps: float = 0.0,
                  q: float | None = None, burst_x: float | None = None) -> Headroom:
    """:func:`headroom_options` then :func:`choose_headroom` at the base rate now (see the
    module docstring); ``need_rps``: spill seen or planned now, so the first burst, before
    the history knows any, is met by FaaS's fastest settings."""
    opts = headroom_options(ctx, cfg, counts, lag_s, window_s, slack_use, max_multiplier,
                            spill_rps, memories, inst, q, burst_x)
    return choose_headroom(opts, base_rate(np.asarray(counts[-window_s:])), need_rps,
                           max_multiplier)
