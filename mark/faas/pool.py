"""One function's sandboxes: reuse, cold starts, the concurrency limit, expiry, counters.

An invocation takes an idle warm sandbox first (the one used last: Lambda keeps reusing the
warmest), else starts a new one if the function has fewer than ``concurrency`` sandboxes
(starting, busy and idle together), else it is throttled at once, as Lambda's reserved
concurrency throttles. An idle sandbox expires ``keep_alive_s`` after its last invocation
(:meth:`FunctionPool.expire`). A sandbox that timed out or died is killed, never reused.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from mark.faas.lambda_api import Report, function_error, timeout_message
from mark.faas.sandbox import Sandbox, SandboxFailed

INIT_TIMEOUT_FLOOR_S = 10.0  # Lambda's init phase may take 10 s whatever the timeout


class PoolClosed(Exception):
    """The runtime stopped while an invocation waited for a sandbox."""


@dataclass
class FunctionStats:
    """Counters since the runtime started (``billed_ms``: the sum of Billed Duration)."""

    invocations: int = 0
    cold_starts: int = 0
    throttles: int = 0
    errors: int = 0  # function errors, timeouts included
    timeouts: int = 0
    billed_ms: int = 0
    init_ms: float = 0.0  # the sum of Init Duration over cold starts


@dataclass(frozen=True, slots=True)
class Outcome:
    """An invocation's answer: the body (result or function error) and its REPORT."""

    body: bytes
    function_error: bool
    report: Report
    log: str  # what the handler wrote (plus Lambda's error lines)


@dataclass(eq=False)
class Lease:
    """The right to run one invocation: a warm sandbox, or (None) a slot for a new one."""

    sandbox: Sandbox | None


class FunctionPool:
    """The sandboxes of function ``name`` serving model ``model``.

    ``env``: the workers' environment (the configuration, Lambda's variables).
    """

    def __init__(self, name: str, model: str, env: dict[str, str], *, memory_mb: int,
                 concurrency: int, keep_alive_s: float, timeout_s: float) -> None:
        self.name = name
        self.model = model
        self.env = env
        self.memory_mb = memory_mb
        self.concurrency = concurrency
        self.keep_alive_s = keep_alive_s
        self.timeout_s = timeout_s
        self.stats = FunctionStats()
        self.idle: list[Sandbox] = []  # most recently used last
        self.busy: set[Sandbox] = set()
        self.starting = 0
        self._changed = asyncio.Condition()
        self._closed = False

    @property
    def size(self) -> int:
        return len(self.idle) + len(self.busy) + self.starting

    def take(self) -> Lease | None:
        """A lease now, or None when every sandbox is busy at the concurrency limit."""
        if self._closed:
            return None
        while self.idle:
            sandbox = self.idle.pop()
            if sandbox.alive:  # one that died idle (killed from outside) is just dropped
                self.busy.add(sandbox)
                return Lease(sandbox)
        if self.size < self.concurrency:
            self.starting += 1
            return Lease(None)
        return None

    async def wait_take(self) -> Lease:
        """A lease as soon as one is free (for Event invocations, which Lambda queues)."""
        async with self._changed:
            while (lease := self.take()) is None:
                if self._closed:
                    raise PoolClosed(f"function {self.name!r} is shut down")
                await self._changed.wait()
            return lease

    async def release(self, lease: Lease) -> None:
        """Give a lease back unused (e.g. its body was refused)."""
        await self._give_back(lease)

    async def _give_back(self, lease: Lease) -> None:
        sandbox = lease.sandbox
        if sandbox is None:
            self.starting -= 1
        else:
            self.busy.discard(sandbox)
            if sandbox.alive and not self._closed:
                self.idle.append(sandbox)
            else:
                await sandbox.kill()
        async with self._changed:
            self._changed.notify()

    async def run(self, lease: Lease, request_id: str, payload: bytes, arn: str) -> Outcome:
        """Run one invocation on ``lease`` (starting its sandbox first: a cold start), count
        it, and give the lease back."""
        stats = self.stats
        stats.invocations += 1
        init_ms: float | None = None
        try:
            if lease.sandbox is None:
                stats.cold_starts += 1
                init_timeout_s = max(INIT_TIMEOUT_FLOOR_S, self.timeout_s)
                try:
                    sandbox = await Sandbox.start(self.name, self.env, init_timeout_s)
                except SandboxFailed as exc:
                    return self._failed(request_id, exc, exc.init_ms, None)
                self.starting -= 1
                self.busy.add(sandbox)
                lease.sandbox = sandbox
                init_ms = sandbox.init_ms
                stats.init_ms += init_ms
            header = {"id": request_id, "arn": arn,
                      "deadline_ms": int((time.time() + self.timeout_s) * 1000)}
            try:
                reply = await lease.sandbox.invoke(header, payload, self.timeout_s)
            except SandboxFailed as exc:
                return self._failed(request_id, exc, init_ms, lease.sandbox)
            report = Report(request_id, reply.duration_ms, self.memory_mb, reply.max_rss_mb,
                            init_ms)
            stats.billed_ms += report.billed_ms
            if reply.error is None:
                return Outcome(reply.result, False, report, reply.log)
            stats.errors += 1
            err = reply.error
            body = function_error(str(err.get("errorType")), str(err.get("errorMessage")),
                                  list(err.get("stackTrace") or []))
            return Outcome(body, True, report, reply.log)
        finally:
            await self._give_back(lease)

    def _failed(self, request_id: str, exc: SandboxFailed, init_ms: float | None,
                sandbox: Sandbox | None) -> Outcome:
        """The outcome of a sandbox that timed out, died or failed its init."""
        self.stats.errors += 1
        message = exc.message
        if exc.timed_out and sandbox is not None:  # the invocation ran to its timeout
            self.stats.timeouts += 1
            message = timeout_message(request_id, self.timeout_s)
            duration_ms = self.timeout_s * 1000.0
        else:
            if exc.timed_out:
                self.stats.timeouts += 1
            message = f"RequestId: {request_id} Error: {message}"
            duration_ms = 0.0
        report = Report(request_id, duration_ms, self.memory_mb, 0,
                        exc.init_ms if sandbox is None else init_ms)
        self.stats.billed_ms += report.billed_ms
        log = f"{message}\n"
        return Outcome(function_error(exc.error_type, message, exc.stack), True, report, log)

    async def expire(self, now: float | None = None) -> int:
        """Kill idle sandboxes unused for ``keep_alive_s``; how many expired."""
        now = time.monotonic() if now is None else now
        old = [s for s in self.idle if now - s.last_used >= self.keep_alive_s]
        if not old:
            return 0
        self.idle = [s for s in self.idle if s not in old]
        await asyncio.gather(*(s.kill() for s in old))
        async with self._changed:
            self._changed.notify_all()
        return len(old)

    async def close(self) -> None:
        """Kill every sandbox; waiting Event invocations give up."""
        self._closed = True
        sandboxes = [*self.idle, *self.busy]
        self.idle.clear()
        await asyncio.gather(*(s.kill() for s in sandboxes))
        async with self._changed:
            self._changed.notify_all()

    def to_json(self) -> dict[str, Any]:
        """The counters, the sandbox counts (``busy`` includes starting ones) and each started
        sandbox's id, pid, state and invocations."""
        sandboxes = [{"id": s.id, "pid": s.proc.pid, "state": state,
                      "invocations": s.invocations}
                     for state, group in (("busy", self.busy), ("idle", self.idle))
                     for s in group]
        return {**asdict(self.stats), "model": self.model, "memory_mb": self.memory_mb,
                "concurrency": self.concurrency, "busy": len(self.busy) + self.starting,
                "idle": len(self.idle), "sandboxes": sandboxes}


def new_request_id() -> str:
    return str(uuid.uuid4())
