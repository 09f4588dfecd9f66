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
the model does not see: the HTTP hops and Triton's own overhead per request.

Reality corrects the model: when an instance has nothing in flight, its queue is empty
(``idle``), however slow or fast the model predicted; and while requests are in flight it is
busy at least until now.

With several front-end processes each sees only its own share of an instance's requests and
predicts low by the others'; with one (the default on small hosts) the model is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


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


@dataclass
class InstanceQueue:
    """One instance's queue as the front end models it (see the module docstring)."""

    params: SpillParams
    margin_s: float = 0.0  # kept back from the budget: HTTP, Triton and front-end overhead
    busy_s: float = 0.0  # the dispatched batches finish then
    first_s: float = 0.0  # arrival of the open batch's first request
    count: int = 0  # requests in the open batch
    admitted: int = field(default=0)
    refused: int = field(default=0)

    def _dispatched(self, t: float) -> tuple[float, int]:
        """(busy until, open batch size) at ``t``: an open batch whose dispatch time has come
        has left (the instance is busy with it)."""
        if self.count > 0:
            disp = max(self.busy_s, self.first_s + self.params.delay_s)
            if t >= disp:
                return disp + self.params.svc_s[self.count], 0
        return self.busy_s, self.count

    def predict_s(self, t: float) -> tuple[float, float]:
        """(latency of a request arriving at ``t``, age at completion of the open batch's
        oldest request), without admitting it."""
        p = self.params
        busy, cnt = self._dispatched(t)
        if cnt > 0:
            if cnt + 1 == p.max_batch:
                done = max(busy, t) + p.svc_s[cnt + 1]
            else:
                done = max(busy, self.first_s + p.delay_s) + p.svc_s[cnt + 1]
            return done - t, done - self.first_s
        done = (max(busy, t) if p.max_batch == 1 else max(busy, t + p.delay_s)) + p.svc_s[1]
        return done - t, done - t

    def admit(self, t: float) -> bool:
        """Admit a request arriving at ``t`` if it and its batch stay within the budget."""
        p = self.params
        self.busy_s, self.count = self._dispatched(t)
        latency, oldest = self.predict_s(t)
        budget = p.budget_s - self.margin_s
        if latency > budget or oldest > budget:
            self.refused += 1
            return False
        self.admitted += 1
        if self.count > 0:
            self.count += 1
            if self.count == p.max_batch:  # full: it leaves now (or when the instance frees)
                self.busy_s = max(self.busy_s, t) + p.svc_s[self.count]
                self.count = 0
        elif p.max_batch == 1:
            self.busy_s = max(self.busy_s, t) + p.svc_s[1]
        else:
            self.first_s, self.count = t, 1
        return True

    def busy_now(self, t: float) -> None:
        """Requests are still in flight at ``t``: the instance is busy at least until now."""
        if self.count == 0 and self.busy_s < t:
            self.busy_s = t

    def idle(self, t: float) -> None:
        """Nothing is in flight at ``t``: the instance's queue is empty."""
        self.busy_s, self.count = t, 0
