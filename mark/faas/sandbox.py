"""The runtime's side of a sandbox: one worker process (:mod:`mark.faas.worker`) and its pipes.

All process I/O is asyncio pipes, so the runtime's event loop never waits on a sandbox. A
sandbox is started in its own session and with ``PR_SET_PDEATHSIG`` (``with_pdeathsig``), so
none outlives the runtime even when the runtime is killed; :meth:`Sandbox.kill` kills its
process group and reaps it. A sandbox that times out, dies or breaks the frame protocol is
killed and never reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from mark.backends.local import with_pdeathsig
from mark.faas.worker import FRAME, MAX_HEADER_BYTES, RESPONSE_LIMIT

_REPO_ROOT = Path(__file__).resolve().parents[2]  # the worker imports our packages from here
_ids = itertools.count(1)


class SandboxFailed(Exception):
    """The sandbox cannot answer: ``error_type`` and message as Lambda would report them.

    ``timed_out``: it ran past its limit (and was killed). ``init_ms``: how long its init
    phase ran, when it failed there.
    """

    def __init__(self, error_type: str, message: str, *, stack: list[str] | None = None,
                 timed_out: bool = False, init_ms: float | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.stack = stack or []
        self.timed_out = timed_out
        self.init_ms = init_ms


@dataclass(frozen=True, slots=True)
class Reply:
    """One invocation's answer from the worker."""

    result: bytes  # the handler's result as JSON (empty on error)
    error: dict[str, Any] | None  # {"errorType", "errorMessage", "stackTrace"}
    log: str  # what the handler wrote, its tail
    duration_ms: float  # the handler's own time, measured in the worker
    max_rss_mb: int


@dataclass(eq=False)
class Sandbox:
    """A started worker; ``last_used`` is a ``time.monotonic`` reading."""

    function: str
    proc: asyncio.subprocess.Process
    init_ms: float
    id: str = field(default_factory=lambda: f"sb-{next(_ids)}")
    last_used: float = field(default_factory=time.monotonic)
    invocations: int = 0

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    @classmethod
    async def start(cls, function: str, env: dict[str, str], init_timeout_s: float) -> Sandbox:
        """Start a worker and wait for its init phase; ``SandboxFailed`` (the worker killed)
        when it fails or outlasts ``init_timeout_s``."""
        env = dict(env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO_ROOT), env.get("PYTHONPATH"))
                                            if p)
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *with_pdeathsig([sys.executable, "-m", "mark.faas.worker"]),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
            start_new_session=True, limit=1 << 20,
        )
        sandbox = cls(function, proc, 0.0)
        try:
            header, _ = await asyncio.wait_for(sandbox._read_frame(), init_timeout_s)
        except TimeoutError:
            await sandbox.kill()
            raise SandboxFailed("Sandbox.Timedout", f"Init timed out after "
                                f"{init_timeout_s:.2f} seconds", timed_out=True,
                                init_ms=init_timeout_s * 1000.0) from None
        except BaseException:
            await sandbox.kill()
            raise
        sandbox.init_ms = (time.perf_counter() - t0) * 1000.0
        if not header.get("ready"):
            await sandbox.kill()
            err = header.get("error") or {}
            raise SandboxFailed(str(err.get("errorType", "Runtime.Unknown")),
                                str(err.get("errorMessage", "init failed")),
                                stack=list(err.get("stackTrace") or []), init_ms=sandbox.init_ms)
        return sandbox

    async def _read_frame(self) -> tuple[dict[str, Any], bytes]:
        out = self.proc.stdout
        assert out is not None
        try:
            hlen, plen = FRAME.unpack(await out.readexactly(FRAME.size))
            if hlen > MAX_HEADER_BYTES or plen > RESPONSE_LIMIT:
                raise SandboxFailed("Runtime.ExitError", f"sandbox {self.id} broke the frame "
                                    f"protocol ({hlen} header, {plen} payload bytes)")
            header = orjson.loads(await out.readexactly(hlen))
            payload = await out.readexactly(plen)
        except (asyncio.IncompleteReadError, ConnectionError):
            code = await self.proc.wait()
            how = (f"signal: {(signal.strsignal(-code) or str(-code)).lower()}" if code < 0
                   else f"exit status {code}")
            raise SandboxFailed("Runtime.ExitError",
                                f"Runtime exited with error: {how}") from None
        except orjson.JSONDecodeError:
            raise SandboxFailed("Runtime.ExitError", f"sandbox {self.id} sent a frame header "
                                f"that is not JSON") from None
        return header, payload

    async def invoke(self, header: dict[str, Any], payload: bytes, timeout_s: float) -> Reply:
        """Run one invocation. ``SandboxFailed`` when it outlasts ``timeout_s``
        (``Sandbox.Timedout``), dies or breaks the protocol; the sandbox is killed then, and
        also when the caller is cancelled mid-invocation."""
        stdin = self.proc.stdin
        assert stdin is not None
        self.invocations += 1
        try:
            head = orjson.dumps(header)
            stdin.write(FRAME.pack(len(head), len(payload)) + head)
            stdin.write(payload)
            reply, result = await asyncio.wait_for(self._exchange(), timeout_s)
        except TimeoutError:
            await self.kill()
            raise SandboxFailed("Sandbox.Timedout", "", timed_out=True) from None
        except BaseException:  # failed, cancelled: the worker's state is unknown
            await self.kill()
            raise
        self.last_used = time.monotonic()
        return Reply(result, reply.get("error"), str(reply.get("log", "")),
                     float(reply.get("duration_ms", 0.0)), int(reply.get("max_rss_mb", 0)))

    async def _exchange(self) -> tuple[dict[str, Any], bytes]:
        stdin = self.proc.stdin
        assert stdin is not None
        with contextlib.suppress(ConnectionError):  # the worker died: reading says how
            await stdin.drain()
        return await self._read_frame()

    async def kill(self) -> None:
        """Kill the worker's process group and reap it (idempotent)."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        with contextlib.suppress(Exception):
            await self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
