"""A SimPy-small discrete-event core: a virtual clock and a heap of timed callbacks.

Events are ``(time_s, priority, seq, callback)``; the ``itertools.count`` sequence makes
events due at the same time and priority run in the order they were scheduled, so runs are
deterministic. :meth:`Environment.step` pops one event, advances the clock and calls it;
:meth:`Environment.run` loops until a time or until the schedule is empty.
Requests are not events here: see ``queueing.py`` for how they are served in bulk.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from mark.core.clock import VirtualClock

Callback = Callable[[], None]

# lower runs first among events due at the same time
PRIO_URGENT = 0  # reclaims, terminations: leave the fleet before anything routes to them
PRIO_NORMAL = 1  # instances becoming ready, notices
PRIO_CONTROL = 2  # policy ticks: see the fleet after every change at that time


class EmptySchedule(Exception):
    """``step()`` was called with nothing scheduled."""


@dataclass(order=True)
class _Event:
    time_s: float
    priority: int
    seq: int
    callback: Callback = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class Environment:
    """Virtual time plus the event heap. ``clock`` is the shared :class:`VirtualClock`."""

    def __init__(self, start_s: float = 0.0) -> None:
        self.clock = VirtualClock(start_s)
        self._heap: list[_Event] = []
        self._seq = itertools.count()

    @property
    def now(self) -> float:
        return self.clock.now()

    def schedule(self, time_s: float, callback: Callback, priority: int = PRIO_NORMAL) -> _Event:
        """Run ``callback`` at ``time_s`` (not before now); returns a handle for :meth:`cancel`."""
        if time_s < self.now:
            raise ValueError(f"cannot schedule in the past: now={self.now}, asked {time_s}")
        ev = _Event(time_s, priority, next(self._seq), callback)
        heapq.heappush(self._heap, ev)
        return ev

    @staticmethod
    def cancel(ev: _Event) -> None:
        ev.cancelled = True

    def peek(self) -> float:
        """Time of the next live event, ``inf`` when none."""
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0].time_s if self._heap else float("inf")

    def step(self) -> None:
        """Process the next event; raises :class:`EmptySchedule` when there is none."""
        while self._heap:
            ev = heapq.heappop(self._heap)
            if ev.cancelled:
                continue
            self.clock.advance_to(ev.time_s)
            ev.callback()
            return
        raise EmptySchedule("no events scheduled")

    def run(self, until_s: float | None = None) -> None:
        """Process events up to and including ``until_s`` (all of them when ``None``)."""
        while True:
            t = self.peek()
            if t == float("inf") or (until_s is not None and t > until_s):
                break
            self.step()
        if until_s is not None and until_s > self.now:
            self.clock.advance_to(until_s)
