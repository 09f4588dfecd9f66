"""The control plane over the shared state store (``state.backend: redis``).

- :class:`StoreCounts`: the arrival counts every front-end process publishes (by epoch
  second) and their reports (snapshot applied, requests in flight), as the control loop's
  :class:`~mark.control.counts.CountSource` and
  :class:`~mark.control.counts.InflightSource`. While the store is unreachable the counts
  are not complete: :meth:`StoreCounts.complete_until` stays at the last good read, so the
  loop does not take the gap's seconds as zeros; when the store is back, the processes'
  buffered counts arrive (each batch once) and the loop reads the gap then.
- :func:`publish_fleet`: the fleet snapshot (and the registered models in it) into the store
  after every change, retried until the store takes it.
- :func:`sync_models`: the registered models into the store; :func:`stored_models` reads
  them back at start (a model registered through the API outlives the process).
- :class:`Leadership`: one control loop per store at a time, by the store's lock with expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import numpy as np
from pydantic import ValidationError

from frontend.arrivals import WorkerReport
from frontend.fleet import Fleet
from mark.control.loop import ModelControl
from mark.core.config import ModelConfig
from mark.core.state import StateStore, StateUnavailable
from provisioner import ServingPlan

log = logging.getLogger(__name__)


class StoreCounts:
    """Counts and in-flight requests from the store, on the loop's clock.

    The loop's clock is monotonic; the store's seconds are epoch seconds: ``offset_s``
    (whole seconds, fixed at construction) maps one to the other. ``models()`` names the
    models to read; the last ``lookback_s`` seconds of each are cached, and each read
    fetches again the last ``margin_s`` seconds (counts arrive up to a flush period late)
    and, after an outage, everything since it began (the front ends' buffered counts).
    ``inflight`` is this process's own requests in flight (it publishes no report).
    """

    def __init__(self, store: StateStore, models: Callable[[], Iterable[str]],
                 inflight: Mapping[str, int], lookback_s: int = 900, margin_s: int = 30,
                 stale_s: float = 5.0, refresh_s: float = 0.2, recover_hold_s: float = 2.0,
                 lag_s: float = 1.0) -> None:
        self.store = store
        self.models = models
        self.inflight = inflight
        self.lookback_s = lookback_s
        self.margin_s = margin_s
        self.stale_s = stale_s
        self.refresh_s = refresh_s
        self.recover_hold_s = recover_hold_s
        self.lag_s = lag_s
        self.offset_s = round(time.time() - time.monotonic())
        self._cache: dict[str, dict[int, int]] = {}  # model -> epoch second -> count
        self._good_until: int | None = None  # epoch second of the last good read
        self._reports: list[WorkerReport] = []
        self._complete_until: float | None = None  # loop clock
        self._recovered_at = -1e9
        self._read_at = -1e9
        self.down = False

    def complete_until(self) -> float | None:
        """Counts are complete before this time of the loop's clock (the start of the last
        good read less ``lag_s``; held for ``recover_hold_s`` after an outage, while the front ends send
        what they buffered; the far past before the first read)."""
        return 0.0 if self._complete_until is None else self._complete_until

    async def refresh(self) -> None:
        now_mono = time.monotonic()
        if now_mono - self._read_at < self.refresh_s:
            return
        now = int(now_mono + self.offset_s)
        since = now - self.lookback_s if self._good_until is None else max(
            now - self.lookback_s, self._good_until - self.margin_s)
        fetched: dict[str, dict[int, int]] = {}
        try:
            for model in list(self.models()):
                start = since if model in self._cache else now - self.lookback_s
                got = await self.store.counts(model, start, now + 1)
                fetched[model] = {int(s): int(n) for s, n in got.items()}
            docs = await self.store.reports()
        except StateUnavailable as exc:
            if not self.down:
                self.down = True
                log.warning("state store unreachable: the control loop waits for the counts "
                            "of the gap (the front ends buffer them): %s", exc)
            return
        if self.down:
            self.down = False
            self._recovered_at = now_mono
            log.warning("state store reachable again: counts resume")
        self._read_at = now_mono
        oldest = now - self.lookback_s
        for model, got in fetched.items():
            start = since if model in self._cache else now - self.lookback_s
            kept = {s: n for s, n in self._cache.get(model, {}).items()
                    if oldest <= s < start}
            kept.update(got)
            self._cache[model] = kept
        for model in [m for m in self._cache if m not in fetched]:
            del self._cache[model]
        self._good_until = now
        if now_mono - self._recovered_at >= self.recover_hold_s:
            # an epoch second maps to the loop's within half a second (``offset_s`` is
            # whole), and the processes flush every quarter: a second is complete once
            # this much later
            self._complete_until = now_mono - self.lag_s
        wall = time.time()
        reports = []
        for d in docs:
            try:
                reports.append(WorkerReport(
                    pid=int(d.get("pid", 0)), seq=int(d["seq"]),
                    inflight={str(k): int(v) for k, v in d.get("inflight", {}).items()},
                    written_at_s=now_mono - (wall - float(d.get("written_at", wall))),
                    faas_usd=float(d.get("faas_usd", 0.0))))
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("ignoring a malformed worker report %r: %s", d, exc)
        self._reports = [r for r in reports if now_mono - r.written_at_s <= self.stale_s]

    def take(self, model: str, start: int, end: int) -> np.ndarray:
        out = np.zeros(max(end - start, 0), dtype=np.int64)
        lo, hi = start + self.offset_s, end + self.offset_s
        for s, n in self._cache.get(model, {}).items():
            if lo <= s < hi:
                out[s - lo] += n
        return out

    def reports(self) -> list[WorkerReport]:
        return self._reports

    def idle(self, instance_id: str, seq: int) -> bool:
        if self.inflight.get(instance_id, 0) or self.down:
            return False
        return all(r.seq >= seq and not r.inflight.get(instance_id, 0) for r in self._reports)


async def publish_fleet(fleet: Fleet, store: StateStore, changed: asyncio.Event,
                        retry_s: float = 0.5, check_s: float = 1.0,
                        on_resync: Callable[[], Awaitable[None]] | None = None) -> None:
    """Put the snapshot into the store after every change (numbered one past the last);
    while the store is unreachable, retry every ``retry_s`` so it gets the latest. Every
    ``check_s`` the store's number is compared with ours: a store that lost its data (a
    restart without persistence) gets the snapshot again, and ``on_resync`` runs (the
    models are published again there)."""
    dirty = True
    down = False
    while True:
        if not dirty:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), check_s)
        dirty = dirty or changed.is_set()
        changed.clear()
        try:
            stored = await store.fleet_seq()
            if not dirty and stored == fleet.snapshot_seq:
                continue
            if stored != fleet.snapshot_seq and on_resync is not None:
                log.warning("the state store's fleet (snapshot %d) is not ours (%d): "
                            "publishing again", stored, fleet.snapshot_seq)
                await on_resync()
            seq = max(fleet.snapshot_seq, stored) + 1
            await store.put_fleet(fleet.snapshot(seq))
        except StateUnavailable as exc:
            dirty = True
            if not down:
                down = True
                log.warning("cannot publish the fleet (snapshot %d) to the state store; "
                            "retrying: %s", fleet.snapshot_seq + 1, exc)
            await asyncio.sleep(retry_s)
            continue
        fleet.snapshot_seq = seq
        dirty = False
        if down:
            down = False
            log.warning("fleet published again (snapshot %d)", seq)


class PlanPublisher:
    """The serving plan in force per model, into the store (``put_plan``) once per change,
    retried while the store is unreachable."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._dirty: dict[str, ServingPlan] = {}
        self._wake = asyncio.Event()

    def mark(self, mc: ModelControl) -> None:
        self._dirty[mc.model] = mc.plan
        self._wake.set()

    async def run(self, retry_s: float = 0.5) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._dirty:
                model, plan = next(iter(self._dirty.items()))
                try:
                    await self.store.put_plan(model, plan_doc(plan))
                except StateUnavailable:
                    await asyncio.sleep(retry_s)
                    continue
                if self._dirty.get(model) is plan:
                    del self._dirty[model]


def plan_doc(plan: ServingPlan) -> dict[str, Any]:
    """A serving plan as JSON: per type its capacity, batching and wait budget; spill; the
    FaaS tier's settings (a non-finite number as null)."""
    doc: dict[str, Any] = _nan_free(dataclasses.asdict(plan))
    return doc


def _nan_free(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _nan_free(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_nan_free(v) for v in x]
    return None if isinstance(x, float) and not math.isfinite(x) else x


async def stored_models(store: StateStore) -> list[ModelConfig]:
    """The models registered in the store (unreadable ones logged and skipped)."""
    out = []
    for name, doc in (await store.get_models()).items():
        try:
            out.append(ModelConfig.model_validate(doc))
        except ValidationError as exc:
            log.error("model %r in the state store is not a valid configuration; ignored: %s",
                      name, exc)
    return out


async def sync_models(store: StateStore, docs: Mapping[str, dict[str, Any]]) -> None:
    """Make the store's models exactly ``docs``."""
    have = await store.get_models()
    for name, doc in docs.items():
        if have.get(name) != doc:
            await store.put_model(name, doc)
    for name in have:
        if name not in docs:
            await store.delete_model(name)


class Leadership:
    """Hold the store's leader lock as ``owner``: :meth:`acquire` waits for it (a standby),
    :meth:`keep` renews it every third of ``ttl_s`` and returns when it is lost to another
    owner (the caller stops its loop). A store outage does not end leadership by itself: the
    lock is renewed again when the store is back, unless another owner took it meanwhile."""

    def __init__(self, store: StateStore, owner: str, ttl_s: float) -> None:
        self.store = store
        self.owner = owner
        self.ttl_s = ttl_s

    async def try_acquire(self) -> bool:
        try:
            return await self.store.acquire_leader(self.owner, self.ttl_s)
        except StateUnavailable:
            return False

    async def acquire(self) -> None:
        announced = False
        while not await self.try_acquire():
            if not announced:
                announced = True
                holder = None
                with contextlib.suppress(StateUnavailable):
                    holder = await self.store.leader()
                log.warning("standing by: the control loop is led by %s", holder or "?")
            await asyncio.sleep(self.ttl_s / 3)
        log.info("leading the control loop as %s", self.owner)

    async def keep(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            try:
                ok = await self.store.acquire_leader(self.owner, self.ttl_s)
            except StateUnavailable:
                continue
            if not ok:
                log.error("leadership lost: another control loop leads (%s)",
                          await self.store.leader())
                return

    async def release(self) -> None:
        with contextlib.suppress(StateUnavailable):
            await self.store.release_leader(self.owner)
