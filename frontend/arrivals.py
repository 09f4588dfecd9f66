"""Arrival counts per model and second, and how worker processes report theirs.

Every front-end process counts the inference requests it receives, per model and per
second of the monotonic clock (shared by all processes of a machine): the control loop's
forecasts read these counts. A worker process publishes its counts, with the fleet
snapshot it follows and its in-flight requests per instance (so a drain knows when an
instance is idle), in a small JSON report file that it rewrites atomically
(:func:`write_report`); the control plane reads every worker's file (:func:`read_reports`).
That file is the seam a shared state store replaces later, as the fleet snapshot is.

Memory is bounded: a counter keeps the last ``keep_s`` seconds.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mark.core.state import CountPublisher

log = logging.getLogger(__name__)


class ArrivalCounter:
    """Requests per (model, second); seconds are ``int(time.monotonic())`` unless given."""

    def __init__(self, models: Iterable[str], keep_s: int = 300) -> None:
        self.keep_s = keep_s
        self._counts: dict[str, dict[int, int]] = {m: {} for m in models}
        self._last_trim = 0
        # with a shared state store, every count also goes there (by epoch second)
        self.publisher: CountPublisher | None = None

    def add(self, model: str, n: int = 1, now_s: float | None = None) -> None:
        sec = int(time.monotonic() if now_s is None else now_s)
        per = self._counts.get(model)
        if per is None:
            return  # unknown models are refused before they are counted
        if self.publisher is not None:
            self.publisher.add(model, n)
        per[sec] = per.get(sec, 0) + n
        if sec - self._last_trim >= 10:
            self._trim(sec)

    def add_model(self, model: str) -> None:
        self._counts.setdefault(model, {})

    def remove_model(self, model: str) -> None:
        self._counts.pop(model, None)

    def _trim(self, sec: int) -> None:
        self._last_trim = sec
        oldest = sec - self.keep_s
        for per in self._counts.values():
            for s in [s for s in per if s < oldest]:
                del per[s]

    def seconds(self, model: str) -> dict[int, int]:
        """Counts of ``model`` by second (a copy)."""
        return dict(self._counts.get(model, {}))

    def export(self) -> dict[str, dict[str, int]]:
        return {m: {str(s): n for s, n in per.items()} for m, per in self._counts.items()}


@dataclass
class WorkerReport:
    """What one worker process publishes: its counts, in-flight requests per instance, and
    the sequence number of the fleet snapshot it has applied."""

    pid: int
    seq: int
    counts: dict[str, dict[int, int]] = field(default_factory=dict)
    inflight: dict[str, int] = field(default_factory=dict)
    written_at_s: float = 0.0  # monotonic
    faas_usd: float = 0.0  # what this process's FaaS invocations cost so far


def write_report(path: Path, counter: ArrivalCounter, seq: int,
                 inflight: Mapping[str, int], faas_usd: float = 0.0) -> None:
    """Atomically replace ``path`` with this process's report."""
    doc = {"pid": os.getpid(), "seq": seq, "counts": counter.export(),
           "inflight": {k: v for k, v in inflight.items() if v}, "written_at_s": time.monotonic(),
           "faas_usd": faas_usd}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def read_reports(directory: Path) -> list[WorkerReport]:
    """Every worker's last report in ``directory`` (unreadable ones are logged and skipped)."""
    out: list[WorkerReport] = []
    if not directory.is_dir():
        return out
    for p in directory.glob("*.json"):
        try:
            d: dict[str, Any] = json.loads(p.read_text())
            out.append(WorkerReport(
                pid=int(d["pid"]), seq=int(d["seq"]),
                counts={m: {int(s): int(n) for s, n in per.items()}
                        for m, per in d.get("counts", {}).items()},
                inflight={str(k): int(v) for k, v in d.get("inflight", {}).items()},
                written_at_s=float(d.get("written_at_s", 0.0)),
                faas_usd=float(d.get("faas_usd", 0.0)),
            ))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("cannot read worker report %s: %s", p, exc)
    return out
