"""The ``local`` backend: each instance is a real ``tritonserver`` process on loopback.

Processes are started in their own session (so a terminal's Ctrl-C reaches only ``mark``,
which then stops them in order) under a wrapper with ``PR_SET_PDEATHSIG`` that kills the
session's whole process group (tritonserver and its Python-backend stubs) when its parent
dies, so that no instance outlives a parent that crashed or was killed
(:func:`with_group_pdeathsig`). Terminating signals the whole process group, waits, then
kills, and always reaps.

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

The cloud, emulated: each launch gets the model repository of its variant (instance type,
batching settings; see :func:`mark.models.repository.variant_repository`), so a ``profiled``
model takes its instance type's service times. ``wait_ready`` reports READY no earlier than
``launched_at + ready_after`` (the spec's ``ready_after_s``, else ``launch_delay_s``: the
boot a cloud instance takes) and never before Triton itself is ready. A SPOT instance of a
type the catalogue prices gets an interruption notice after an exponential time at the
catalogue's interruption rate times ``spot_interruption_scale`` (or when ``notice`` asks):
its state becomes NOTICE, ``on_notice(instance, reclaim_at)`` is told, and at ``reclaim_at``
(``spot_notice_s`` later, default the catalogue's notice) its processes are killed and
``on_exit`` is told. All times are on the backend's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import aiohttp

from mark.backends.base import ExitCallback, LaunchSpec, NoticeCallback, register_backend, spot_to_notice
from mark.core.catalogue import Catalogue, SpotModel, load_catalogue
from mark.core.clock import Clock, WallClock
from mark.core.config import MarkConfig, ModelConfig
from mark.core.errors import ConfigError, Conflict, NotFound, ServiceUnavailable
from mark.core.instances import Instance, InstanceState, Market
from mark.models.repository import variant_repository
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


# argv: the pid of the parent that must still be alive, the command. The wrapper stays as
# the process group's leader (run with start_new_session=True): when the parent dies (the
# death signal, SIGHUP here) it kills the whole group, the command's own children too. It
# lets SIGTERM/SIGINT (sent to the group) reach the command, waits for it and exits as it
# did (re-raising the signal that ended it). The command dies with it (SIGKILL as its own
# death signal), should the wrapper be killed.
_GROUP_WRAPPER = """\
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
def die(*_):
    os.killpg(os.getpgrp(), signal.SIGKILL)
signal.signal(signal.SIGHUP, die)
if libc.prctl(1, int(signal.SIGHUP), 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_PDEATHSIG) failed: " + os.strerror(ctypes.get_errno()))
if os.getppid() != int(sys.argv[1]):
    die()
for s in (signal.SIGTERM, signal.SIGINT):
    signal.signal(s, lambda *_: None)
me = os.getpid()
pid = os.fork()
if pid == 0:
    for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(s, signal.SIG_DFL)
    if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) != 0 or os.getppid() != me:
        os._exit(1)
    os.execvp(sys.argv[2], sys.argv[2:])
_, status = os.waitpid(pid, 0)
code = os.waitstatus_to_exitcode(status)
if code < 0:
    signal.signal(-code, signal.SIG_DFL)
    os.kill(me, -code)
sys.exit(code)
"""


def with_group_pdeathsig(argv: Sequence[str]) -> list[str]:
    """``argv`` under a wrapper that kills its whole process group when the process that
    starts it dies, so processes the command starts die too (Triton's Python-backend stubs
    do not get Triton's death signal, and one waiting on a Triton killed mid-request waited
    for ever). Run the result with ``start_new_session=True``; the wrapper's pid is the
    group's. One small interpreter (~10 MB) stays per command."""
    return [sys.executable, "-I", "-S", "-c", _GROUP_WRAPPER, str(os.getpid()), *argv]


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


def reap_orphan_stubs(backend_dir: Path) -> list[int]:
    """Kill the Python-backend stubs of ``backend_dir`` whose Triton is gone; their pids.

    Triton starts a stub process per model instance (in Triton's process group, without the
    death signal): when Triton is killed (its parent was, and ``PR_SET_PDEATHSIG`` took it)
    while a stub waits on it mid-request, that stub waits for ever. A backend starting on the
    same runtime directory (the provisioner restarted) ends them. A stub whose parent is a
    live ``tritonserver`` belongs to a running instance and is left alone."""
    prefix = str(backend_dir) + os.sep
    killed: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return killed
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
            if not argv0.startswith(prefix):
                continue
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        try:
            parent = Path(f"/proc/{ppid}/cmdline").read_bytes().split(b"\0", 1)[0]
        except OSError:
            parent = b""
        if parent.endswith(b"tritonserver"):
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(entry.name), signal.SIGKILL)
            killed.append(int(entry.name))
    return killed


def _open_log(path: Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab")


class LocalBackend:
    """Launch Triton processes serving ``models`` from repositories under ``runtime_dir``.

    ``launch_delay_s``: the emulated boot of a launch whose spec leaves ``ready_after_s``
    unset (0 here; the ``local`` factory passes ``fleet.launch_delay_s``).
    ``spot_interruption_scale`` multiplies the catalogue's spot interruption rates (0: notices
    only on request); ``spot_notice_s`` is the time from a notice to the reclaim (None: the
    catalogue's). ``seed`` seeds the draws of interruption times.
    """

    name = "local"

    def __init__(
        self,
        runtime_dir: Path,
        models: list[ModelConfig],
        clock: Clock | None = None,
        on_exit: ExitCallback | None = None,
        host: str = "127.0.0.1",
        *,
        on_notice: NoticeCallback | None = None,
        launch_delay_s: float = 0.0,
        spot_interruption_scale: float = 1.0,
        spot_notice_s: float | None = None,
        catalogue: Catalogue | None = None,
        seed: int | None = None,
    ) -> None:
        if launch_delay_s < 0 or spot_interruption_scale < 0:
            raise ConfigError(f"launch_delay_s ({launch_delay_s}) and spot_interruption_scale "
                              f"({spot_interruption_scale}) must be >= 0")
        if spot_notice_s is not None and spot_notice_s <= 0:
            raise ConfigError(f"spot_notice_s must be > 0 (got {spot_notice_s})")
        self.runtime_dir = Path(runtime_dir).resolve()
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        self.models = list(models)
        self.clock = clock or WallClock()
        self.on_exit = on_exit
        self.on_notice = on_notice
        self.host = host
        self.launch_delay_s = launch_delay_s
        self.spot_interruption_scale = spot_interruption_scale
        self.spot_notice_s = spot_notice_s
        self.catalogue = catalogue or load_catalogue()
        self._rng = random.Random(seed)
        self._dist = prepare_triton(self.runtime_dir)
        reaped = reap_orphan_stubs(self._dist.backend_dir)
        if reaped:
            log.warning("killed %d Python-backend stub(s) an earlier process left behind in %s "
                        "(their Triton is gone): pids %s", len(reaped), self.runtime_dir, reaped)
        self._repos_root = self.runtime_dir / "model_repository"
        self._ids = itertools.count(1)
        self._instances: dict[str, Instance] = {}
        self._procs: dict[str, asyncio.subprocess.Process] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        # per instance: the pending interruption (spot) and the pending reclaim (after a notice)
        self._interruptions: dict[str, asyncio.Task[None]] = {}
        self._reclaims: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
        return self._session

    def pid(self, instance_id: str) -> int | None:
        proc = self._procs.get(instance_id)
        return proc.pid if proc else None

    def serve_models(self, models: Sequence[ModelConfig]) -> None:
        self.models = list(models)

    def _models_of(self, spec: LaunchSpec) -> list[ModelConfig]:
        if not spec.models:
            return self.models
        by_name = {m.name: m for m in self.models}
        unknown = [n for n in spec.models if n not in by_name]
        if unknown:
            raise ConfigError(f"launch asks for unknown models {unknown}; this backend serves "
                              f"{sorted(by_name)}")
        return [by_name[n] for n in spec.models]

    async def launch(self, spec: LaunchSpec) -> Instance:
        """Start an instance of ``spec``; ``ConfigError`` before anything starts when its
        models cannot be laid out for it (e.g. a ``profiled`` model's profile lacks the type)."""
        if spec.ready_after_s is not None and spec.ready_after_s < 0:
            raise ConfigError(f"ready_after_s must be >= 0 (got {spec.ready_after_s})")
        models = self._models_of(spec)
        repo = await asyncio.to_thread(
            variant_repository, self._repos_root, models, spec.instance_type,
            spec.max_batch_size, spec.max_queue_delay_us,
        )
        iid = f"local-{os.getpid()}-{next(self._ids)}"
        log_path = self.runtime_dir / "logs" / f"{iid}.log"
        ready_after = self.launch_delay_s if spec.ready_after_s is None else spec.ready_after_s
        inst = Instance(
            id=iid,
            url="",
            instance_type=spec.instance_type,
            market=spec.market if isinstance(spec.market, Market) else Market(spec.market),
            state=InstanceState.PENDING,
            launched_at_s=self.clock.now(),
            models=tuple(m.name for m in models),
            extra={"log": str(log_path), "repository": str(repo), "ready_after_s": ready_after},
        )
        self._instances[iid] = inst
        proc = await self._start(inst)
        self._watchers[iid] = asyncio.create_task(self._watch(inst))
        log.info("launched %s (%s, %s) pid=%d at %s (log %s)", iid, inst.instance_type,
                 inst.market.value, proc.pid, inst.url, log_path)
        if inst.market == Market.SPOT:
            self._schedule_interruption(inst)
        return inst

    async def _start(self, inst: Instance) -> asyncio.subprocess.Process:
        """Start (or restart) ``inst``'s Triton on a fresh port; sets its url and pid."""
        port = free_port(self.host)
        logf = await asyncio.to_thread(_open_log, Path(inst.extra["log"]))
        args = [
            str(self._dist.binary),
            f"--model-repository={inst.extra['repository']}",
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
                    *with_group_pdeathsig(args),
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
        if inst.ended_at_s is None:
            inst.ended_at_s = self.clock.now()
        self._cancel_timers(inst.id)
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

    def _get(self, instance_id: str) -> Instance:
        inst = self._instances.get(instance_id)
        if inst is None:
            raise NotFound(f"unknown instance {instance_id!r}; known: {sorted(self._instances)}")
        return inst

    async def _triton_ready(self, inst: Instance) -> bool:
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
            async with self._http().get(f"{inst.url}/v2/health/ready") as resp:
                return resp.status == 200
        return False

    def _not_ready(self, inst: Instance, why: str) -> ServiceUnavailable:
        return ServiceUnavailable(f"instance {inst.id} {why}; log tail:\n" + self._log_tail(inst))

    async def wait_ready(self, instance_id: str, timeout_s: float) -> Instance:
        """Wait until Triton is ready and the emulated boot (``launched_at + ready_after``) is
        over; then the instance is READY (unless a notice came first: it stays NOTICE).
        ``ServiceUnavailable`` (and the instance terminated) when that is not within
        ``timeout_s``, or when the instance ends first."""
        inst = self._get(instance_id)
        deadline = self.clock.now() + timeout_s
        ready_at = inst.launched_at_s + float(inst.extra.get("ready_after_s", 0.0))
        while not await self._triton_ready(inst):
            if inst.state == InstanceState.TERMINATED:
                raise self._not_ready(inst, "exited before it was ready")
            if self.clock.now() > deadline:
                await self.terminate(instance_id)
                raise self._not_ready(inst, f"not ready within {timeout_s:g} s")
            await asyncio.sleep(0.1)
        if ready_at > deadline:
            await self._sleep_while_alive(inst, deadline)
            await self.terminate(instance_id)
            raise self._not_ready(inst, f"not ready within {timeout_s:g} s (its emulated boot "
                                  f"takes {ready_at - inst.launched_at_s:g} s)")
        await self._sleep_while_alive(inst, ready_at)
        if inst.state == InstanceState.TERMINATED:
            raise self._not_ready(inst, "ended before it was ready")
        if inst.state == InstanceState.PENDING:
            inst.state = InstanceState.READY
        inst.ready_at_s = self.clock.now()
        log.info("instance %s ready after %.1f s", instance_id,
                 inst.ready_at_s - inst.launched_at_s)
        return inst

    async def _sleep_while_alive(self, inst: Instance, t_s: float) -> None:
        """Sleep until ``t_s`` on the clock, or until ``inst``'s process has ended for good."""
        sleeper = asyncio.ensure_future(self.clock.sleep_until(t_s))
        watcher = self._watchers.get(inst.id)
        try:
            await asyncio.wait([sleeper] if watcher is None else [sleeper, watcher],
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()

    def _spot_model(self, instance_type: str) -> SpotModel | None:
        itype = self.catalogue.instances.get(instance_type)
        return itype.spot if itype is not None else None

    def _schedule_interruption(self, inst: Instance) -> None:
        spot = self._spot_model(inst.instance_type)
        rate = spot.interruption_rate_per_s * self.spot_interruption_scale if spot else 0.0
        if rate <= 0:
            return
        at = inst.launched_at_s + self._rng.expovariate(rate)
        inst.extra["interruption_at_s"] = at
        self._interruptions[inst.id] = asyncio.create_task(self._interrupt(inst, at))

    async def _interrupt(self, inst: Instance, at: float) -> None:
        await self.clock.sleep_until(at)
        if inst.state == InstanceState.TERMINATED or "reclaim_at_s" in inst.extra:
            return
        try:
            await self.notice(inst.id)
        except Exception:
            log.exception("interruption notice for %s failed", inst.id)

    async def notice(self, instance_id: str) -> float:
        inst = spot_to_notice(self._instances, instance_id)
        if "reclaim_at_s" in inst.extra:
            return float(inst.extra["reclaim_at_s"])
        spot = self._spot_model(inst.instance_type)
        if spot is None:
            raise Conflict(
                f"instance {instance_id} is of type {inst.instance_type!r}, which has no spot "
                f"market in the catalogue (types: {sorted(self.catalogue.instances)}), so it "
                "cannot be given an interruption notice"
            )
        at = self.clock.now() + (self.spot_notice_s or spot.notice_s)
        inst.extra["reclaim_at_s"] = at
        inst.state = InstanceState.NOTICE
        pending = self._interruptions.pop(instance_id, None)
        if pending is not None and pending is not asyncio.current_task():
            pending.cancel()
        self._reclaims[instance_id] = asyncio.create_task(self._reclaim(inst, at))
        log.warning("instance %s: spot interruption notice; reclaimed at %.1f", instance_id, at)
        if self.on_notice is not None:
            self.on_notice(inst, at)
        return at

    async def _reclaim(self, inst: Instance, at: float) -> None:
        await self.clock.sleep_until(at)
        proc = self._procs.get(inst.id)
        if inst.state == InstanceState.TERMINATED or proc is None:
            return
        log.warning("instance %s: reclaimed (spot)", inst.id)
        # the machine goes away: no graceful shutdown; the watcher reaps it and tells on_exit
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def _cancel_timers(self, instance_id: str) -> None:
        current = asyncio.current_task()
        for timers in (self._interruptions, self._reclaims):
            task = timers.pop(instance_id, None)
            if task is not None and task is not current:
                task.cancel()

    async def terminate(self, instance_id: str) -> None:
        inst = self._instances.get(instance_id)
        proc = self._procs.get(instance_id)
        if inst is None or proc is None:
            return
        self._cancel_timers(instance_id)
        if inst.state != InstanceState.TERMINATED:
            inst.state, inst.ended_at_s = InstanceState.TERMINATED, self.clock.now()
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
        timers = [*self._interruptions.values(), *self._reclaims.values()]
        for iid in list(self._instances):
            self._cancel_timers(iid)
        await asyncio.gather(*timers, return_exceptions=True)
        await asyncio.gather(*(self.terminate(i) for i in list(self._procs)))
        if self._session is not None:
            await self._session.close()


@register_backend("local")
def _local(cfg: MarkConfig, on_exit: ExitCallback | None,
           on_notice: NoticeCallback | None) -> LocalBackend:
    f = cfg.fleet
    return LocalBackend(cfg.runtime_dir, cfg.models, on_exit=on_exit, on_notice=on_notice,
                        launch_delay_s=f.launch_delay_s,
                        spot_interruption_scale=f.spot_interruption_scale,
                        spot_notice_s=f.spot_notice_s)
