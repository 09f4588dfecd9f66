"""The one clock seam: policies never call ``time.time()``; they are handed ``now``.

The live service uses :class:`WallClock`; the simulator advances a :class:`VirtualClock`.
Times are seconds as floats.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def now(self) -> float:
        """Current time in seconds."""
        ...

    async def sleep_until(self, t_s: float) -> None:
        """Return once ``now() >= t_s`` (at once if it already is)."""
        ...


class WallClock:
    """Monotonic wall time (seconds since an arbitrary origin)."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep_until(self, t_s: float) -> None:
        left = t_s - time.monotonic()
        if left > 0:
            await asyncio.sleep(left)
        # asyncio's timer may fire a hair early (it rounds to its clock's resolution)
        while time.monotonic() < t_s:  # noqa: ASYNC110
            await asyncio.sleep(0.001)


class VirtualClock:
    """A clock that only moves when told to; used by the simulator and by tests."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now = start_s
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    async def sleep_until(self, t_s: float) -> None:
        """Wait (on the running event loop) until the clock is advanced to ``t_s``."""
        if t_s <= self._now:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (t_s, next(self._seq), fut))
        await fut

    def next_wakeup(self) -> float | None:
        """The earliest time a sleeper waits for (None when none waits)."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    def advance_to(self, t_s: float) -> None:
        """Move to ``t_s`` and wake every sleeper due by then, earliest first (they run when
        the caller next yields to the event loop)."""
        if t_s < self._now:
            raise ValueError(f"virtual time cannot go back: now={self._now}, asked {t_s}")
        self._now = t_s
        while self._sleepers and self._sleepers[0][0] <= t_s:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def advance(self, dt_s: float) -> None:
        self.advance_to(self._now + dt_s)
