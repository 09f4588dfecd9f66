"""The in-process state store: one process's truth, and the fast fake for tests.

Documents are stored as JSON text, so what comes out equals what a Redis store would return
(and no caller can mutate what another reads). Expiry (reports, the leader lock, batch ids,
count hours) is checked against the injected epoch clock ``time_s``; counts live in per-model
per-hour buckets pruned once past the retention, so memory stays bounded.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from mark.core.config import StateConfig
from mark.core.state.base import (
    BATCH_TTL_S,
    DEFAULT_RETENTION_S,
    HOUR_S,
    StateStore,
    register_state_store,
)


def _dump(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"))


class MemoryStateStore:
    """A :class:`~mark.core.state.base.StateStore` held in this process's memory."""

    url = "memory://"

    def __init__(self, retention_s: float = DEFAULT_RETENTION_S,
                 time_s: Callable[[], float] = time.time) -> None:
        self.retention_s = retention_s
        self._time_s = time_s
        self._models: dict[str, str] = {}
        self._models_version = 0
        self._fleet: str | None = None
        self._fleet_seq = 0
        self._plans: dict[str, str] = {}
        # model -> hour -> second -> count
        self._counts: dict[str, dict[int, dict[int, int]]] = {}
        self._batches: dict[str, float] = {}  # batch id -> expiry (epoch s)
        self._reports: dict[str, tuple[float, str]] = {}  # worker -> (expiry, doc)
        self._views: dict[str, str] = {}
        self._commands: deque[str] = deque()
        self._leader: tuple[str, float] | None = None  # (owner, expiry)

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def healthy(self) -> bool:
        return True

    # models registry
    async def get_models(self) -> dict[str, dict[str, Any]]:
        return {name: json.loads(doc) for name, doc in self._models.items()}

    async def put_model(self, name: str, doc: dict[str, Any]) -> int:
        self._models[name] = _dump(doc)
        self._models_version += 1
        return self._models_version

    async def delete_model(self, name: str) -> int:
        self._models.pop(name, None)
        self._plans.pop(name, None)
        self._models_version += 1
        return self._models_version

    async def models_version(self) -> int:
        return self._models_version

    # fleet snapshot
    async def put_fleet(self, snap: dict[str, Any]) -> None:
        seq = int(snap["seq"])
        self._fleet = _dump(snap)
        self._fleet_seq = seq

    async def get_fleet(self) -> dict[str, Any] | None:
        return None if self._fleet is None else json.loads(self._fleet)

    async def fleet_seq(self) -> int:
        return self._fleet_seq

    # serving plans
    async def put_plan(self, model: str, doc: dict[str, Any]) -> None:
        self._plans[model] = _dump(doc)

    async def get_plans(self) -> dict[str, dict[str, Any]]:
        return {m: json.loads(doc) for m, doc in self._plans.items()}

    # arrival counts
    async def add_counts(self, batch_id: str, counts: dict[str, dict[int, int]]) -> None:
        now = self._time_s()
        self._prune(now)
        if batch_id in self._batches:
            return
        self._batches[batch_id] = now + BATCH_TTL_S
        oldest = int(now - self.retention_s)
        for model, per_s in counts.items():
            hours = self._counts.setdefault(model, {})
            for second, n in per_s.items():
                s = int(second)
                if s < oldest or not n:
                    continue
                bucket = hours.setdefault(s // HOUR_S, {})
                bucket[s] = bucket.get(s, 0) + int(n)

    async def counts(self, model: str, start_s: int, end_s: int) -> dict[int, int]:
        start = max(int(start_s), int(self._time_s() - self.retention_s))
        hours = self._counts.get(model, {})
        out: dict[int, int] = {}
        for hour in range(start // HOUR_S, (int(end_s) - 1) // HOUR_S + 1):
            for s, n in hours.get(hour, {}).items():
                if start <= s < end_s:
                    out[s] = n
        return dict(sorted(out.items()))

    def _prune(self, now: float) -> None:
        """Forget batch ids past their expiry and count hours wholly past the retention."""
        for bid in [b for b, exp in self._batches.items() if exp <= now]:
            del self._batches[bid]
        last_dead_hour = int(now - self.retention_s) // HOUR_S - 1
        for model in list(self._counts):
            hours = self._counts[model]
            for hour in [h for h in hours if h <= last_dead_hour]:
                del hours[hour]
            if not hours:
                del self._counts[model]

    # worker reports
    async def put_report(self, worker_id: str, doc: dict[str, Any], ttl_s: float) -> None:
        now = self._time_s()
        self._reports[worker_id] = (now + ttl_s, _dump(doc))
        self._prune_reports(now)

    async def reports(self) -> list[dict[str, Any]]:
        self._prune_reports(self._time_s())
        out = []
        for worker_id in sorted(self._reports):
            doc = json.loads(self._reports[worker_id][1])
            doc.setdefault("worker_id", worker_id)
            out.append(doc)
        return out

    def _prune_reports(self, now: float) -> None:
        for w in [w for w, (exp, _) in self._reports.items() if exp <= now]:
            del self._reports[w]

    # views
    async def put_view(self, name: str, doc: Any) -> None:
        self._views[name] = _dump(doc)

    async def get_view(self, name: str) -> Any | None:
        doc = self._views.get(name)
        return None if doc is None else json.loads(doc)

    # commands
    async def push_command(self, doc: dict[str, Any]) -> None:
        self._commands.append(_dump(doc))

    async def pop_commands(self, max_n: int = 100) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while self._commands and len(out) < max_n:
            out.append(json.loads(self._commands.popleft()))
        return out

    # leader election
    async def acquire_leader(self, owner: str, ttl_s: float) -> bool:
        now = self._time_s()
        holder = self._current_leader(now)
        if holder is None or holder == owner:
            self._leader = (owner, now + ttl_s)
            return True
        return False

    async def release_leader(self, owner: str) -> None:
        if self._current_leader(self._time_s()) == owner:
            self._leader = None

    async def leader(self) -> str | None:
        return self._current_leader(self._time_s())

    def _current_leader(self, now: float) -> str | None:
        if self._leader is not None and self._leader[1] <= now:
            self._leader = None
        return None if self._leader is None else self._leader[0]


@register_state_store("memory")
def _memory(cfg: StateConfig, *, retention_s: float = DEFAULT_RETENTION_S) -> StateStore:
    return MemoryStateStore(retention_s=retention_s)
