"""The one clock seam: policies never call ``time.time()``; they are handed ``now``.

The live service uses :class:`WallClock`; the simulator advances a :class:`VirtualClock`.
Times are seconds as floats.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def now(self) -> float:
        """Current time in seconds."""
        ...


class WallClock:
    """Monotonic wall time (seconds since an arbitrary origin)."""

    def now(self) -> float:
        return time.monotonic()


class VirtualClock:
    """A clock that only moves when told to; used by the simulator and by tests."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now = start_s

    def now(self) -> float:
        return self._now

    def advance_to(self, t_s: float) -> None:
        if t_s < self._now:
            raise ValueError(f"virtual time cannot go back: now={self._now}, asked {t_s}")
        self._now = t_s

    def advance(self, dt_s: float) -> None:
        self.advance_to(self._now + dt_s)
