"""The live control loop: the fleet sized, live, by the policy objects the simulator runs.

Mechanism only. Every ``interval_s`` (the policy's) and for each model it

1. reads the per-second arrival counts of the model since the last step (a
   :class:`~mark.control.counts.CountSource`: the front end's and its workers');
2. builds the :class:`~provisioner.Snapshot`: the counts so far (at most ``history_s``), the
   model's instances that are not leaving (pending, ready, notice, unhealthy), with times
   on the loop's clock (seconds since the loop began, as a simulation's);
3. calls the policy's ``decide`` in a worker thread (a slow step never blocks the event
   loop; an exception is logged with its context, recorded, and the loop goes on);
4. executes the :class:`~provisioner.Decision`: the serving plan (WRR weight = the type's
   capacity; the Triton batching settings go into each new instance's model configuration
   at launch; the wait budgets are kept for the spill path), terminations (drained first)
   and launches through the :class:`~mark.backends.Backend`.

Around the policy, the loop owns what only a live world has:

- **draining**: an instance that leaves (scale-in, spot notice, ``drain``) takes no new
  request (state DRAINING, so no front-end process routes to it), finishes what it holds
  (until every process that has seen the change reports nothing in flight there, at most
  the longest request deadline), then is terminated;
- **spot notices**: the instance stays in service while the policy, stepped at once, plans
  its replacement (on demand while the type is under notice); it drains when the
  replacement is ready, or a drain's length before the reclaim;
- **failures**: a launch that fails or times out is retried on the next cheapest type (per
  request at capacity); an instance failing health checks is replaced (``replace``); an
  instance that dies is dropped and the next step plans without it;
- **cost**: every instance-second goes to the :class:`~mark.control.ledger.CostLedger`;
- **a floor**: ``min_instances`` per model stay whatever the plan says (terminations beyond it
  are skipped, the cheapest type is launched below it): while the live service cannot spill
  to FaaS, a plan of zero instances would answer every request with 503.

The clock is injected: ``VirtualClock`` with the fake backend in tests, the wall clock
live. ``warm_start`` gives the policy a past (a warm-up slice, as the simulator's ``history``):
the seconds before the loop's epoch, kept in its history as the counts that follow are
appended (within ``history_s``); the launches of the first step are the starting fleet,
taken as already running (ready at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from frontend.fleet import Fleet
from frontend.spill import SpillParams
from mark.backends.base import Backend, LaunchSpec
from mark.control.counts import CountSource, InflightSource
from mark.control.ledger import CostLedger
from mark.control.planning import types_by_cost
from mark.core.clock import Clock
from mark.core.errors import Conflict, NotFound
from mark.core.instances import Instance, InstanceState, Market
from provisioner import (
    Decision,
    LaunchOrder,
    PolicyContext,
    ProvisioningPolicy,
    ServingPlan,
    Snapshot,
)

log = logging.getLogger(__name__)

_LEAVING = frozenset({InstanceState.DRAINING, InstanceState.TERMINATED})


@dataclass
class ModelControl:
    """One plan and one fleet per model: its policy, the policy's state, the plan in force
    and the arrival counts seen (``history[i]`` = second ``hist_start + i``)."""

    model: str
    policy: ProvisioningPolicy
    ctx: PolicyContext
    plan: ServingPlan
    state: Any = None
    history: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    hist_start: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)  # since the last step

    def __post_init__(self) -> None:
        if self.state is None:
            self.state = self.policy.initial_state()


class ControlLoop:
    """See the module docstring. ``models`` maps each model name to its control."""

    def __init__(
        self,
        models: Mapping[str, ModelControl],
        backend: Backend,
        fleet: Fleet,
        ledger: CostLedger,
        clock: Clock,
        counts: CountSource,
        *,
        inflight: InflightSource | None = None,
        interval_s: float | None = None,
        history_s: int = 86_400,
        ready_timeout_s: float = 300.0,
        drain_timeout_s: float = 30.0,
        settle_s: float = 0.0,
        poll_s: float = 0.1,
        decisions_kept: int = 10_000,
        warm_start: Mapping[str, np.ndarray] | None = None,
        min_instances: int = 0,
        faas: bool = False,
    ) -> None:
        self.models = dict(models)
        self.backend = backend
        self.fleet = fleet
        self.ledger = ledger
        self.clock = clock
        self.counts = counts
        self.inflight = inflight
        self.interval_s = interval_s or min((m.policy.interval_s for m in self.models.values()),
                                            default=10.0)
        self.history_s = history_s
        self.ready_timeout_s = ready_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.settle_s = settle_s
        self.poll_s = poll_s
        self.decisions: deque[dict[str, Any]] = deque(maxlen=decisions_kept)
        self.warm_start = dict(warm_start or {})
        self.min_instances = min_instances
        self.faas = faas  # requests may spill (the front end has a FaaS path)
        # called with each model whose plan was put into force (the store publishes it)
        self.on_plan: Callable[[ModelControl], None] | None = None
        for mc in self.models.values():
            self.apply_plan(mc)
        self.epoch = float(math.floor(clock.now()))
        for mc in self.models.values():
            self._seed(mc, int(self.epoch))
        self._leaving: set[str] = set()  # ids we drain or terminate (not failures)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._steps = 0
        self._run_task: asyncio.Task[None] | None = None

    # ---- time --------------------------------------------------------------------------
    def now_s(self) -> float:
        """Seconds since the loop began (the policy's clock)."""
        return self.clock.now() - self.epoch

    def _rel(self, inst: Instance) -> Instance:
        """``inst`` with its times on the loop's clock (the record itself is not changed)."""
        return replace(inst, launched_at_s=inst.launched_at_s - self.epoch,
                       ready_at_s=None if inst.ready_at_s is None else inst.ready_at_s - self.epoch,
                       ended_at_s=None if inst.ended_at_s is None else inst.ended_at_s - self.epoch)

    # ---- running ----------------------------------------------------------------------
    async def start(self, run: bool = True) -> None:
        """The warm-start step (its launches awaited, ready at once), then the loop (unless
        ``run`` is false: the caller steps it, as tests on a virtual clock do)."""
        if self.warm_start:
            await self.step(starting=True)
            await self.settle()
        if run:
            self._run_task = asyncio.create_task(self._run())

    def _seed(self, mc: ModelControl, at: int) -> None:
        """``mc``'s history from second ``at`` on, its past the warm-start counts (if any) as
        the seconds just before ``at``."""
        past = np.asarray(self.warm_start.get(mc.model, np.zeros(0)), dtype=np.int64)
        past = past[max(0, past.size - self.history_s):]
        mc.hist_start, mc.history = at - past.size, past.copy()

    def begin(self, at_s: float | None = None) -> None:
        """Start stepping with the loop's clock reset to 0 at ``at_s`` (a whole second of the
        clock; default: the next one): a replay aligns the policy's time with its trace's
        this way. Counts before it are forgotten (the warm-start counts stay its past); call
        after ``start(run=False)``."""
        at = float(math.ceil(self.clock.now() if at_s is None else at_s))
        self.epoch = at
        for mc in self.models.values():
            self._seed(mc, int(at))
        if self._run_task is None:
            self._run_task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        nxt = self.epoch + self.interval_s
        while True:
            sleeper = asyncio.ensure_future(self.clock.sleep_until(nxt + self.settle_s))
            woken = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({sleeper, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                woken.cancel()
            self._wake.clear()
            try:
                await self.step()
            except Exception:  # the loop goes on; step() records policy errors itself
                log.exception("control step at t=%.1f s failed", self.now_s())
            while nxt <= self.clock.now() - self.settle_s:
                nxt += self.interval_s

    def wake(self) -> None:
        """Step now (a spot notice: the replacement is planned at once)."""
        self._wake.set()

    async def stop(self) -> None:
        if self._run_task is not None:
            self._run_task.cancel()
            await asyncio.gather(self._run_task, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def settle(self) -> None:
        """Wait for the launches, readiness checks and drains in progress (tests, start)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def start_drain(self, instance_id: str, reason: str = "drain requested") -> None:
        """Drain ``instance_id`` in the background (see :meth:`drain`); NotFound at once for
        an unknown one."""
        if instance_id not in self.fleet.instances:
            raise NotFound(f"unknown instance {instance_id!r}; known ids: "
                           f"{sorted(self.fleet.instances)}")
        self._spawn(self.drain(instance_id, reason))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- models come and go ------------------------------------------------------------
    def add_model(self, mc: ModelControl, starting_instances: int = 0) -> None:
        """Plan ``mc`` from the next step on, its counts from now; launch
        ``starting_instances`` of the plan's cheapest type at once (booting as any launch)."""
        if mc.model in self.models:
            raise Conflict(f"model {mc.model!r} is controlled already")
        mc.hist_start, mc.history = math.floor(self.clock.now()), np.zeros(0, dtype=np.int64)
        self.models[mc.model] = mc
        self.apply_plan(mc)
        self._event(mc, "registered", starting_instances=starting_instances)
        if starting_instances and mc.plan.types:
            itype = types_by_cost(mc.ctx, mc.plan, Market.ON_DEMAND)[0]
            for _ in range(starting_instances):
                self._spawn(self._launch(mc, LaunchOrder(itype)))

    def update_model(self, mc: ModelControl) -> None:
        """Replace a model's control (a new SLO, types, markets): its counts so far and its
        fleet are kept; its plan is the new policy's first one until the next step, which
        comes at once."""
        old = self.models.get(mc.model)
        if old is None:
            raise NotFound(f"model {mc.model!r} is not controlled")
        mc.history, mc.hist_start, mc.events = old.history, old.hist_start, old.events
        self.models[mc.model] = mc
        self.apply_plan(mc)
        self._event(mc, "updated", slo_ms=mc.ctx.slo.latency_ms,
                    slo_percentile=mc.ctx.slo.percentile)
        self.wake()

    def remove_model(self, model: str, reason: str = "model deleted") -> list[asyncio.Task[Any]]:
        """Stop planning ``model`` and drain every instance of it (each lets its requests
        finish); returns the drains, to await where the caller wants them done."""
        mc = self.models.pop(model, None)
        if mc is None:
            raise NotFound(f"model {model!r} is not controlled; controlled: {sorted(self.models)}")
        self.decisions.append({"t": round(self.now_s(), 3), "wall": time.time(), "model": model,
                               "removed": True, "reason": reason, "launches": [],
                               "terminations": [], "events": self._take_events(mc)})
        return [self._spawn(self.drain(i.id, reason)) for i in self.instances_of(model)
                if i.id not in self._leaving]

    # ---- a step -----------------------------------------------------------------------
    def instances_of(self, model: str) -> list[Instance]:
        return [i for i in self.fleet.instances.values() if model in i.models]

    async def step(self, starting: bool = False) -> None:
        await self.counts.refresh()
        for mc in list(self.models.values()):  # models may come and go meanwhile
            if self.models.get(mc.model) is mc:
                await self._step_model(mc, starting)
        self._steps += 1

    def _ingest(self, mc: ModelControl, upto: int) -> None:
        """Append the counts of seconds ``[hist_start + len(history), upto)``."""
        have = mc.hist_start + mc.history.size
        if upto > have:
            mc.history = np.concatenate([mc.history, self.counts.take(mc.model, have, upto)])
        extra = mc.history.size - self.history_s
        if extra > 0:
            mc.history = mc.history[extra:]
            mc.hist_start += extra

    async def _step_model(self, mc: ModelControl, starting: bool) -> None:
        now = self.now_s()
        upto = self.clock.now() - self.settle_s
        complete = self.counts.complete_until()
        if complete is not None:  # the source fell behind (a store outage): wait for it
            upto = min(upto, complete)
        self._ingest(mc, math.floor(upto))
        counts = mc.history  # the warm-start past, then what has arrived
        fleet = tuple(self._rel(i) for i in self.instances_of(mc.model) if i.state not in _LEAVING)
        snap = Snapshot(now, counts, fleet, mc.ctx.slo)
        record: dict[str, Any] = {"t": round(now, 3), "wall": time.time(), "model": mc.model,
                                  "capacity_rps": self.capacity_by_market(mc.model)}
        try:
            dec, mc.state = await asyncio.to_thread(mc.policy.decide, snap, mc.state)
        except Exception as exc:
            log.exception("policy %s failed at t=%.1f s for model %s (%d instances, %d s of "
                          "counts)", mc.policy.name, now, mc.model, len(fleet), counts.size)
            record.update(error=f"{type(exc).__name__}: {exc}", launches=[], terminations=[],
                          forecast_rps=None, info={}, events=self._take_events(mc))
            self.decisions.append(record)
            return
        record.update(
            forecast_rps=_num(dec.info.get("forecast_rps")),
            launches=[{"instance_type": o.instance_type, "market": o.market.value}
                      for o in dec.launch],
            terminations=list(dec.terminate),
            info={k: _num(v) for k, v in dec.info.items()},
            error=None,
        )
        if self.models.get(mc.model) is not mc:  # deleted or replaced while it decided
            record.update(launches=[], terminations=[], superseded=True)
        else:
            await self._apply(mc, dec, starting)
        record["events"] = self._take_events(mc)
        self.decisions.append(record)

    async def _apply(self, mc: ModelControl, dec: Decision, starting: bool) -> None:
        if dec.serving is not None:
            mc.plan = dec.serving
            self.apply_plan(mc)
        ending = [i for i in dec.terminate if i in self.fleet.instances]
        staying = [i for i in self.instances_of(mc.model)
                   if i.state not in _LEAVING and i.id not in ending]
        launches = list(dec.launch)
        short = self.min_instances - len(staying) - len(launches)
        if short > 0 and ending:  # the floor: keep the newest of those the plan would end
            kept, ending = ending[-short:], ending[:-short]
            short -= len(kept)
            self._event(mc, "kept_by_floor", instances=kept, min_instances=self.min_instances)
        if short > 0:
            itype = types_by_cost(mc.ctx, mc.plan, Market.ON_DEMAND)[0]
            launches += [LaunchOrder(itype)] * short
            self._event(mc, "launch_by_floor", instance_type=itype, count=short,
                        min_instances=self.min_instances)
        for iid in ending:
            self.start_drain(iid, "scale-in")
        launched = await asyncio.gather(
            *(self._launch(mc, o, ready_after_s=0.0 if starting else o.ready_after_s)
              for o in launches), return_exceptions=True)
        for order, res in zip(launches, launched, strict=True):
            if isinstance(res, BaseException):
                log.error("launch of %s (%s) for %s failed: %s", order.instance_type,
                          order.market.value, mc.model, res)

    def apply_plan(self, mc: ModelControl) -> None:
        """Put ``mc.plan`` into the front end's view: each instance's weight (its type's
        capacity) and spill model, the model's spill switch and FaaS buffer settings."""
        for inst in self.instances_of(mc.model):
            self.serve_as_planned(mc, inst)
        self.fleet.spill[mc.model] = mc.plan.spill and self.faas
        self.fleet.faas_settings[mc.model] = (mc.plan.faas.batch, mc.plan.faas.timeout_s)
        self.fleet.refresh()
        if self.on_plan is not None:
            self.on_plan(mc)

    def serve_as_planned(self, mc: ModelControl, inst: Instance) -> None:
        ts = mc.plan.types.get(inst.instance_type)
        if ts is None:
            return
        inst.capacity_rps = ts.capacity_rps
        table = mc.ctx.profile.of(inst.instance_type).table_s()
        params = SpillParams.of(table.tolist(), ts.batch.max_batch, ts.batch.max_queue_delay_s,
                                ts.wait_budget_s)
        old = inst.extra.get("spill")
        if old != params:
            inst.extra["spill"] = params

    # ---- launches ---------------------------------------------------------------------
    def spec_for(self, mc: ModelControl, instance_type: str, market: Market,
                 ready_after_s: float | None) -> LaunchSpec:
        """What to launch for ``mc``: its model, the plan's Triton batching for the type."""
        ts = mc.plan.types.get(instance_type)
        return LaunchSpec(
            instance_type=instance_type, market=market, models=(mc.model,),
            max_batch_size=ts.batch.max_batch if ts else None,
            max_queue_delay_us=round(ts.batch.max_queue_delay_s * 1e6) if ts else None,
            ready_after_s=ready_after_s,
        )

    async def _launch(self, mc: ModelControl, order: LaunchOrder,
                      ready_after_s: float | None = None,
                      tried: tuple[str, ...] = ()) -> Instance | None:
        """Launch one instance; readiness is awaited in the background (retry on failure)."""
        spec = self.spec_for(mc, order.instance_type, order.market, ready_after_s)
        try:
            inst = await self.backend.launch(spec)
        except Exception as exc:
            self._event(mc, "launch_failed", instance_type=order.instance_type,
                        market=order.market.value, reason=f"{type(exc).__name__}: {exc}")
            await self._retry(mc, order, (*tried, order.instance_type), ready_after_s)
            return None
        self.serve_as_planned(mc, inst)
        self.ledger.start(inst)
        self.fleet.upsert(inst)  # listed while pending; routed once ready
        self._event(mc, "launched", instance=inst.id, instance_type=inst.instance_type,
                    market=inst.market.value)
        self._spawn(self._await_ready(mc, inst, order, (*tried, order.instance_type),
                                      ready_after_s))
        return inst

    async def _await_ready(self, mc: ModelControl, inst: Instance, order: LaunchOrder,
                           tried: tuple[str, ...], ready_after_s: float | None) -> None:
        try:
            await self.backend.wait_ready(inst.id, self.ready_timeout_s)
        except Exception as exc:
            if inst.id in self._leaving:
                return  # ended by us while it booted (scale-in): not a failure
            with contextlib.suppress(Exception):
                await self.backend.terminate(inst.id)
            self.ledger.stop(inst.id, self.clock.now())
            self.fleet.remove(inst.id, f"launch failed: {exc}")
            self._event(mc, "launch_failed", instance=inst.id, instance_type=inst.instance_type,
                        market=inst.market.value, reason=f"{type(exc).__name__}: {exc}")
            await self._retry(mc, order, tried, ready_after_s)
            return
        if inst.id in self._leaving or inst.id not in self.fleet.instances:
            return
        if inst.state == InstanceState.READY:
            self.fleet.upsert(inst)  # now routed
            self._event(mc, "ready", instance=inst.id, instance_type=inst.instance_type,
                        after_s=round((inst.ready_at_s or self.clock.now()) - inst.launched_at_s, 3))

    async def _retry(self, mc: ModelControl, order: LaunchOrder, tried: tuple[str, ...],
                     ready_after_s: float | None) -> None:
        """Launch on the next cheapest type (per request at capacity) not tried yet."""
        ranked = types_by_cost(mc.ctx, mc.plan, order.market)
        failed = order.instance_type
        after = ranked[ranked.index(failed) + 1:] if failed in ranked else ranked
        nxt = next((t for t in after if t not in tried), None)
        if nxt is None:
            self._event(mc, "launch_abandoned", instance_type=failed, market=order.market.value,
                        reason=f"no cheaper type left to try after {list(tried)}")
            return
        self._event(mc, "launch_retry", instance_type=nxt, market=order.market.value,
                    replaces=failed)
        await self._launch(mc, LaunchOrder(nxt, order.market), ready_after_s, tried)

    # ---- leaving ----------------------------------------------------------------------
    async def drain(self, instance_id: str, reason: str = "drain requested") -> None:
        """Take ``instance_id`` out of routing, let it finish what it holds, terminate it."""
        inst = self.fleet.instances.get(instance_id)
        if inst is None:
            raise NotFound(f"unknown instance {instance_id!r}; known ids: "
                           f"{sorted(self.fleet.instances)}")
        if instance_id in self._leaving:
            return
        self._leaving.add(instance_id)
        mc = self._control_of(inst)
        was = inst.state
        self.fleet.set_state(instance_id, InstanceState.DRAINING, reason)
        seq = self.fleet.snapshot_seq + 1  # the snapshot that carries the change
        if mc is not None:
            self._event(mc, "draining", instance=instance_id, reason=reason)
        if was != InstanceState.PENDING and self.inflight is not None:
            deadline = self.clock.now() + self.drain_timeout_s
            while self.clock.now() < deadline:
                await self.inflight.refresh()
                if self.inflight.idle(instance_id, seq):
                    break
                await self.clock.sleep_until(self.clock.now() + self.poll_s)
            else:
                log.warning("instance %s still had requests out after %.0f s of draining; "
                            "terminating", instance_id, self.drain_timeout_s)
        await self.backend.terminate(instance_id)
        self.ledger.stop(instance_id, self.clock.now())
        self.fleet.remove(instance_id, reason)
        if mc is not None:
            self._event(mc, "terminated", instance=instance_id, reason=reason)

    def on_notice(self, inst: Instance, reclaim_at_s: float) -> None:
        """The backend's spot notice: keep serving, plan the replacement now, drain in time."""
        self.fleet.set_state(inst.id, InstanceState.NOTICE, "spot interruption notice")
        mc = self._control_of(inst)
        if mc is not None:
            self._event(mc, "notice", instance=inst.id, instance_type=inst.instance_type,
                        reclaim_in_s=round(reclaim_at_s - self.clock.now(), 3))
        self._spawn(self._drain_noticed(inst, reclaim_at_s))
        self.wake()

    async def _drain_noticed(self, inst: Instance, reclaim_at_s: float) -> None:
        noticed_at = self.clock.now()
        latest = reclaim_at_s - self.drain_timeout_s
        while self.clock.now() < latest and inst.id in self.fleet.instances:
            replaced = any(i.launched_at_s >= noticed_at and i.state == InstanceState.READY
                           for i in self.fleet.instances.values()
                           if set(i.models) & set(inst.models) and i.id != inst.id)
            if replaced:
                break
            await self.clock.sleep_until(min(self.clock.now() + max(self.poll_s, 0.25), latest))
        if inst.id in self.fleet.instances:
            await self.drain(inst.id, "spot interruption notice")

    def on_exit(self, inst: Instance, code: int) -> None:
        """The backend says ``inst`` ended on its own (crash, reclaim)."""
        self.ledger.stop(inst.id, inst.ended_at_s or self.clock.now())
        self.fleet.remove(inst.id, f"process exited with code {code}")
        mc = self._control_of(inst)
        if mc is not None and inst.id not in self._leaving:
            self._event(mc, "lost", instance=inst.id, instance_type=inst.instance_type,
                        reason=f"exited with code {code}")

    async def replace(self, instance_id: str, reason: str) -> None:
        """Replace a failing instance: launch one of its type and market, drain it."""
        inst = self.fleet.instances.get(instance_id)
        if inst is None or instance_id in self._leaving:
            return
        mc = self._control_of(inst)
        if mc is not None:
            self._event(mc, "replacing", instance=instance_id, reason=reason)
            await self._launch(mc, LaunchOrder(inst.instance_type, inst.market))
        self._spawn(self.drain(instance_id, f"replaced: {reason}"))

    # ---- reporting --------------------------------------------------------------------
    def _control_of(self, inst: Instance) -> ModelControl | None:
        return next((self.models[m] for m in inst.models if m in self.models), None)

    def _event(self, mc: ModelControl, kind: str, **fields: Any) -> None:
        ev = {"t": round(self.now_s(), 3), "event": kind, **fields}
        log.info("control %s: %s", mc.model, ev)
        mc.events.append(ev)
        del mc.events[:-1000]  # bounded between steps

    @staticmethod
    def _take_events(mc: ModelControl) -> list[dict[str, Any]]:
        out, mc.events = mc.events, []
        return out

    def capacity_by_market(self, model: str) -> dict[str, float]:
        """Requests/s the serving instances of ``model`` sustain, by market."""
        out = {Market.ON_DEMAND.value: 0.0, Market.SPOT.value: 0.0}
        for i in self.instances_of(model):
            if i.serving:
                out[i.market.value] += float(i.capacity_rps)
        return out

    def decisions_since(self, since_s: float) -> list[dict[str, Any]]:
        return [d for d in self.decisions if d["t"] >= since_s]


def _num(v: Any) -> Any:
    """JSON-safe numbers (NaN and infinities as None)."""
    if isinstance(v, float | np.floating):
        f = float(v)
        return f if math.isfinite(f) else None
    return v
