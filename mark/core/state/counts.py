"""Arrival counts from one front-end process to the shared store, exactly once across outages.

:meth:`CountPublisher.add` is a dict increment (no I/O, safe on the request path);
:meth:`CountPublisher.flush` sends what accumulated as one batch with a fresh id. When a send
fails (:class:`~mark.core.state.base.StateUnavailable`), the batch may or may not have been
applied (the reply can be lost after Redis ran it), so that exact batch (same id, same
content) is kept and sent again first on the next flush: the store counts a batch id once,
so it lands exactly once either way. Counts added meanwhile go to a separate pending batch
that gets its own id only once the retried one is through.

Memory is bounded: the pending counts keep at most ``max_pending_cells`` (model, second)
cells; past that, the oldest seconds are dropped (the forecaster weighs recent seconds most,
and the store drops old ones after its retention anyway) and a warning says how many requests
were dropped. The retried batch is a frozen former pending batch, so it is bounded the same.
A retry of an ambiguous batch more than ``BATCH_TTL_S`` after its first send could count
twice; an outage that long is reported by the warnings before.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

from mark.core.state.base import StateStore, StateUnavailable

log = logging.getLogger(__name__)

Counts = dict[str, dict[int, int]]


def _total(counts: Counts) -> int:
    return sum(n for per_s in counts.values() for n in per_s.values())


def _cells(counts: Counts) -> int:
    return sum(len(per_s) for per_s in counts.values())


class CountPublisher:
    """Per-second arrival counts of this process, flushed to a store without loss or double
    counting across store outages."""

    def __init__(self, max_pending_cells: int = 100_000, source: str = "") -> None:
        self.max_pending_cells = max_pending_cells
        self._source = source
        self._pending: Counts = {}
        self._pending_cells = 0
        self._unsent: tuple[str, Counts] | None = None  # the batch whose send failed
        self._dropped = 0
        self._lock = asyncio.Lock()

    def add(self, model: str, n: int = 1, now_s: float | None = None) -> None:
        """Count ``n`` arrivals of ``model`` in epoch second ``int(now_s)`` (default: now)."""
        second = int(time.time() if now_s is None else now_s)
        per_s = self._pending.setdefault(model, {})
        if second not in per_s:
            per_s[second] = 0
            self._pending_cells += 1
        per_s[second] += n
        if self._pending_cells > self.max_pending_cells:
            self._shed()

    def pending_requests(self) -> int:
        """Arrivals counted here and not yet known to be in the store."""
        return _total(self._pending) + (0 if self._unsent is None else _total(self._unsent[1]))

    def dropped_requests(self) -> int:
        """Arrivals dropped so far because pending counts hit ``max_pending_cells``."""
        return self._dropped

    async def flush(self, store: StateStore) -> bool:
        """Send the failed batch again if there is one, then the pending counts as a new batch.
        True when nothing is left unsent; never raises."""
        async with self._lock:
            if self._unsent is None and self._pending:
                self._unsent = (self._new_id(), self._pending)
                self._pending, self._pending_cells = {}, 0
            while self._unsent is not None:
                batch_id, counts = self._unsent
                try:
                    await store.add_counts(batch_id, counts)
                except StateUnavailable as exc:
                    log.debug("count batch %s (%d requests) not sent, kept for the next flush: %s",
                              batch_id, _total(counts), exc)
                    return False
                except Exception:
                    log.exception("count batch %s (%d requests) failed; kept for the next flush",
                                  batch_id, _total(counts))
                    return False
                self._unsent = None
                if self._pending:
                    self._unsent = (self._new_id(), self._pending)
                    self._pending, self._pending_cells = {}, 0
            return True

    def _new_id(self) -> str:
        return f"{self._source}{uuid.uuid4().hex}"

    def _shed(self) -> None:
        """Drop the oldest seconds until the pending counts fill 90 % of the cap (amortised)."""
        keep = int(self.max_pending_cells * 0.9)
        cells = sorted((s, m) for m, per_s in self._pending.items() for s in per_s)
        dropped = 0
        for s, m in cells[: len(cells) - keep]:
            dropped += self._pending[m].pop(s)
        for m in [m for m, per_s in self._pending.items() if not per_s]:
            del self._pending[m]
        self._pending_cells = _cells(self._pending)
        self._dropped += dropped
        log.warning("arrival counts pending for the state store passed %d cells (store "
                    "unreachable?); dropped the oldest %d requests (%d so far)",
                    self.max_pending_cells, dropped, self._dropped)
