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
(``idle``), however slow or fast the model predicted; and while requests are in flight it is
busy at least until now.

With several front-end processes each sees only its own share of an instance's requests and
predicts low by the others'; with one (the default on small hosts) the model is exact.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


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


@dataclass
class InstanceQueue:
    """One instance's queue as the front end models it (see the module docstring)."""

    params: SpillParams
    margin_s: float = 0.0  # kept back from the budget: HTTP, Triton and front-end overhead
    errors: PredictionErrors | None = None  # learned errors: the margin may grow beyond margin_s
    predicted_s: float = 0.0  # the latency predicted for the last request admitted
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
        margin = self.margin_s if self.errors is None else max(
            self.margin_s, self.errors.margin_s(p.budget_s))
        budget = p.budget_s - margin
        if latency > budget or oldest > budget:
            self.refused += 1
            return False
        self.admitted += 1
        self.predicted_s = latency
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
