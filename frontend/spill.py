"""The live spill decision: each request's predicted completion at the instance WRR picked.

The front end keeps, per instance, the state of the simulator's queueing model of Triton's
dynamic batcher (:func:`mark.core.queueing.serve_segment`): when the instance is busy until,
and the open batch (its first arrival and size) that requests queue into while a batch runs.
Admitting a request is the simulator's per-request step in O(1): the request's predicted
completion (``provisioner.spill.predict_latency_s``'s arithmetic with the type's profiled
batch times) must fit the type's wait budget from the serving plan, and so must the oldest
request of the batch it joins; otherwise it spills (``admit`` returns False and changes
nothing).

Live, ``margin_s`` (``frontend.spill_margin_ms``) is kept back from the budget for what
the model does not see: the HTTP hops and Triton's own overhead per request. What it still
misses (a loaded host, other front-end processes' requests, service times that vary) the
front end learns: :class:`PredictionErrors` keeps each model's recent errors (observed minus
predicted latency of requests served by an instance) and the margin becomes the larger of
the configured one and a high quantile of those errors, so the spill decision stays honest
where the profile is optimistic.

Reality corrects the model: when an instance has nothing in flight, its queue is empty
(``idle``), however slow or fast the model predicted; while requests are in flight it is
busy at least until now; and an instance that has not answered for twice its wait budget
while requests are out is stalled (``stalled``): nothing is admitted there until it answers.

With several front-end processes on a host (``frontend.workers`` > 1) the kernel spreads the
requests over them; each instance's queue state then lives in a cell they all map
(:mod:`frontend.queue_cells`), so every process predicts from every request the host sent
there, and sees the instance idle only when no process has anything out at it. Front ends on
other hosts (several behind a load balancer) are not seen: what they add, the learned margin
takes up.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from frontend.queue_cells import BUSY, COUNT, FIRST, HEARD, INFLIGHT, Cell, new_cell


@dataclass(frozen=True)
class SpillParams:
    """What the plan says about one instance: its type's batch times (seconds by batch
    size, index 0 unused), Triton batching (``max_batch``, ``delay_s``) and wait budget."""

    svc_s: tuple[float, ...]
    max_batch: int
    delay_s: float
    budget_s: float

    @classmethod
    def of(cls, svc_s: Sequence[float], max_batch: int, delay_s: float,
           budget_s: float) -> SpillParams:
        table = tuple(float(x) for x in svc_s)
        mb = max(1, min(int(max_batch), len(table) - 1))
        return cls(table, mb, float(delay_s), float(budget_s))

    def to_json(self) -> dict[str, object]:
        return {"svc_s": list(self.svc_s), "max_batch": self.max_batch, "delay_s": self.delay_s,
                "budget_s": self.budget_s}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> SpillParams:
        return cls.of(d["svc_s"], d["max_batch"], d["delay_s"], d["budget_s"])  # type: ignore[arg-type]


class PredictionErrors:
    """A model's recent prediction errors (seconds; observed minus predicted latency of
    requests an instance served) and the margin they call for: their ``quantile``, recomputed
    every ``every`` samples over the last ``size``, never below ``floor_s`` and never above
    ``cap`` of the budget (an instance always takes what is predicted well inside it)."""

    def __init__(self, floor_s: float, quantile: float = 0.95, size: int = 512,
                 every: int = 16, cap: float = 0.5, min_samples: int = 32) -> None:
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        self.floor_s = floor_s
        self.quantile = quantile
        self.cap = cap
        self.every = every
        self.min_samples = min_samples
        self._errors: deque[float] = deque(maxlen=size)
        self._since = 0
        self.learned_s = 0.0  # the errors' quantile (0 until min_samples are in)

    def note(self, predicted_s: float, observed_s: float) -> None:
        self._errors.append(observed_s - predicted_s)
        self._since += 1
        if self._since >= self.every and len(self._errors) >= self.min_samples:
            self._since = 0
            self.learned_s = max(0.0, float(np.quantile(np.fromiter(self._errors, float),
                                                        self.quantile)))

    def margin_s(self, budget_s: float) -> float:
        return max(self.floor_s, min(self.learned_s, self.cap * budget_s))


STALL_BUDGETS = 2.0  # no answer for this many wait budgets with requests out: stalled


class InstanceQueue:
    """One instance's queue as the front end models it (see the module docstring).

    Its state (busy until, the open batch, the requests out there) lives in ``cell``
    (:mod:`frontend.queue_cells`), which every front-end process of the host may share;
    ``slot`` is this process's in-flight slot there."""

    __slots__ = (
        "admitted",
        "cell",
        "errors",
        "margin_s",
        "params",
        "predicted_s",
        "refused",
        "slot",
    )

    def __init__(self, params: SpillParams, margin_s: float = 0.0,
                 errors: PredictionErrors | None = None, cell: Cell | None = None,
                 slot: int = 0) -> None:
        self.params = params
        self.margin_s = margin_s  # kept back from the budget: HTTP, Triton, front-end overhead
        self.errors = errors  # learned errors: the margin may grow beyond margin_s
        self.predicted_s = 0.0  # the latency predicted for the last request admitted
        self.cell = cell if cell is not None else new_cell()
        if not INFLIGHT <= INFLIGHT + slot < len(self.cell):
            raise ValueError(f"slot {slot} is outside the cell's {len(self.cell) - INFLIGHT}")
        self.slot = INFLIGHT + slot
        self.admitted = 0
        self.refused = 0

    # the shared state, by name
    @property
    def busy_s(self) -> float:
        """The dispatched batches finish then."""
        return self.cell[BUSY]

    @property
    def first_s(self) -> float:
        """Arrival of the open batch's first request."""
        return self.cell[FIRST]

    @property
    def count(self) -> int:
        """Requests in the open batch."""
        return int(self.cell[COUNT])

    def in_flight(self) -> int:
        """Requests out at the instance, from every process sharing the cell."""
        return int(sum(self.cell[INFLIGHT:]))

    def sent(self, t: float) -> None:
        """This process sent the instance a request at ``t``."""
        cell = self.cell
        if not self.in_flight():
            cell[HEARD] = t  # busy from now: it owes an answer within a budget
        cell[self.slot] += 1.0

    def answered(self, t: float) -> None:
        """A request this process sent is back (or failed) at ``t``."""
        cell = self.cell
        cell[self.slot] = max(0.0, cell[self.slot] - 1.0)
        cell[HEARD] = max(cell[HEARD], t)

    def stalled(self, t: float) -> bool:
        """Requests are out and the instance has not answered for twice its wait budget: no
        batch the plan admits takes that long, so it is stopped or far slower than its
        profile (a SIGSTOPped process, a host swapping) and what it is sent now would be late.
        Until it answers again, or its health check takes it out, requests spill. (Twice: a
        loaded host's jitter alone must not send a whole burst to functions.)"""
        return t - self.cell[HEARD] > STALL_BUDGETS * self.params.budget_s and self.in_flight() > 0

    def _dispatched(self, t: float) -> tuple[float, int]:
        """(busy until, open batch size) at ``t``: an open batch whose dispatch time has come
        has left (the instance is busy with it)."""
        cell = self.cell
        busy, count = cell[BUSY], int(cell[COUNT])
        if count > 0:
            disp = max(busy, cell[FIRST] + self.params.delay_s)
            if t >= disp:
                return disp + self.params.svc_s[count], 0
        return busy, count

    def predict_s(self, t: float) -> tuple[float, float]:
        """(latency of a request arriving at ``t``, age at completion of the open batch's
        oldest request), without admitting it."""
        return self._predict(t, *self._dispatched(t))

    def _predict(self, t: float, busy: float, cnt: int) -> tuple[float, float]:
        p = self.params
        if cnt > 0:
            first = self.cell[FIRST]
            if cnt + 1 >= p.max_batch:
                done = max(busy, t) + p.svc_s[min(cnt + 1, p.max_batch)]
            else:
                done = max(busy, first + p.delay_s) + p.svc_s[cnt + 1]
            return done - t, done - first
        done = (max(busy, t) if p.max_batch == 1 else max(busy, t + p.delay_s)) + p.svc_s[1]
        return done - t, done - t

    def admit(self, t: float) -> bool:
        """Admit a request arriving at ``t`` if it and its batch stay within the budget."""
        p = self.params
        cell = self.cell
        busy, count = self._dispatched(t)
        latency, oldest = self._predict(t, busy, count)
        margin = self.margin_s if self.errors is None else max(
            self.margin_s, self.errors.margin_s(p.budget_s))
        budget = p.budget_s - margin
        if latency > budget or oldest > budget or self.stalled(t):
            cell[BUSY], cell[COUNT] = busy, float(count)
            self.refused += 1
            return False
        self.admitted += 1
        self.predicted_s = latency
        if count > 0:
            count += 1
            if count >= p.max_batch:  # full: it leaves now (or when the instance frees)
                busy = max(busy, t) + p.svc_s[min(count, p.max_batch)]
                count = 0
        elif p.max_batch == 1:
            busy = max(busy, t) + p.svc_s[1]
        else:
            cell[FIRST], count = t, 1
        cell[BUSY], cell[COUNT] = busy, float(count)
        return True

    def busy_now(self, t: float) -> None:
        """Requests are still in flight at ``t``: the instance is busy at least until now."""
        cell = self.cell
        if cell[COUNT] == 0 and cell[BUSY] < t:
            cell[BUSY] = t

    def idle(self, t: float) -> None:
        """Nothing is in flight at ``t``: the instance's queue is empty."""
        cell = self.cell
        cell[BUSY], cell[COUNT] = t, 0.0
