"""The simulated world: a fleet of :class:`~mark.core.instances.Instance` records on a
virtual clock, one policy, and the hot path.

Before any event changes the fleet, the requests that arrived since the previous one are
routed as :class:`frontend.routing.WeightedRoundRobin` routes them (its stride scheduling,
computed at once: one schedule per fleet, weights = capacities in requests/s, tiled with
numpy) and served by
:func:`mark.core.queueing.serve_segment` (Triton dynamic batching, spill test). The event
core (:mod:`mark.sim.core`) carries policy ticks, instances becoming ready after their launch
delay, spot interruption notices (2 minutes before the reclaim) and reclaims.

A policy's termination drains: the instance finishes what it holds. A reclaim kills it, as
live: every request it holds then (assigned to it, completing after the reclaim) is lost to
it, and the front end re-sends it at the reclaim time as its ``infer`` loop does after a
connection error: once, to the instance WRR picks next among those left, through that
instance's spill test (the retry is admitted as a request arriving then); with no instance
left it goes to FaaS where the plan spills and fails otherwise. A request lost a second
time (its retry's instance reclaimed too) fails: the front end retries only once. A request
spilled so reaches FaaS at the reclaim time (its latency counts from its arrival). Counters:
``reclaim_lost``, ``reclaim_retried``, ``reclaim_spilled``, ``reclaim_failed``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mark.core import queueing
from mark.core.catalogue import Catalogue
from mark.core.instances import Instance, InstanceState, Market
from mark.core.workload.arrivals import spread_trace
from mark.core.workload.traces import Trace
from mark.sim.core import PRIO_CONTROL, PRIO_NORMAL, PRIO_URGENT, Environment
from provisioner import Decision, PolicyContext, ProvisioningPolicy, ServingPlan, Snapshot

log = logging.getLogger(__name__)

PATTERN_LEN = 1024  # WRR picks (over types) per routing pattern; tiled over a segment


def spread_arrivals(counts: np.ndarray, seed: int) -> np.ndarray:
    """Arrival times (s, sorted float64): ``counts[s]`` requests uniform in [s, s+1).

    The workload layer's :func:`~mark.core.workload.arrivals.spread_trace` (vectorised: one
    uniform per request, one sort).
    """
    return spread_trace(Trace(np.asarray(counts, dtype=np.int64), 1), seed)


@dataclass(eq=False)
class SimInstance(Instance):
    """An instance of the virtual fleet: the one record plus its row in the per-slot arrays
    and its pending events (ready, notice, reclaim)."""

    slot: int = -1
    events: list[Any] = field(default_factory=list)
    ended_by: str = ""  # "policy" (terminated), "reclaim" (spot) or "end" (of the run)


class World:
    """Mutable simulation state; executes decisions and serves requests segment by segment."""

    def __init__(self, counts: np.ndarray, arr: np.ndarray, policy: ProvisioningPolicy,
                 ctx: PolicyContext, *, spot_interruption_scale: float, seed: int,
                 billing_factor: float, history: np.ndarray | None = None,
                 service_cv: float = 0.0) -> None:
        self.counts = counts
        # what the policy sees as its past before t=0 (a warm-up slice, or none: never the
        # trace itself, which is its future)
        self.history = None if history is None else np.asarray(history, dtype=np.int64)
        self._seen = (counts if self.history is None
                      else np.concatenate((self.history, counts)))
        self.arr = arr
        self.policy = policy
        self.ctx = ctx
        self.cat: Catalogue = ctx.catalogue
        self.env = Environment()
        self.rng = np.random.default_rng(seed + 1)
        self.spot_scale = spot_interruption_scale
        self.billing_factor = billing_factor
        # actual service time = profiled mean x lognormal(mean 1, this log-sd) per batch
        self.service_cv = service_cv
        self.sigma = queueing.log_sd(service_cv)
        self.seed = seed
        n = arr.size
        self.out_bid = np.full(n, -1, dtype=np.int64)
        self.failed = np.zeros(n, dtype=np.bool_)
        self.batch_done = np.zeros(n + 1)
        self.batch_size = np.zeros(n + 1, dtype=np.int32)
        self.batch_slot = np.zeros(n + 1, dtype=np.int32)  # slot of each batch (reclaims)
        self.next_bid = 0
        self.cursor = 0
        self.maxb = max(p.max_batch for p in ctx.profile.instances.values())
        self._alloc(16)
        self.insts: list[SimInstance] = []
        self.live: dict[str, SimInstance] = {}
        self._serving: dict[str, set[int]] = {}  # type -> slots of its serving instances
        self._pass: dict[str, float] = {}  # WRR pass per type (see _stride_picks)
        self.pattern = np.empty(0, dtype=np.int32)  # WRR over types: codes into _groups
        self.pat_pos = 0
        self._groups: list[tuple[str, np.ndarray]] = []  # (type, its serving slots)
        self._rr: dict[str, int] = {}  # round-robin position within each type
        self._weights: dict[str, tuple[int, ...]] = {}
        self.plan: ServingPlan | None = None
        self.faas_changes: list[tuple[float, Any]] = []
        self.state = policy.initial_state()
        self.timeline: dict[str, list[float]] = {
            k: [] for k in ("t_s", "forecast_rps", "cap_on_demand_rps", "cap_spot_rps",
                            "faas_cover", "faas_cover_reason", "throttling_accepted",
                            "expected_throttled_share", "expected_unabsorbed_share")
        }
        self.n_interruptions = 0
        self.n_launches = 0
        # requests re-sent after a reclaim: their indices and the time they were re-sent
        # (their arrival at FaaS if they spill); a re-sent one lost again fails
        self.resent_idx: list[np.ndarray] = []
        self.resent_at: list[np.ndarray] = []
        self._in_retry = np.empty(0, dtype=np.int64)  # re-sent, maybe still held somewhere
        self.reclaim = {"reclaim_lost": 0, "reclaim_retried": 0, "reclaim_spilled": 0,
                        "reclaim_failed": 0}

    # ---- per-slot arrays -------------------------------------------------------------
    svc: np.ndarray
    mb: np.ndarray
    delay: np.ndarray
    budget: np.ndarray
    fstate: np.ndarray
    istate: np.ndarray
    busy: np.ndarray
    ring_t: np.ndarray  # outstanding batches per slot (service-time spread only)
    ring_d: np.ndarray
    ring_p: np.ndarray

    def _alloc(self, cap: int) -> None:
        old = getattr(self, "svc", None)
        svc = np.zeros((cap, self.maxb + 1))
        mb = np.ones(cap, dtype=np.int32)
        delay = np.zeros(cap)
        budget = np.full(cap, np.inf)
        fstate = np.zeros((cap, queueing.N_FSTATE))
        istate = np.zeros((cap, queueing.N_ISTATE), dtype=np.int64)
        busy = np.zeros(cap)
        ring = queueing.RING if self.sigma > 0 else 1
        ring_t = np.zeros((cap, ring))
        ring_d = np.zeros((cap, ring))
        ring_p = np.zeros((cap, 2), dtype=np.int64)
        if old is not None:
            k = old.shape[0]
            svc[:k], mb[:k], delay[:k], budget[:k] = old, self.mb, self.delay, self.budget
            fstate[:k], istate[:k], busy[:k] = self.fstate, self.istate, self.busy
            ring_t[:k], ring_d[:k], ring_p[:k] = self.ring_t, self.ring_d, self.ring_p
        self.svc, self.mb, self.delay, self.budget = svc, mb, delay, budget
        self.fstate, self.istate, self.busy = fstate, istate, busy
        self.ring_t, self.ring_d, self.ring_p = ring_t, ring_d, ring_p

    # ---- the hot path ----------------------------------------------------------------
    def advance(self, until_s: float) -> None:
        """Serve every request that arrived before ``until_s`` with the current fleet."""
        i1 = int(np.searchsorted(self.arr, until_s, side="left"))
        i0 = self.cursor
        if i1 <= i0:
            return
        assign = self._route(i1 - i0)
        if assign is None:
            assign = np.full(i1 - i0, -1, dtype=np.int32)
            if self.plan is None or not self.plan.spill:
                self.failed[i0:i1] = True
        self._serve(self.arr[i0:i1], assign, self.out_bid[i0:i1])
        self.cursor = i1

    def _route(self, n: int) -> np.ndarray | None:
        """The slots of the next ``n`` requests (None: no instance serves)."""
        if not self.pattern.size:
            return None
        # WRR over types (the pattern, tiled), round robin over each type's instances
        # (every one of them, however many: a pattern of slots would reach only the
        # first PATTERN_LEN of a fleet of thousands)
        idx = (np.arange(n) + self.pat_pos) % self.pattern.size
        codes = self.pattern[idx]
        self.pat_pos = (self.pat_pos + n) % self.pattern.size
        assign = np.empty(n, dtype=np.int32)
        for code, (t, slots) in enumerate(self._groups):
            pos = np.flatnonzero(codes == code) if len(self._groups) > 1 else None
            k = n if pos is None else pos.size
            if k == 0:
                continue
            at = self._rr.get(t, 0) % slots.size
            pick = slots[(at + np.arange(k)) % slots.size]
            if pos is None:
                assign[:] = pick
            else:
                assign[pos] = pick
            self._rr[t] = (at + k) % slots.size
        return assign

    def _serve(self, arr: np.ndarray, assign: np.ndarray, out_bid: np.ndarray) -> None:
        args = (arr, assign, self.svc, self.mb, self.delay, self.budget, self.fstate,
                self.istate, self.batch_done, self.batch_size, self.next_bid, out_bid,
                self.busy)
        if self.sigma > 0:  # actual service times vary; spill predicts with the means
            self.next_bid = queueing.serve_segment_spread(
                *args, self.sigma, self.seed, self.ring_t, self.ring_d, self.ring_p,
                self.batch_slot)
        else:
            self.next_bid = queueing.serve_segment(*args, self.batch_slot)

    # ---- reclaims --------------------------------------------------------------------
    def _held(self, slot: int, t: float, since_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Indices (sorted) of the requests instance ``slot`` holds at ``t`` (served by it:
        its batches, ``batch_slot``; completing after ``t``; it serves since ``since_s``),
        and those of them that are retries already.

        Scans back from the last request routed, in growing chunks, until one it served
        completes by ``t``: it serves in arrival order, so every earlier one did too. Retries
        (re-sent at an earlier reclaim, out of that order) are checked apart."""
        lo = int(np.searchsorted(self.arr, since_s, side="left"))
        hi = self.cursor
        parts: list[np.ndarray] = []
        again = np.empty(0, dtype=np.int64)
        step = 4096
        while hi > lo:
            a = max(lo, hi - step)
            ob = self.out_bid[a:hi]
            pos = np.flatnonzero(ob >= 0)
            b = ob[pos]
            on = self.batch_slot[b] == slot
            late = self.batch_done[b[on]] > t
            parts.append(a + pos[on][late])
            if not late.all():
                break
            hi = a
            step *= 2
        if self._in_retry.size:
            ob = self.out_bid[self._in_retry]
            b = np.maximum(ob, 0)
            done = self.batch_done[b]
            mine = (ob >= 0) & (self.batch_slot[b] == slot) & (done > t)
            again = self._in_retry[mine]
            parts.append(again)
            # keep those still out somewhere (an open batch has no completion yet: 0)
            self._in_retry = self._in_retry[(ob >= 0) & ~mine & ((done == 0.0) | (done > t))]
        if not parts:
            return np.empty(0, dtype=np.int64), again
        return np.unique(np.concatenate(parts)), again

    def _reclaimed(self, inst: SimInstance, t: float) -> None:
        """``inst`` was reclaimed at ``t`` (already out of the routing): what it held is
        lost to it and re-sent as the front end re-sends it (see the module docstring)."""
        held, twice = self._held(inst.slot, t, inst.launched_at_s)
        if held.size == 0:
            return
        rc = self.reclaim
        rc["reclaim_lost"] += held.size
        self.out_bid[held] = -1
        if twice.size:  # retried once already: the front end gives up (502), FaaS or not
            self.failed[twice] = True
            rc["reclaim_failed"] += twice.size
            held = held[~np.isin(held, twice)]
            if held.size == 0:
                return
        m = held.size
        self.resent_idx.append(held)
        self.resent_at.append(np.full(m, t))
        assign = self._route(m)
        if assign is None:  # nowhere to retry: FaaS where the plan spills, else it fails
            if self.plan is not None and self.plan.spill:
                rc["reclaim_spilled"] += m
            else:
                self.failed[held] = True
                rc["reclaim_failed"] += m
            return
        need = self.next_bid + m + (self.arr.size - self.cursor) + 1
        if need > self.batch_done.size:  # every retry may open a batch of its own
            grow = need - self.batch_done.size
            self.batch_done = np.concatenate((self.batch_done, np.zeros(grow)))
            self.batch_size = np.concatenate((self.batch_size, np.zeros(grow, np.int32)))
            self.batch_slot = np.concatenate((self.batch_slot, np.zeros(grow, np.int32)))
        ob = np.full(m, -1, dtype=np.int64)
        self._serve(np.full(m, t), assign, ob)  # arriving now, through the spill test
        self.out_bid[held] = ob
        kept = int((ob >= 0).sum())
        rc["reclaim_retried"] += kept
        rc["reclaim_spilled"] += m - kept  # the spill test sent them on to FaaS
        self._in_retry = np.concatenate((self._in_retry, held[ob >= 0]))

    def _stride_picks(self, weights: dict[str, float], n: int) -> np.ndarray:
        """The next ``n`` picks of :class:`~frontend.routing.WeightedRoundRobin` over
        ``weights`` (stride scheduling: the target with the lowest pass is picked and its pass
        advances by 1/weight; ties to the first in sorted order; targets kept keep their
        pass), computed at once: target i's k-th pick comes at pass ``p_i + k / w_i``."""
        order = sorted(weights)
        base = min((self._pass[t] for t in order if t in self._pass), default=0.0)
        total = sum(weights.values())
        extra = 4
        while True:
            vals, idx = [], []
            for i, t in enumerate(order):
                k = min(n, math.ceil(n * weights[t] / total) + extra) + 1
                steps = np.full(k, 1.0 / weights[t])
                steps[0] = self._pass.get(t, base)
                vals.append(np.cumsum(steps))  # the same additions, so the same roundings
                idx.append(np.full(k, i))
            v, ix = np.concatenate(vals), np.concatenate(idx)
            picked = ix[np.lexsort((ix, v))[:n]]
            counts = np.bincount(picked, minlength=len(order))
            if all(counts[i] < vals[i].size for i in range(len(order))):
                break
            extra = n  # a carried-over pass far off its share: take every pick possible
        self._pass = {t: float(vals[i][counts[i]]) for i, t in enumerate(order)}
        return np.array(order, dtype=object)[picked]

    def _reroute(self) -> None:
        """One WRR pattern per fleet change, tiled over the requests by :meth:`advance`.

        Instances of one type have equal weights, so the WRR
        (:meth:`_stride_picks`) runs over groups keyed by type (weight
        = capacity x instances, requests/s) and :meth:`advance` hands each group's picks
        round robin over all its instances: the same shares as WRR over instances, at
        O(pattern x types) instead of O(pattern x instances) per change.
        """
        assert self.plan is not None or not any(self._serving.values())
        # the serving slots per type are kept as instances change state (a fleet of
        # thousands is not scanned at every change); launch order = slot order
        members: dict[str, list[int]] = {}
        if self.plan is not None:
            members = {t: sorted(v) for t, v in self._serving.items() if v}
        key = {t: tuple(v) for t, v in members.items()}
        if key == self._weights:
            return  # same serving set: keep the pattern and its position
        self._weights = key
        if not members:
            self.pattern = np.empty(0, dtype=np.int32)
            self._groups = []
            return
        assert self.plan is not None
        self._groups = [(t, np.array(v, dtype=np.int32)) for t, v in members.items()]
        self.pat_pos = 0
        if len(members) == 1:  # one type: WRR over it is round robin over its instances
            self.pattern = np.zeros(1, dtype=np.int32)
            return
        picks = self._stride_picks({t: self.plan.types[t].capacity_rps * len(v)
                                    for t, v in members.items()}, PATTERN_LEN)
        code = {t: i for i, (t, _) in enumerate(self._groups)}
        self.pattern = np.array([code[t] for t in picks], dtype=np.int32)

    # ---- fleet changes ---------------------------------------------------------------
    def _launch(self, instance_type: str, market: Market, instant: bool,
                ready_after_s: float | None = None) -> None:
        assert self.plan is not None
        now = self.env.now
        it = self.cat.instance(instance_type)
        ts = self.plan.types[instance_type]
        slot = len(self.insts)
        if slot >= self.svc.shape[0]:
            self._alloc(2 * self.svc.shape[0])
        tab = self.ctx.profile.of(instance_type).table_s()
        mb = min(ts.batch.max_batch, tab.size - 1)
        self.svc[slot, : mb + 1] = tab[: mb + 1]
        self.mb[slot] = mb
        self.delay[slot] = ts.batch.max_queue_delay_s
        self.budget[slot] = ts.wait_budget_s if self.plan.spill else np.inf
        self.fstate[slot] = 0.0
        self.istate[slot] = 0
        self.ring_p[slot] = 0
        delay = 0.0 if instant else (it.launch_delay_s if ready_after_s is None
                                     else ready_after_s)
        inst = SimInstance(f"i-{slot:05d}", instance_type, market, InstanceState.PENDING, now,
                           capacity_rps=ts.capacity_rps, slot=slot)
        self.insts.append(inst)
        self.live[inst.id] = inst
        self.n_launches += 1
        if delay == 0.0:
            inst.state, inst.ready_at_s = InstanceState.READY, now
            self._serving.setdefault(instance_type, set()).add(slot)
        else:
            inst.events.append(self.env.schedule(now + delay, lambda: self._ready(inst),
                                                 PRIO_NORMAL))
        if market == Market.SPOT:
            rate = it.spot.interruption_rate_per_s * self.spot_scale
            if rate > 0:
                at = now + float(self.rng.exponential(1.0 / rate))
                if at < self.counts.size:
                    notice = max(now, at - it.spot.notice_s)
                    inst.events.append(self.env.schedule(notice, lambda: self._notice(inst),
                                                         PRIO_NORMAL))
                    inst.events.append(self.env.schedule(at, lambda: self._end(inst, "reclaim"),
                                                         PRIO_URGENT))

    def _ready(self, inst: SimInstance) -> None:
        if inst.state != InstanceState.PENDING:
            return
        self.advance(self.env.now)
        inst.state, inst.ready_at_s = InstanceState.READY, self.env.now
        self._serving.setdefault(inst.instance_type, set()).add(inst.slot)
        self._reroute()

    def _notice(self, inst: SimInstance) -> None:
        if inst.state in (InstanceState.PENDING, InstanceState.READY):
            inst.state = InstanceState.NOTICE  # still serving (from its next reroute)
            self._serving.setdefault(inst.instance_type, set()).add(inst.slot)

    def _end(self, inst: SimInstance, cause: str = "policy") -> None:
        """End ``inst``: ``cause`` is "policy", "reclaim" (spot) or "end" (of the run)."""
        if inst.state == InstanceState.TERMINATED:
            return
        reclaimed = cause == "reclaim"
        inst.ended_by = cause
        self.advance(self.env.now)
        busy_until = queueing.flush_instance(inst.slot, self.svc, self.delay, self.fstate,
                                            self.istate, self.batch_done, self.batch_size,
                                            self.busy, self.sigma, self.seed)
        was_serving = inst.serving
        inst.state = InstanceState.TERMINATED
        self._serving.get(inst.instance_type, set()).discard(inst.slot)
        # a terminated instance finishes its queue (drain); a reclaimed one is gone with what
        # it held, which the front end re-sends (_reclaimed)
        inst.ended_at_s = self.env.now if reclaimed else max(self.env.now, busy_until)
        for ev in inst.events:
            self.env.cancel(ev)
        del self.live[inst.id]
        if reclaimed:
            self.n_interruptions += 1
        if was_serving:
            self._reroute()
            if reclaimed:
                self._reclaimed(inst, self.env.now)

    def _apply(self, dec: Decision) -> None:
        now = self.env.now
        if dec.serving is not None:
            self.plan = dec.serving
            self.faas_changes.append((now, dec.serving.faas))
            for i in self.live.values():
                self.budget[i.slot] = (self.plan.types[i.instance_type].wait_budget_s
                                       if self.plan.spill and i.instance_type in self.plan.types
                                       else np.inf)
        for iid in dec.terminate:
            if iid in self.live:
                self._end(self.live[iid])
        instant = self.policy.instant_launch or now == 0.0
        for order in dec.launch:
            self._launch(order.instance_type, order.market, instant, order.ready_after_s)
        self._reroute()

    def snapshot(self) -> Snapshot:
        now = self.env.now
        fleet = tuple(self.live.values())
        if self.history is not None:  # warm start on a given past
            seen = self._seen[: self.history.size + int(now)]
        else:  # no past before t=0: the policy sees only what has arrived
            seen = self.counts[: int(now)]
        return Snapshot(now, seen, fleet, self.ctx.slo)

    def tick(self) -> None:
        self.advance(self.env.now)
        dec, self.state = self.policy.decide(self.snapshot(), self.state)
        self._apply(dec)
        tl = self.timeline
        tl["t_s"].append(self.env.now)
        tl["forecast_rps"].append(float(dec.info.get("forecast_rps", math.nan)))
        tl["faas_cover"].append(float(dec.info.get("faas_cover", math.nan)))
        tl["faas_cover_reason"].append(float(dec.info.get("faas_cover_reason", math.nan)))
        tl["throttling_accepted"].append(float(dec.info.get("throttling_accepted", math.nan)))
        for k in ("expected_throttled_share", "expected_unabsorbed_share"):
            tl[k].append(float(dec.info.get(k, math.nan)))
        od = sp = 0.0
        for i in self.live.values():
            if i.serving and self.plan is not None:
                c = self.plan.types[i.instance_type].capacity_rps
                if i.market == Market.SPOT:
                    sp += c
                else:
                    od += c
        tl["cap_on_demand_rps"].append(od)
        tl["cap_spot_rps"].append(sp)
        nxt = self.env.now + self.policy.interval_s
        if nxt < self.counts.size:
            self.env.schedule(nxt, self.tick, PRIO_CONTROL)
