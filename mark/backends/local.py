"""The ``local`` backend: each instance is a real ``tritonserver`` process on loopback.

Processes are started in their own session (so a terminal's Ctrl-C reaches only ``mark``,
which then stops them in order) with ``PR_SET_PDEATHSIG`` = SIGKILL, so that no instance
outlives a parent that crashed or was killed. Terminating signals the whole process group
(tritonserver and its Python-backend stubs), waits, then kills, and always reaps.

How children get both without a ``preexec_fn`` (which runs Python between fork and exec in
the child of a threaded parent, where the docs warn it can deadlock): the new session comes
from ``start_new_session=True`` (``setsid`` in C, in the child), and the death signal from
exec'ing the command through a tiny wrapper (:func:`with_pdeathsig`): a fresh, isolated
interpreter that calls ``prctl(PR_SET_PDEATHSIG)`` and execs the command in place, keeping
its pid, session and file descriptors. The signal setting survives exec. The wrapper costs
one interpreter start (~20 ms) per launch.

Ports: :func:`free_port` never hands the same port out twice in one process (until
:func:`release_port`), so concurrent launches cannot collide with each other; and an
instance whose Triton exits while starting because something else took its port meanwhile
is relaunched on another port (at most ``_PORT_RETRIES`` times).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import aiohttp

from mark.backends.base import ExitCallback, LaunchSpec, register_backend
from mark.core.clock import Clock, WallClock
from mark.core.config import MarkConfig, ModelConfig
from mark.core.errors import ServiceUnavailable
from mark.core.instances import Instance, InstanceState, Market
from mark.models.repository import write_model_repository
from mark.triton_dist import prepare_triton

log = logging.getLogger(__name__)

_REPO_ROOT = Path(__file__).resolve().parents[2]  # model.py imports our packages from here
_PORT_RETRIES = 3  # relaunches of an instance whose port was taken before Triton bound it

# argv: signal number, the pid of the parent that must still be alive, the command.
# PR_SET_PDEATHSIG = 1. The pid check closes the race where the parent died before prctl.
_PDEATHSIG_WRAPPER = """\
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(1, int(sys.argv[1]), 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_PDEATHSIG) failed: " + os.strerror(ctypes.get_errno()))
if os.getppid() != int(sys.argv[2]):
    os._exit(1)
os.execvp(sys.argv[3], sys.argv[3:])
"""


def with_pdeathsig(argv: Sequence[str], sig: int = signal.SIGKILL) -> list[str]:
    """``argv`` wrapped so the command gets ``sig`` when the process that starts it dies.

    Run the result with ``start_new_session=True`` for the own session. "Dies" is the
    kernel's notion: the thread that forked the child exits.
    """
    return [sys.executable, "-I", "-S", "-c", _PDEATHSIG_WRAPPER, str(int(sig)),
            str(os.getpid()), *argv]


_reserved_ports: set[int] = set()
_ports_lock = threading.Lock()  # launches run on several event loops' threads in tests


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now and not handed out before by this process (see :func:`release_port`).

    The caller binds it later, so another process may still take it in between; launches
    check for that (see ``LocalBackend``).
    """
    with _ports_lock:
        for _ in range(1000):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((host, 0))
                port = int(s.getsockname()[1])
            if port not in _reserved_ports:
                _reserved_ports.add(port)
                return port
    raise OSError(f"no free port on {host} that this process has not handed out already")


def release_port(port: int) -> None:
    """Let :func:`free_port` hand ``port`` out again (its user no longer binds it)."""
    with _ports_lock:
        _reserved_ports.discard(port)


def _open_log(path: Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab")


class LocalBackend:
    """Launch Triton processes serving ``models`` from a repository under ``runtime_dir``."""

    name = "local"

    def __init__(
        self,
        runtime_dir: Path,
        models: list[ModelConfig],
        clock: Clock | None = None,
        on_exit: ExitCallback | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.runtime_dir = Path(runtime_dir).resolve()
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        self.models = list(models)
        self.clock = clock or WallClock()
        self.on_exit = on_exit
        self.host = host
        self._dist = prepare_triton(self.runtime_dir)
        self._repo = write_model_repository(self.runtime_dir / "model_repository", self.models)
        self._ids = itertools.count(1)
        self._instances: dict[str, Instance] = {}
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
        return self._session

    def pid(self, instance_id: str) -> int | None:
        proc = self._procs.get(instance_id)
        return proc.pid if proc else None

    async def launch(self, spec: LaunchSpec) -> Instance:
        iid = f"local-{os.getpid()}-{next(self._ids)}"
        log_path = self.runtime_dir / "logs" / f"{iid}.log"
        inst = Instance(
            id=iid,
            url="",
            instance_type=spec.instance_type,
            market=spec.market if isinstance(spec.market, Market) else Market(spec.market),
            state=InstanceState.PENDING,
            launched_at_s=self.clock.now(),
            models=spec.models or tuple(m.name for m in self.models),
            extra={"log": str(log_path)},
        )
        self._instances[iid] = inst
        proc = await self._start(inst)
        self._watchers[iid] = asyncio.create_task(self._watch(inst))
        log.info("launched %s pid=%d at %s (log %s)", iid, proc.pid, inst.url, log_path)
        return inst

    async def _start(self, inst: Instance) -> asyncio.subprocess.Process:
        """Start (or restart) ``inst``'s Triton on a fresh port; sets its url and pid."""
        port = free_port(self.host)
        logf = await asyncio.to_thread(_open_log, Path(inst.extra["log"]))
        args = [
            str(self._dist.binary),
            f"--model-repository={self._repo}",
            f"--backend-directory={self._dist.backend_dir}",
            f"--cache-directory={self._dist.cache_dir}",
            f"--http-address={self.host}",
            f"--http-port={port}",
            "--allow-grpc=false",
            "--allow-metrics=false",
            "--exit-on-error=true",
            "--log-verbose=0",
            # keep-alive connections from the front end would hold a graceful exit for 30 s
            "--exit-timeout-secs=2",
        ]
        with logf:
            inst.extra["log_offset"] = logf.tell()  # where this start's output begins
            try:
                proc = await asyncio.create_subprocess_exec(
                    *with_pdeathsig(args),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=logf,
                    stderr=asyncio.subprocess.STDOUT,
                    env=self._dist.env(pythonpath=[str(_REPO_ROOT)]),
                    start_new_session=True,
                )
            except BaseException:
                release_port(port)
                raise
        inst.url = f"http://{self.host}:{port}"
        inst.extra.update(pid=proc.pid, port=port)
        self._procs[inst.id] = proc
        return proc

    def _port_was_taken(self, inst: Instance) -> bool:
        """Whether the last start of ``inst`` failed because its port was in use."""
        try:
            with open(inst.extra["log"], "rb") as f:
                f.seek(inst.extra.get("log_offset", 0))
                text = f.read().decode(errors="replace")
        except OSError:
            return False
        return "already in use" in text

    async def _watch(self, inst: Instance) -> None:
        relaunches = 0
        while True:
            proc = self._procs[inst.id]
            code = await proc.wait()
            release_port(inst.extra["port"])
            if (inst.state == InstanceState.PENDING and relaunches < _PORT_RETRIES
                    and await asyncio.to_thread(self._port_was_taken, inst)):
                relaunches += 1
                log.warning("instance %s: port %d was taken before Triton bound it; relaunching "
                            "on another port", inst.id, inst.extra["port"])
                new = await self._start(inst)
                if inst.state == InstanceState.TERMINATED:  # terminated while we relaunched
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(new.pid, signal.SIGKILL)
                continue
            break
        was = inst.state
        inst.state = InstanceState.TERMINATED
        if was != InstanceState.TERMINATED:
            log.warning("instance %s exited with code %s (state was %s)", inst.id, code, was.value)
            if self.on_exit is not None:
                self.on_exit(inst, code)

    def _log_tail(self, inst: Instance, n: int = 15) -> str:
        try:
            lines = Path(inst.extra["log"]).read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    async def wait_ready(self, instance_id: str, timeout_s: float) -> Instance:
        inst = self._instances[instance_id]
        deadline = self.clock.now() + timeout_s
        while True:
            if inst.state == InstanceState.TERMINATED:
                raise ServiceUnavailable(
                    f"instance {instance_id} exited before it was ready; log tail:\n"
                    + self._log_tail(inst)
                )
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with self._http().get(f"{inst.url}/v2/health/ready") as resp:
                    if resp.status == 200:
                        inst.state = InstanceState.READY
                        inst.ready_at_s = self.clock.now()
                        log.info("instance %s ready after %.1f s", instance_id,
                                 inst.ready_at_s - inst.launched_at_s)
                        return inst
            if self.clock.now() > deadline:
                await self.terminate(instance_id)
                raise ServiceUnavailable(
                    f"instance {instance_id} not ready within {timeout_s:.0f} s; log tail:\n"
                    + self._log_tail(inst)
                )
            await asyncio.sleep(0.2)

    async def terminate(self, instance_id: str) -> None:
        inst = self._instances.get(instance_id)
        proc = self._procs.get(instance_id)
        if inst is None or proc is None:
            return
        inst.state = InstanceState.TERMINATED
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=10)
            except TimeoutError:
                log.warning("instance %s ignored SIGTERM; killing", instance_id)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        # the group may still hold Python-backend stubs
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        watcher = self._watchers.pop(instance_id, None)
        if watcher is not None:
            await asyncio.gather(watcher, return_exceptions=True)
        log.info("terminated %s", instance_id)

    async def close(self) -> None:
        await asyncio.gather(*(self.terminate(i) for i in list(self._procs)))
        if self._session is not None:
            await self._session.close()


@register_backend("local")
def _local(cfg: MarkConfig, on_exit: ExitCallback | None) -> LocalBackend:
    return LocalBackend(cfg.runtime_dir, cfg.models, on_exit=on_exit)
