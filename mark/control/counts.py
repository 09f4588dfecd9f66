"""Where the control loop reads arrival counts and in-flight requests from.

``CountSource.take(model, start, end)`` gives the per-second arrival counts of ``model`` for
the absolute seconds ``start..end-1`` (of the clock the loop runs on). Live, the counts are
the front end's own plus every worker's report (:class:`LiveCounts`); tests and replays hand
arrays (:class:`ArrayCounts`). ``InflightSource.idle(id, seq)`` says whether no front-end
process still has a request out at an instance, counting only processes that have applied
fleet snapshot ``seq`` or a later one (so they no longer route to it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

from frontend.arrivals import ArrivalCounter, WorkerReport, read_reports


class CountSource(Protocol):
    async def refresh(self) -> None:
        """Bring the counts up to date (I/O off the event loop)."""
        ...

    def take(self, model: str, start: int, end: int) -> np.ndarray: ...

    def complete_until(self) -> float | None:
        """Counts are complete before this time of the loop's clock; None: up to now (a
        source that can fall behind, such as a store that went away, says how far)."""
        ...


class InflightSource(Protocol):
    async def refresh(self) -> None: ...

    def idle(self, instance_id: str, seq: int) -> bool: ...


class ArrayCounts:
    """Counts from arrays: ``counts[model][s]`` for absolute second ``s`` (0 beyond the end)."""

    def __init__(self, counts: Mapping[str, np.ndarray]) -> None:
        self.counts = {m: np.asarray(c, dtype=np.int64) for m, c in counts.items()}

    async def refresh(self) -> None:
        return None

    def complete_until(self) -> float | None:
        return None

    def take(self, model: str, start: int, end: int) -> np.ndarray:
        out = np.zeros(max(end - start, 0), dtype=np.int64)
        c = self.counts.get(model)
        if c is not None and end > start:
            lo, hi = max(start, 0), min(end, c.size)
            if hi > lo:
                out[lo - start: hi - start] = c[lo:hi]
        return out


class LiveCounts:
    """The serving process's counter plus the reports of its worker processes.

    Reports are re-read at most every ``refresh_s``; a report older than ``stale_s`` is from a
    worker that is gone and is not waited for by drains.
    """

    def __init__(self, counter: ArrivalCounter, inflight: Mapping[str, int],
                 reports_dir: Path | None, refresh_s: float = 0.2, stale_s: float = 5.0) -> None:
        self.counter = counter
        self.inflight = inflight
        self.reports_dir = reports_dir
        self.refresh_s = refresh_s
        self.stale_s = stale_s
        self._reports: list[WorkerReport] = []
        self._read_at = -1e9

    async def refresh(self) -> None:
        """Re-read the workers' reports (in a thread), at most every ``refresh_s``."""
        now = time.monotonic()
        if self.reports_dir is None or now - self._read_at < self.refresh_s:
            return
        self._read_at = now
        fresh = await asyncio.to_thread(read_reports, self.reports_dir)
        self._reports = [r for r in fresh if now - r.written_at_s <= self.stale_s]

    def reports(self) -> list[WorkerReport]:
        return self._reports

    def complete_until(self) -> float | None:
        return None

    def take(self, model: str, start: int, end: int) -> np.ndarray:
        out = np.zeros(max(end - start, 0), dtype=np.int64)
        sources = [self.counter.seconds(model)] + [r.counts.get(model, {}) for r in self.reports()]
        for per in sources:
            for s, n in per.items():
                if start <= s < end:
                    out[s - start] += n
        return out

    def idle(self, instance_id: str, seq: int) -> bool:
        if self.inflight.get(instance_id, 0):
            return False
        return all(r.seq >= seq and not r.inflight.get(instance_id, 0) for r in self.reports())
