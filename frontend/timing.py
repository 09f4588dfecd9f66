"""Per-request timing records, kept in a bounded ring for the SLO guard and metrics."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class RequestTiming:
    model: str
    instance: str  # instance id, or "" when no instance served it
    backend: str  # "iaas" | "faas" | ""
    arrival_s: float  # monotonic time the handler saw the request
    queued_s: float  # time in the front end before dispatch (validation, routing)
    upstream_s: float  # time the instance took, as seen by the front end
    status: int
    attempts: int


class TimingLog:
    """The last ``maxlen`` request timings, plus running totals per model.

    ``observer`` (the front end's metrics, :class:`frontend.metrics.FrontendMetrics`) sees
    every record as it is added; it must be cheap (it runs on the request path).
    """

    def __init__(self, maxlen: int = 100_000) -> None:
        self.records: deque[RequestTiming] = deque(maxlen=maxlen)
        self.count: dict[str, int] = {}
        self.observer: Callable[[RequestTiming], None] | None = None

    def add(self, rec: RequestTiming) -> None:
        self.records.append(rec)
        self.count[rec.model] = self.count.get(rec.model, 0) + 1
        if self.observer is not None:
            self.observer(rec)
