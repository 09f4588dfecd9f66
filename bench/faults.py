"""Fault injection under steady load: what each failure costs, and how long until it is over.

The deployed topology (as ``docker-compose.yml`` runs it), on loopback, each part its own OS
process: ``redis-server`` (the shared state, no persistence: a restart loses everything),
``mark faas`` (the function runtime), ``mark provisioner`` (the control loop, the ``local``
backend's Triton instances, the admin API) and ``mark up --frontend-only`` with
``frontend.workers: 2`` (the front end's process and one worker process sharing the port).
The model is ``profiled`` Inception-v3 (it sleeps the profiled service times, so many
instances fit on 2 cores); the control loop (``mark`` policy, spot allowed) and spill are on.

An open-loop Poisson load at ``--load`` (0.7) of the starting fleet's capacity (the sum of
the instances' ``capacity_rps``, ``GET /admin/fleet``) runs throughout. In turn, each fault
is injected (``FAULTS``, each an async injector reusable by ``bench/soak.py``):

==================  ===============================================================
``instance-kill``   kill -9 of one instance's process group (a machine that dies)
``instance-stop``   SIGSTOP of one instance's process group for 5 s, then SIGCONT
``spot-notice``     a spot interruption notice (``POST /admin/instances/{id}/notice``)
``redis-restart``   kill -9 of Redis, 3 s down, restarted empty
``faas-kill``       kill -9 of the function runtime, 10 s down, restarted
``faas-throttle``   the function runtime restarted with ``faas.concurrency: 1`` for 20 s
``worker-kill``     kill -9 of the front end's worker process
``provisioner-kill``  kill -9 of ``mark provisioner``, restarted at once
==================  ===============================================================

Per fault, for the slices ``before`` (``--before`` s), ``window`` (injection until the fault
is undone, plus 10 s) and ``after`` (``--after`` s): requests sent, answered 200, answered
with an explicit error (by status and reason), lost (no HTTP reply at all: a timeout or a
connection reset; must be 0), retried (a connection reset before any byte of the reply,
sent once more, as a load balancer would: counted, never hidden), spilled, SLO attainment
(replies within the model's SLO bound over requests sent); and time to recover: from the
injection until the trailing 10-s attainment is back at the SLO's percentile for good
(``slo_recovered_s``; 0 when it never dropped, null when not within the slices) and until
the fleet serves as many ready instances as before, when the fault took some away
(``fleet_recovered_s``; 0 when it did not).

At 70% load almost nothing spills, so the two FaaS faults would show nothing: for them a
burst of ``BURST_PER_INSTANCE`` requests per ready instance at once (about twice what the
fleet takes within the SLO; the rest spill) goes out half way into ``before`` (the control,
FaaS healthy) and again about a second into the fault; bursts are reported apart
(``burst``), and the attainment figures and recovery times count the steady load only.

Where the stack's parts run and what the injectors touch: ``Stack`` (processes, pids, the
admin API through the front end), ``FAULTS`` (name -> injector, each taking the stack and an
optional hook called once the fault is in effect; ``bench/soak.py`` cycles through them).

    .venv/bin/python bench/faults.py [--only NAME[,NAME]] [--json bench/results/faults.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from mark.backends.local import free_port  # noqa: E402
from mark.loadgen import build_request  # noqa: E402

MODEL = "incep"
SLO_S = 0.5
SLO_PERCENTILE = 98.0
MARK = Path(sys.executable).with_name("mark")
TYPES = ("c5.large", "c5.xlarge", "c5.2xlarge", "m5.large", "m5.xlarge")
RESULTS = REPO / "bench" / "results"


# ---- processes ---------------------------------------------------------------------------------

def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        out.setdefault(ppid, []).append(int(stat.parent.name))
    return out


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc)."""
    children = _children()
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        return ""


def rss_kib(pid: int) -> int | None:
    """Resident set size of ``pid`` (KiB), None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def open_fds(pid: int) -> int | None:
    """Open file descriptors of ``pid``, None when it is gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


@dataclass
class Proc:
    """One OS process of the stack, started in its own session, output to ``log``."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str]
    cwd: Path
    popen: subprocess.Popen[bytes] | None = None
    family: set[int] = field(default_factory=set)  # every process it started, seen so far

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"\n==== start {time.strftime('%H:%M:%S')} {self.argv}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def watch(self) -> None:
        if self.popen is not None:
            self.family.add(self.popen.pid)
            self.family |= descendants(self.popen.pid)

    def kill9(self) -> None:
        """SIGKILL the process (not its children: what they do then is theirs), reap it."""
        assert self.popen is not None
        self.watch()
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait()

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait (SIGKILL past ``timeout_s``); the exit code."""
        if self.popen is None:
            return None
        self.watch()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


@dataclass
class StackOptions:
    instances: int = 6            # the starting fleet
    workers: int = 2              # front-end processes sharing the port
    launch_delay_s: float = 5.0   # the emulated boot of a launch
    spot_notice_s: float = 20.0   # from a spot notice to the reclaim
    faas_concurrency: int = 16
    leader_ttl_s: float = 10.0
    interval_s: float = 10.0
    spot: bool = True
    min_instances: int | None = 1
    types: tuple[str, ...] = TYPES


class Stack:
    """Redis, the function runtime, the provisioner and the front end as OS processes on
    loopback (see the module docstring); ``tmp`` holds configurations, logs and runtime dirs."""

    def __init__(self, tmp: Path, opts: StackOptions | None = None) -> None:
        self.tmp = tmp
        self.opts = opts or StackOptions()
        self.ports = {"redis": free_port(), "faas": free_port(), "frontend": free_port()}
        env = {k: v for k, v in os.environ.items()
               if k not in ("MARK_ADMIN_TOKEN", "MARK_API_KEYS")}
        env.setdefault("AWS_EC2_METADATA_DISABLED", "true")
        self.env = env
        self.cfg = self.config()
        self.cfg_path = self.write_config("mark.yaml", self.cfg)
        redis_dir = tmp / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, Proc] = {
            "redis": Proc("redis", [shutil.which("redis-server") or "redis-server",
                                    "--port", str(self.ports["redis"]), "--bind", "127.0.0.1",
                                    "--save", "", "--appendonly", "no", "--dir", str(redis_dir)],
                          tmp / "redis.log", env, tmp),
            "faas": self._mark_proc("faas", ["faas", "--config", str(self.cfg_path)]),
            "provisioner": self._mark_proc("provisioner", ["provisioner", "--config",
                                                           str(self.cfg_path)]),
            "frontend": self._mark_proc("frontend", ["up", "--frontend-only", "--config",
                                                     str(self.cfg_path)]),
        }
        self.retired: list[Proc] = []  # processes replaced by a restart (their families)

    def _mark_proc(self, name: str, args: list[str]) -> Proc:
        return Proc(name, [str(MARK), *args], self.tmp / f"{name}.log", self.env, self.tmp)

    def config(self, **faas: Any) -> dict[str, Any]:
        o = self.opts
        return {
            "frontend": {"host": "127.0.0.1", "port": self.ports["frontend"],
                         "workers": o.workers},
            "fleet": {"backend": "local", "instances": o.instances,
                      "launch_delay_s": o.launch_delay_s, "health_interval_s": 1,
                      "spot_interruption_scale": 0, "spot_notice_s": o.spot_notice_s},
            "control": {"enabled": True, "policy": "mark", "interval_s": o.interval_s,
                        "types": list(o.types), "spot": o.spot,
                        "min_instances": o.min_instances},
            "faas": {"enabled": True, "host": "127.0.0.1", "port": self.ports["faas"],
                     "endpoint_url": f"http://127.0.0.1:{self.ports['faas']}",
                     "concurrency": o.faas_concurrency, "keep_alive_s": 300, **faas},
            "state": {"backend": "redis", "url": f"redis://127.0.0.1:{self.ports['redis']}/0",
                      "prefix": "mark:", "leader_ttl_s": o.leader_ttl_s},
            "models": [{"name": MODEL, "kind": "profiled", "profile": "inception-v3",
                        "max_batch_size": 16, "slo_latency_ms": SLO_S * 1000,
                        "slo_percentile": SLO_PERCENTILE}],
            "logging": {"level": "INFO"},
            "runtime_dir": str(self.tmp / "runtime"),
        }

    def write_config(self, name: str, cfg: dict[str, Any]) -> Path:
        path = self.tmp / name
        path.write_text(yaml.safe_dump(cfg))
        return path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['frontend']}"

    @property
    def faas_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['faas']}"

    # -- life cycle ------------------------------------------------------------------------
    async def start(self, timeout_s: float = 180.0) -> None:
        """Start every process in order; returns once the front end serves the model through
        a ready fleet of the starting size."""
        self.procs["redis"].start()
        await self.wait_for("redis", self._redis_up, 20)
        self.procs["faas"].start()
        await self.wait_for("the function runtime", self._faas_up, 60)
        self.procs["provisioner"].start()
        self.procs["frontend"].start()
        await self.wait_for("the front end's workers",
                            lambda: self._async(len(self.frontend_pids()) == self.opts.workers),
                            timeout_s)
        await self.wait_for(f"{self.opts.instances} ready instances", self._fleet_ready,
                            timeout_s)

    @staticmethod
    async def _async(v: Any) -> Any:
        return v

    async def _redis_up(self) -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", self.ports["redis"])
        except OSError:
            return False
        writer.close()
        return True

    async def _faas_up(self) -> bool:
        return await self._get_ok(f"{self.faas_url}/mark/stats")

    async def _get_ok(self, url: str) -> bool:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s, \
                    s.get(url) as r:
                return r.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _fleet_ready(self) -> bool:
        fleet = await self.fleet()
        return fleet is not None and sum(i["state"] == "ready" for i in fleet) \
            >= self.opts.instances

    async def wait_for(self, what: str, pred: Callable[[], Awaitable[Any]],
                       timeout_s: float) -> Any:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            self.check_alive()
            got = await pred()
            if got:
                return got
            await asyncio.sleep(0.25)
        logs = "\n".join(f"--- {p.name}\n{p.tail()}" for p in self.procs.values())
        raise RuntimeError(f"timed out waiting for {what}\n{logs}")

    def check_alive(self) -> None:
        for p in self.procs.values():
            p.watch()
            if p.popen is not None and p.popen.poll() is not None:
                raise RuntimeError(f"{p.name} exited ({p.popen.returncode}):\n{p.tail()}")

    def stop(self) -> dict[str, Any]:
        """Stop in reverse order (SIGTERM, as ``docker-compose down``); then report what is
        left of every process any of them started (and kill it)."""
        codes = {}
        for name in ("frontend", "provisioner", "faas", "redis"):
            codes[name] = self.procs[name].stop()
        family = {p for proc in [*self.procs.values(), *self.retired] for p in proc.family}
        deadline = time.monotonic() + 10
        left = {p for p in family if alive(p)}
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = {p for p in left if alive(p)}
        leftovers = [{"pid": p, "cmd": cmdline(p)[:200]} for p in sorted(left)]
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return {"exit_codes": codes, "left_behind": leftovers}

    # -- what runs where --------------------------------------------------------------------
    def frontend_pids(self) -> list[int]:
        """The front end's processes: its main one and its workers."""
        main = self.procs["frontend"]
        if not main.running():
            return []
        return [main.pid, *sorted(p for p in descendants(main.pid)
                                  if "frontend.worker" in cmdline(p))]

    def worker_pids(self) -> list[int]:
        return self.frontend_pids()[1:]

    def instance_pid(self, url: str) -> int | None:
        """The process group of the instance serving at ``url`` (a child of the provisioner:
        tritonserver, its Python-backend stubs and the wrapper that leads them)."""
        port = url.rsplit(":", 1)[1]
        prov = self.procs["provisioner"]
        if not prov.running():
            return None
        for pid in descendants(prov.pid):
            cmd = cmdline(pid)
            if "tritonserver" in cmd and f"--http-port={port}" in cmd:
                try:
                    return os.getpgid(pid)
                except ProcessLookupError:
                    continue
        return None

    def sandbox_pids(self) -> list[int]:
        faas = self.procs["faas"]
        if not faas.running():
            return []
        return sorted(p for p in descendants(faas.pid) if "mark.faas.worker" in cmdline(p))

    # -- the admin API, through the front end ---------------------------------------------------
    async def admin(self, method: str, path: str, timeout_s: float = 3.0) -> tuple[int, Any]:
        try:
            async with aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=timeout_s)) as s, \
                    s.request(method, self.url + path) as r:
                body = await r.read()
                try:
                    doc = json.loads(body) if body else None
                except ValueError:
                    doc = body.decode(errors="replace")
                return r.status, doc
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, f"{type(exc).__name__}: {exc}"

    async def fleet(self) -> list[dict[str, Any]] | None:
        status, doc = await self.admin("GET", "/admin/fleet")
        return doc if status == 200 and isinstance(doc, list) else None

    async def faas_stats(self) -> dict[str, Any] | None:
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s, \
                    s.get(f"{self.faas_url}/mark/stats") as r:
                return await r.json() if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    # -- restarts ---------------------------------------------------------------------------
    def replace_proc(self, name: str, argv: list[str] | None = None) -> Proc:
        """A fresh process in ``name``'s place (the old one must be dead), started."""
        old = self.procs[name]
        old.watch()
        self.retired.append(old)
        new = Proc(name, argv or old.argv, old.log, old.env, old.cwd)
        self.procs[name] = new
        new.start()
        return new


# ---- load -----------------------------------------------------------------------------------

_RESET = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
_DIGITS = re.compile(r"\d+(\.\d+)?")


@dataclass
class Rec:
    """One request: sent at ``t0`` (monotonic s), settled at ``t1``; ``status`` 0 = lost."""

    t0: float
    t1: float = math.nan
    status: int = -1  # -1 = still out
    backend: str = ""
    reason: str = ""
    retried: bool = False
    burst: bool = False  # one of a burst (see Load.burst), not of the steady load

    @property
    def latency_s(self) -> float:
        return self.t1 - self.t0

    @property
    def met(self) -> bool:
        return self.status == 200 and self.latency_s <= SLO_S


class Load:
    """Open-loop Poisson arrivals at ``rate`` req/s against the front end, until stopped
    (or, given ``arrivals_s``, one request at each of those times from the start: a trace).

    Every request is recorded (:class:`Rec`). A connection reset or refused before any byte
    of the reply (the front-end process holding the connection died) is sent once more, as
    a load balancer would (inference is idempotent); such requests are marked ``retried``.
    Anything else with no HTTP reply (a timeout, a second reset, a cut reply) is lost."""

    def __init__(self, url: str, rate: float, seed: int = 0, timeout_s: float = 30.0,
                 retry_resets: bool = True, arrivals_s: np.ndarray | None = None) -> None:
        self.url = url.rstrip("/")
        self.rate = rate
        self.arrivals_s = arrivals_s
        self.t_start = math.nan
        self.timeout_s = timeout_s
        self.retry_resets = retry_resets
        self.rng = np.random.default_rng(seed)
        self.records: list[Rec] = []
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._fresh: aiohttp.ClientSession | None = None  # retries: a new connection each
        self._runner: asyncio.Task[None] | None = None
        self.body = b""

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=2048),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        self._fresh = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, force_close=True),
            timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        async with self._session.get(f"{self.url}/v2/models/{MODEL}") as r:
            if r.status != 200:
                raise RuntimeError(f"metadata of {MODEL}: HTTP {r.status}: {await r.text()}")
            self.body = build_request(await r.json())
        self.t_start = time.monotonic()
        self._runner = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop sending; wait for every request out to settle."""
        self._stop.set()
        if self._runner is not None:
            await self._runner
        if self._tasks:
            await asyncio.gather(*list(self._tasks))
        for session in (self._session, self._fresh):
            if session is not None:
                await session.close()

    def _times(self) -> Iterator[float]:
        if self.arrivals_s is not None:
            yield from (self.t_start + float(t) for t in self.arrivals_s)
            return
        nxt = self.t_start
        while True:
            nxt += float(self.rng.exponential(1.0 / self.rate))
            yield nxt

    async def _run(self) -> None:
        for nxt in self._times():
            if self._stop.is_set():
                break
            delay = nxt - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                if self._stop.is_set():
                    break
            else:
                await asyncio.sleep(0)  # behind schedule: still let the requests go out
            self._send(Rec(time.monotonic()))

    async def sent_all(self) -> None:
        """Wait until the arrivals (a trace) are all sent."""
        if self._runner is not None:
            await asyncio.shield(self._runner)

    def _send(self, rec: Rec) -> None:
        self.records.append(rec)
        task = asyncio.create_task(self._one(rec))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Wait for the requests out now to settle."""
        await asyncio.gather(*list(self._tasks))

    def burst(self, n: int) -> None:
        """``n`` requests at once, on top of the steady load (recorded with ``burst``)."""
        now = time.monotonic()
        for _ in range(n):
            self._send(Rec(now, burst=True))

    async def _one(self, rec: Rec) -> None:
        assert self._session is not None and self._fresh is not None
        for attempt in range(2):
            # the retry goes out on a new connection (the pool may hold more connections to
            # the process that died), as a load balancer's would
            session = self._session if attempt == 0 else self._fresh
            try:
                async with session.post(
                        f"{self.url}/v2/models/{MODEL}/infer", data=self.body,
                        headers={"Content-Type": "application/json"}) as r:
                    body = await r.read()
                    rec.t1 = time.monotonic()
                    rec.status = r.status
                    rec.backend = r.headers.get("x-mark-backend", "")
                    if r.status != 200:
                        rec.reason = error_reason(body)
                    return
            except _RESET as exc:
                if attempt == 0 and self.retry_resets and not isinstance(
                        exc, aiohttp.ClientPayloadError):
                    rec.retried = True
                    continue
                rec.t1, rec.status = time.monotonic(), 0
                rec.reason = f"{type(exc).__name__}: {exc}"
                return
            except (TimeoutError, aiohttp.ClientError) as exc:
                rec.t1, rec.status = time.monotonic(), 0
                rec.reason = f"{type(exc).__name__}: {exc}"
                return


def error_reason(body: bytes) -> str:
    """The ``error`` of a JSON error reply, numbers and ids blurred so that alike ones group."""
    try:
        doc = json.loads(body)
        msg = str(doc.get("error", doc)) if isinstance(doc, dict) else str(doc)
    except ValueError:
        msg = body[:200].decode(errors="replace")
    msg = re.sub(r"local-\d+-\d+", "local-#", msg)
    msg = re.sub(r"\[[^\]]*\]", "[...]", msg)
    return _DIGITS.sub("#", msg)[:160]


# ---- slices --------------------------------------------------------------------------------------

def summarise(recs: list[Rec]) -> dict[str, Any]:
    """Counts and SLO attainment of the requests ``recs`` (sent in one slice)."""
    sent = len(recs)
    ok = [r for r in recs if r.status == 200]
    errors = [r for r in recs if r.status > 0 and r.status != 200]
    lost = [r for r in recs if r.status <= 0]
    by: Counter[tuple[int, str]] = Counter((r.status, r.reason) for r in errors)
    lat = np.asarray([r.latency_s for r in ok]) * 1000.0
    return {
        "sent": sent, "ok": len(ok), "errors": len(errors), "lost": len(lost),
        "retried": sum(r.retried for r in recs),
        "spilled": sum(r.backend == "faas" for r in ok),
        "slo_attainment": (sum(r.met for r in recs) / sent) if sent else None,
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
        "p98_ms": round(float(np.percentile(lat, 98)), 1) if lat.size else None,
        "errors_by": [{"status": s, "reason": why, "n": n} for (s, why), n in by.most_common()],
        "lost_by": dict(Counter(r.reason.split(":")[0] for r in lost)),
        "lost_examples": sorted({r.reason[:300] for r in lost})[:5],
    }


def recovery_s(recs: list[Rec], t_inj: float, t_end: float, window_s: float = 10.0,
               percentile: float = SLO_PERCENTILE) -> float | None:
    """Seconds from ``t_inj`` until the trailing ``window_s`` attainment is back at
    ``percentile`` for good (up to ``t_end``): 0 when it never dropped, None when it did not
    recover by ``t_end``."""
    t0 = np.asarray([r.t0 for r in recs])
    met = np.asarray([r.met for r in recs], dtype=bool)
    last_bad = None
    steps = int((t_end - t_inj) // 1.0)
    for k in range(1, steps + 1):
        t = t_inj + k
        sel = (t0 >= t - window_s) & (t0 < t)
        n = int(sel.sum())
        if n and met[sel].mean() * 100.0 < percentile:
            last_bad = k
    if last_bad is None:
        return 0.0
    if last_bad >= steps:
        return None
    return float(last_bad)


@dataclass
class FleetLog:
    """The fleet, polled every second: (t, ready instances, capacity of the ready, all)."""

    samples: list[tuple[float, int | None, float | None, int | None]] = field(
        default_factory=list)

    async def run(self, stack: Stack, every_s: float = 1.0) -> None:
        while True:
            t = time.monotonic()
            fleet = await stack.fleet()
            if fleet is None:
                self.samples.append((t, None, None, None))
            else:
                ready = [i for i in fleet if i["state"] == "ready"]
                self.samples.append((t, len(ready), sum(float(i["weight"]) for i in ready),
                                     len(fleet)))
            await asyncio.sleep(max(0.0, every_s - (time.monotonic() - t)))

    def ready_before(self, t: float) -> int | None:
        got = [n for ts, n, _, _ in self.samples if ts < t and n is not None]
        return got[-1] if got else None

    def recovered_s(self, t_inj: float, w_end: float, t_end: float) -> float | None:
        """Seconds from ``t_inj`` until the ready count is back to what it was just before,
        when it dropped (or the admin API was unreachable) inside the fault window
        ``[t_inj, w_end)``: 0 when it did not (a scale-in after the window is the policy's,
        not the fault's), None when not back by ``t_end``."""
        base = self.ready_before(t_inj)
        if base is None:
            return None
        dropped = False
        for ts, n, _, _ in self.samples:
            if ts < t_inj or ts > t_end:
                continue
            if not dropped and ts < w_end and (n is None or n < base):
                dropped = True
            elif dropped and n is not None and n >= base:
                return round(ts - t_inj, 1)
        return None if dropped else 0.0

    def slice(self, t_from: float, t_to: float) -> dict[str, Any]:
        got = [(n, c) for ts, n, c, _ in self.samples if t_from <= ts < t_to]
        ready = [n for n, _ in got if n is not None]
        return {"ready_min": min(ready) if ready else None,
                "ready_max": max(ready) if ready else None,
                "admin_unreachable_s": sum(1 for n, _ in got if n is None)}


# ---- faults ------------------------------------------------------------------------------------

@dataclass
class Injected:
    """What an injector did: when (monotonic s) it began and undid the fault, and notes."""

    t_inject: float
    t_clear: float
    notes: dict[str, Any] = field(default_factory=dict)


#: Called by an injector once its fault is in effect (e.g. to send a burst then).
Hook = Callable[[], None]
Injector = Callable[[Stack, Hook | None], Awaitable[Injected]]


async def _pick_instance(stack: Stack, market: str | None = None) -> dict[str, Any]:
    fleet = await stack.fleet() or []
    ready = [i for i in fleet if i["state"] == "ready" and (market is None
                                                            or i["market"] == market)]
    if not ready:
        raise RuntimeError(f"no ready {market or ''} instance to inject a fault into: {fleet}")
    return sorted(ready, key=lambda i: i["launched_at"])[0]


async def kill_instance(stack: Stack, during: Hook | None = None) -> Injected:
    """kill -9 of one ready instance's whole process group (its machine dies)."""
    inst = await _pick_instance(stack)
    pid = stack.instance_pid(inst["url"])
    if pid is None:
        raise RuntimeError(f"no process serves {inst['url']}")
    t = time.monotonic()
    os.killpg(pid, signal.SIGKILL)
    if during is not None:
        during()
    return Injected(t, t, {"instance": inst["id"], "instance_type": inst["instance_type"]})


async def stop_instance(stack: Stack, during: Hook | None = None,
                        seconds: float = 5.0) -> Injected:
    """SIGSTOP of one ready instance's process group for ``seconds``, then SIGCONT."""
    inst = await _pick_instance(stack)
    pid = stack.instance_pid(inst["url"])
    if pid is None:
        raise RuntimeError(f"no process serves {inst['url']}")
    t = time.monotonic()
    os.killpg(pid, signal.SIGSTOP)
    if during is not None:
        during()
    try:
        await asyncio.sleep(seconds)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGCONT)
    return Injected(t, time.monotonic(), {"instance": inst["id"], "stopped_s": seconds})


async def spot_notice(stack: Stack, during: Hook | None = None) -> Injected:
    """A spot interruption notice to a ready spot instance (the admin API's ``notice``);
    without one, to whichever ready instance (answered 409: noted)."""
    fleet = await stack.fleet() or []
    spot = [i for i in fleet if i["state"] == "ready" and i["market"] == "spot"]
    inst = spot[0] if spot else await _pick_instance(stack)
    t = time.monotonic()
    status, doc = await stack.admin("POST", f"/admin/instances/{inst['id']}/notice")
    if during is not None:
        during()
    return Injected(t, t, {"instance": inst["id"], "market": inst["market"],
                           "notice_status": status, "notice": doc,
                           "reclaim_after_s": stack.opts.spot_notice_s})


async def restart_redis(stack: Stack, during: Hook | None = None,
                        down_s: float = 3.0) -> Injected:
    """kill -9 of Redis; ``down_s`` later it starts again, empty (no persistence)."""
    t = time.monotonic()
    stack.procs["redis"].kill9()
    if during is not None:
        during()
    await asyncio.sleep(down_s)
    stack.replace_proc("redis")
    await stack.wait_for("redis again", stack._redis_up, 20)
    return Injected(t, time.monotonic(), {"down_s": down_s})


async def kill_faas(stack: Stack, during: Hook | None = None,
                    down_s: float = 10.0) -> Injected:
    """kill -9 of the function runtime (its sandboxes die with it); restarted ``down_s``
    later."""
    sandboxes = stack.sandbox_pids()
    t = time.monotonic()
    stack.procs["faas"].kill9()
    await asyncio.sleep(min(1.0, down_s / 2))
    if during is not None:
        during()
    await asyncio.sleep(down_s - min(1.0, down_s / 2))
    left = [p for p in sandboxes if alive(p)]
    stack.replace_proc("faas")
    await stack.wait_for("the function runtime again", stack._faas_up, 60)
    return Injected(t, time.monotonic(), {"down_s": down_s, "sandboxes_killed": len(sandboxes),
                                          "sandboxes_outliving_it": len(left)})


async def throttle_faas(stack: Stack, during: Hook | None = None,
                        seconds: float = 20.0) -> Injected:
    """The function runtime restarted with ``faas.concurrency: 1`` for ``seconds`` (so spills
    beyond one at a time get Lambda's 429), then restarted as configured."""
    throttled = stack.write_config("mark-faas-throttled.yaml",
                                   {**stack.cfg, "faas": {**stack.cfg["faas"], "concurrency": 1}})
    t = time.monotonic()
    stack.procs["faas"].stop()
    stack.replace_proc("faas", [str(MARK), "faas", "--config", str(throttled)])
    await stack.wait_for("the throttled function runtime", stack._faas_up, 60)
    t_on = time.monotonic()
    await asyncio.sleep(min(1.0, seconds / 2))
    if during is not None:
        during()
    await asyncio.sleep(seconds - min(1.0, seconds / 2))
    stats = await stack.faas_stats() or {}
    throttles = sum(int(f.get("throttles", 0)) for f in stats.values())
    stack.procs["faas"].stop()
    stack.replace_proc("faas", [str(MARK), "faas", "--config", str(stack.cfg_path)])
    await stack.wait_for("the function runtime again", stack._faas_up, 60)
    return Injected(t, time.monotonic(), {"throttled_s": round(time.monotonic() - t_on, 1),
                                          "throttles_429": throttles})


async def kill_worker(stack: Stack, during: Hook | None = None) -> Injected:
    """kill -9 of one front-end worker process (not the front end's main process)."""
    workers = stack.worker_pids()
    if not workers:
        raise RuntimeError("no front-end worker process to kill")
    t = time.monotonic()
    os.kill(workers[0], signal.SIGKILL)
    if during is not None:
        during()
    return Injected(t, t, {"pid": workers[0]})


async def kill_provisioner(stack: Stack, during: Hook | None = None) -> Injected:
    """kill -9 of ``mark provisioner``, restarted at once (it waits for the old leader's
    lock to expire)."""
    prov = stack.procs["provisioner"]
    prov.watch()
    instances = [p for p in prov.family if cmdline(p).split(" ", 1)[0].endswith("tritonserver")]
    stubs = [p for p in prov.family if "triton_python_backend_stub" in cmdline(p)]
    t = time.monotonic()
    prov.kill9()
    if during is not None:
        during()
    stack.replace_proc("provisioner")
    await asyncio.sleep(1.0)
    outliving = [p for p in instances if alive(p)]
    orphans = [p for p in stubs if alive(p)]
    # the successor leads once the lock expires and kills the stubs Triton's death left
    await asyncio.sleep(stack.opts.leader_ttl_s + 5.0)
    return Injected(t, t, {"instances_before": len(instances),
                           "instances_outliving_it": len(outliving),
                           "stubs_orphaned": len(orphans),
                           "stubs_left_after_restart": sum(alive(p) for p in orphans)})


FAULTS: dict[str, Injector] = {
    "instance-kill": kill_instance,
    "instance-stop": stop_instance,
    "spot-notice": spot_notice,
    "redis-restart": restart_redis,
    "faas-kill": kill_faas,
    "faas-throttle": throttle_faas,
    "worker-kill": kill_worker,
    "provisioner-kill": kill_provisioner,
}


# ---- the bench ---------------------------------------------------------------------------------

#: Faults whose effect shows only on spilled requests (at 70% load few spill): a burst
#: beyond what the fleet serves within the SLO (``BURST_PER_INSTANCE`` requests per ready
#: instance, at once) goes out once before the fault (the control: FaaS healthy) and once
#: while it is in effect.
BURST_FAULTS = frozenset({"faas-kill", "faas-throttle"})
BURST_PER_INSTANCE = 10


async def fault_run(stack: Stack, load: Load, fleet_log: FleetLog, name: str,
                    before_s: float, after_s: float, tail_s: float = 10.0) -> dict[str, Any]:
    """``before_s`` of steady load, the fault, ``after_s`` more; the fault's row (or, when
    the injection itself failed, a row saying why)."""
    burst_n = 0
    if name in BURST_FAULTS:
        await asyncio.sleep(before_s / 2)
        ready = fleet_log.ready_before(time.monotonic()) or stack.opts.instances
        burst_n = BURST_PER_INSTANCE * ready
        load.burst(burst_n)
        await asyncio.sleep(before_s / 2)
    else:
        await asyncio.sleep(before_s)
    faas_before = await stack.faas_stats()
    t_try = time.monotonic()
    try:
        inj = await FAULTS[name](stack, (lambda: load.burst(burst_n)) if burst_n else None)
    except Exception as exc:
        return {"fault": name, "error": f"{type(exc).__name__}: {exc}",
                "at_s": round(t_try, 1)}
    w_end = inj.t_clear + tail_s
    t_end = w_end + after_s
    await asyncio.sleep(max(0.0, t_end - time.monotonic()))
    await load.settle()  # requests sent up to t_end must settle before they are counted
    recs = list(load.records)
    steady = [r for r in recs if not r.burst]
    t_from = inj.t_inject - before_s

    def pick(a: float, b: float, of: list[Rec] = steady) -> list[Rec]:
        return [r for r in of if a <= r.t0 < b]

    whole = summarise(pick(t_from, t_end, recs))
    row = {
        "fault": name,
        "notes": inj.notes,
        "window_s": round(w_end - inj.t_inject, 1),
        **{k: whole[k] for k in ("sent", "ok", "errors", "lost", "retried", "spilled")},
        "errors_by": whole["errors_by"], "lost_by": whole["lost_by"],
        "lost_examples": whole["lost_examples"],
        "before": summarise(pick(t_from, inj.t_inject)),
        "window": summarise(pick(inj.t_inject, w_end)),
        "after": summarise(pick(w_end, t_end)),
        "slo_recovered_s": recovery_s(steady, inj.t_inject, t_end),
        "fleet_recovered_s": fleet_log.recovered_s(inj.t_inject, w_end, t_end),
        "fleet": {"ready_before": fleet_log.ready_before(inj.t_inject),
                  "window": fleet_log.slice(inj.t_inject, w_end),
                  "after": fleet_log.slice(w_end, t_end)},
        "faas_stats_before": faas_before,
    }
    if burst_n:
        bursts = [r for r in recs if r.burst]
        row["burst"] = {"size": burst_n,
                        "before": summarise(pick(t_from, inj.t_inject, bursts)),
                        "window": summarise(pick(inj.t_inject, w_end, bursts))}
    return row


async def capacity(stack: Stack) -> float:
    fleet = await stack.fleet() or []
    return sum(float(i["weight"]) for i in fleet if i["state"] == "ready")


async def bench(names: list[str], opts: StackOptions, load_share: float, before_s: float,
                after_s: float, warmup_s: float, seed: int, keep: Path | None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="mark-faults-"))
    stack = Stack(tmp, opts)
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {}
    try:
        t0 = time.monotonic()
        await stack.start()
        start_s = time.monotonic() - t0
        cap = await capacity(stack)
        rate = load_share * cap
        print(f"stack up in {start_s:.0f} s: {opts.instances} instances, capacity "
              f"{cap:.1f} req/s; load {rate:.1f} req/s", flush=True)
        load = Load(stack.url, rate, seed)
        fleet_log = FleetLog()
        poller = asyncio.create_task(fleet_log.run(stack))
        await load.start()
        await asyncio.sleep(warmup_s)
        for name in names:
            print(f"-- {name}", flush=True)
            row = await fault_run(stack, load, fleet_log, name, before_s, after_s)
            rows.append(row)
            print(row_line(row), flush=True)
        await load.stop()
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        out = {
            "setup": {"model": f"{MODEL} (profiled inception-v3)", "slo_ms": SLO_S * 1000,
                      "slo_percentile": SLO_PERCENTILE, "starting_instances": opts.instances,
                      "starting_capacity_rps": round(cap, 2), "load_share": load_share,
                      "rate_rps": round(rate, 2), "frontend_workers": opts.workers,
                      "types": list(opts.types), "spot": opts.spot, "launch_delay_s": opts.launch_delay_s,
                      "spot_notice_s": opts.spot_notice_s, "leader_ttl_s": opts.leader_ttl_s,
                      "faas_concurrency": opts.faas_concurrency,
                      "before_s": before_s, "after_s": after_s, "warmup_s": warmup_s,
                      "client_retries_resets_once": True},
            "faults": rows,
            "total": summarise(load.records),
        }
    finally:
        stopped = await asyncio.to_thread(stack.stop)
        out["stop"] = stopped
        await asyncio.to_thread(keep_logs, tmp, keep)
    return out


def keep_logs(tmp: Path, keep: Path | None) -> None:
    """Copy the processes' logs from ``tmp`` to ``keep`` (when given); remove ``tmp``."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        for p in tmp.glob("*.log"):
            shutil.copy(p, keep / p.name)
    shutil.rmtree(tmp, ignore_errors=True)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2%}"


def secs(x: float | None) -> str:
    return "never" if x is None else f"{x:g}"


HEADER = (f"{'fault':17s} {'sent':>5s} {'ok':>5s} {'err':>4s} {'lost':>4s} {'retr':>4s} "
          f"{'spill':>5s} {'att before':>10s} {'att window':>10s} {'att after':>9s} "
          f"{'slo rec s':>9s} {'fleet rec s':>11s}")


def row_line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['fault']:17s} injection failed: {r['error']}"
    return (f"{r['fault']:17s} {r['sent']:5d} {r['ok']:5d} {r['errors']:4d} {r['lost']:4d} "
            f"{r['retried']:4d} {r['spilled']:5d} {pct(r['before']['slo_attainment']):>10s} "
            f"{pct(r['window']['slo_attainment']):>10s} "
            f"{pct(r['after']['slo_attainment']):>9s} {secs(r['slo_recovered_s']):>9s} "
            f"{secs(r['fleet_recovered_s']):>11s}")


def table(out: dict[str, Any]) -> Iterator[str]:
    rows = out.get("faults", [])
    yield HEADER
    for r in rows:
        yield row_line(r)
    for r in rows:
        if "error" in r:
            continue
        for e in r["errors_by"]:
            yield f"  {r['fault']}: {e['n']} x {e['status']} {e['reason']}"
        for why, n in r["lost_by"].items():
            yield f"  {r['fault']}: {n} lost ({why})"
        for example in r.get("lost_examples", []):
            yield f"    lost: {example}"
        b = r.get("burst")
        if b:
            for when in ("before", "window"):
                x = b[when]
                yield (f"  {r['fault']}: burst of {b['size']} {when:6s}: ok {x['ok']} "
                       f"(spilled {x['spilled']}), errors {x['errors']}, lost {x['lost']}, "
                       f"attainment {pct(x['slo_attainment'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help=f"comma-separated faults of {list(FAULTS)}")
    ap.add_argument("--json", default=str(RESULTS / "faults.json"))
    ap.add_argument("--load", type=float, default=0.7, help="share of the starting capacity")
    ap.add_argument("--instances", type=int, default=6, help="the starting fleet")
    ap.add_argument("--before", type=float, default=20.0)
    ap.add_argument("--after", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--logs", help="copy the processes' logs into this directory")
    args = ap.parse_args()
    names = list(FAULTS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        ap.error(f"unknown faults {unknown}; known: {list(FAULTS)}")
    opts = StackOptions(instances=args.instances)
    out = asyncio.run(bench(names, opts, args.load, args.before, args.after, args.warmup,
                            args.seed, Path(args.logs) if args.logs else None))
    for line in table(out):
        print(line)
    print(f"left behind after stop: {out['stop']['left_behind']}")
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
