"""The local cluster: a backend's instances behind the Sanic front end, in one event loop.

``LocalCluster`` is what ``mark up`` runs and what the tests start (in a thread of its own
via :class:`ClusterThread`, so blocking clients such as ``tritonclient`` can talk to it).
It starts the front end, the starting fleet (``fleet.instances``; with the control loop, that
many per model, of the plan's cheapest type unless ``fleet.instance_type`` is one of the
plan's), the health checks and, with ``control.enabled``, the control loop
(:mod:`mark.control`) that sizes the fleet from then on. The ``/admin`` API is served on the
front end's port; with worker processes also on a private loopback port they forward to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import threading
from collections.abc import Coroutine, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sanic import Request, Sanic
from sanic.response import HTTPResponse

from frontend.admin import add_admin_routes
from frontend.app import FrontEnd, create_app, error_response
from frontend.faas import make_spill
from frontend.fleet import Fleet
from frontend.upstream import Upstream
from mark.backends import Backend, LaunchSpec, make_backend
from mark.backends.local import free_port, release_port, with_pdeathsig
from mark.control import (
    ControlAdmin,
    ControlLoop,
    CostLedger,
    LiveCounts,
    ModelControl,
    build_controls,
    cheapest_type,
    planning_catalogue,
)
from mark.core.clock import WallClock
from mark.core.config import MarkConfig
from mark.core.instances import Instance, InstanceState, Market
from mark.faas.runtime import FunctionRuntime
from mark.models.repository import model_metadata
from mark.profiling import ensure_measured

log = logging.getLogger(__name__)
T = TypeVar("T")


class LocalCluster:
    """``warm_start``: per model, arrival counts the control loop's first step sees as its
    past (a replay's pre-roll, as the simulator's); that step's launches are then the starting
    fleet instead of ``fleet.instances``. ``defer_loop``: the loop does not step on its own
    until ``control.begin()`` (a replay starts it with its trace)."""

    def __init__(self, cfg: MarkConfig,
                 warm_start: Mapping[str, np.ndarray] | None = None,
                 defer_loop: bool = False) -> None:
        self.cfg = cfg
        self.defer_loop = defer_loop
        self.warm_start = dict(warm_start or {}) if cfg.control.enabled else {}
        self.fleet = Fleet([m.name for m in cfg.models])
        self.upstream = Upstream(cfg.frontend.pool_size, cfg.frontend.connect_timeout_s,
                                 cfg.frontend.upstream_timeout_s,
                                 cfg.frontend.max_connections_per_instance)
        self.front = FrontEnd(cfg, self.fleet, self.upstream)
        self.backend: Backend | None = None
        self.port = cfg.frontend.port or free_port(cfg.frontend.host)
        self._server: Any = None
        self._health_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self.workers = cfg.frontend_workers()
        self._worker_procs: list[asyncio.subprocess.Process] = []
        self._snapshot_task: asyncio.Task[None] | None = None
        self._fleet_changed = asyncio.Event()
        self.fleet_path = Path(cfg.runtime_dir).resolve() / "fleet.json"
        self.reports_dir = Path(cfg.runtime_dir).resolve() / "workers"
        self.clock = WallClock()
        # built before anything starts, so a bad control configuration fails fast; a real
        # model without a profile is planned with this machine's, measured in start()
        self.controls: dict[str, ModelControl] = build_controls(cfg) if cfg.control.enabled else {}
        self.ledger = CostLedger(planning_catalogue(cfg))
        self.counts = LiveCounts(self.front.arrivals, self.front.inflight,
                                 self.reports_dir if self.workers > 1 else None)
        self.control: ControlLoop | None = None
        self._admin_server: Any = None
        self.runtime: FunctionRuntime | None = None

    @property
    def url(self) -> str:
        return f"http://{self.cfg.frontend.host}:{self.port}"

    def _on_exit(self, inst: Instance, code: int) -> None:
        if self.control is not None:
            self.control.on_exit(inst, code)
        else:
            self.fleet.remove(inst.id, f"process exited with code {code}")

    def _on_notice(self, inst: Instance, reclaim_at_s: float) -> None:
        if self.control is not None:
            self.control.on_notice(inst, reclaim_at_s)

    async def start(self) -> None:
        to_measure = [m for m in self.cfg.models if self.controls and m.kind == "minilm"
                      and m.profile is None and self.cfg.fleet.backend == "local"]
        if to_measure:
            measured = {m.name: await ensure_measured(self.cfg, m) for m in to_measure}
            self.controls = build_controls(self.cfg, measured=measured)
        if self.cfg.faas.enabled and self.controls:  # spill follows a plan's budgets
            await self._start_faas()
        for m in self.cfg.models:
            self.fleet.fallback_metadata[m.name] = model_metadata(m)
        self.backend = make_backend(self.cfg.fleet.backend, self.cfg, self._on_exit,
                                    self._on_notice)
        budget = max(self.front.budget_s.values(), default=30.0)
        self.control = ControlLoop(
            self.controls, self.backend, self.fleet, self.ledger, self.clock, self.counts,
            inflight=self.counts, interval_s=self.cfg.control.interval_s,
            history_s=self.cfg.control.history_s, ready_timeout_s=self.cfg.fleet.ready_timeout_s,
            drain_timeout_s=budget + 1.0, settle_s=1.0 if self.workers > 1 else 0.0,
            decisions_kept=self.cfg.control.decisions_kept, warm_start=self.warm_start,
            min_instances=self.min_instances, faas=self.front.faas is not None,
        )
        self.front.admin = ControlAdmin(self.control, self.backend)
        await asyncio.to_thread(self._clear_reports)
        app = create_app(self.front)
        sock = self._listen()
        self._server = await app.create_server(sock=sock, return_asyncio_server=True)
        await self._server.startup()
        await self._server.before_start()
        await self._server.after_start()
        log.info("front end listening on %s", self.url)
        try:
            if not self.warm_start:
                await self._start_fleet()
        except BaseException:
            await self.stop()
            raise
        self._health_task = asyncio.create_task(self._health_loop())
        if self.controls:
            await self.control.start(run=not self.defer_loop)
            log.info("control loop: policy %s every %g s for %s", self.cfg.control.policy,
                     self.control.interval_s, sorted(self.controls))
        if self.workers > 1:  # after the instances, so workers start with the whole fleet
            await self._start_admin_server()
            await self._start_workers(sock)
            log.info("%d front-end worker processes share the port", self.workers)

    @property
    def min_instances(self) -> int:
        """``control.min_instances``, else 0 with FaaS (functions alone), 1 without."""
        if self.cfg.control.min_instances is not None:
            return self.cfg.control.min_instances
        return 0 if self.cfg.faas.enabled and self.controls else 1

    async def _start_faas(self) -> None:
        """The spill path: the local function runtime (unless an endpoint is configured) and
        this process's client; workers get the endpoint through the fleet snapshot."""
        endpoint = self.cfg.faas.endpoint_url
        if endpoint is None:
            # deployed with the plan's memory per model (as a deploy to AWS would be; a
            # later plan's memory is not applied to a running function)
            memory = {m: mc.plan.faas.memory_mb for m, mc in self.controls.items()}
            self.runtime = FunctionRuntime(self.cfg, memory_mb=memory)
            await self.runtime.start()
            endpoint = self.runtime.url
        self.fleet.faas_url = endpoint
        self.front.faas = make_spill(self.cfg, self.fleet, endpoint)
        spill = self.front.faas
        self.ledger.faas_sources.append(lambda: spill.invoker.stats.usd)
        self.ledger.faas_sources.append(
            lambda: sum(r.faas_usd for r in self.counts.reports()))

    def _clear_reports(self) -> None:
        """Remove reports of workers of an earlier run."""
        if self.reports_dir.is_dir():
            for p in self.reports_dir.glob("*.json"):
                p.unlink(missing_ok=True)

    async def _start_fleet(self) -> None:
        n = self.cfg.fleet.instances
        if not self.controls:  # a fixed fleet: every instance serves every model
            weights: list[float | None] = (
                [None] * n if self.cfg.fleet.weights is None else [*self.cfg.fleet.weights]
            )
            await asyncio.gather(*(self.add_instance(w) for w in weights))
            return
        assert self.control is not None
        launches = []
        for mc in self.controls.values():  # n per model, of the plan's cheapest type
            itype = cheapest_type(mc.ctx, mc.plan, prefer=self.cfg.fleet.instance_type)
            spec = self.control.spec_for(mc, itype, Market.ON_DEMAND, ready_after_s=0.0)
            launches += [self._add(spec, mc.plan.types[itype].capacity_rps, mc)
                         for _ in range(n)]
        await asyncio.gather(*launches)

    async def _add(self, spec: LaunchSpec, capacity_rps: float,
                   mc: ModelControl | None = None) -> Instance:
        assert self.backend is not None
        inst = await self.backend.launch(spec)
        inst.capacity_rps = capacity_rps
        if mc is not None and self.control is not None:
            self.control.serve_as_planned(mc, inst)
        self.ledger.start(inst)
        try:
            await self.backend.wait_ready(inst.id, self.cfg.fleet.ready_timeout_s)
        except BaseException:
            self.ledger.stop(inst.id, self.clock.now())
            raise
        self.fleet.upsert(inst)
        return inst

    async def _start_admin_server(self) -> None:
        """The admin routes on a private loopback port, for worker processes to forward to."""
        app: Sanic[Any, Any] = Sanic(f"mark_admin_{id(self)}")
        app.config.MOTD = False
        app.config.ACCESS_LOG = False
        app.config.TOUCHUP = False
        add_admin_routes(app, lambda: self.front.admin)
        max_body = self.cfg.frontend.max_body_bytes

        @app.exception(Exception)
        async def _on_error(request: Request, exc: Exception) -> HTTPResponse:
            return error_response(exc, max_body)

        port = free_port("127.0.0.1")
        self._admin_server = await app.create_server(host="127.0.0.1", port=port,
                                                     return_asyncio_server=True)
        await self._admin_server.startup()
        await self._admin_server.before_start()
        await self._admin_server.after_start()
        self.fleet.admin_url = f"http://127.0.0.1:{port}"
        self._admin_port = port

    def _listen(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.cfg.frontend.host, self.port))
        sock.listen(1024)
        sock.setblocking(False)
        return sock

    async def _start_workers(self, sock: socket.socket) -> None:
        """Worker processes sharing ``sock``; they follow the fleet through a snapshot file."""
        self.fleet_path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.fleet.write_snapshot, self.fleet_path)
        self.fleet.on_change = lambda _fleet: self._fleet_changed.set()
        self._snapshot_task = asyncio.create_task(self._write_snapshots())
        cfg_json = self.cfg.model_dump_json()
        for _ in range(self.workers - 1):
            proc = await asyncio.create_subprocess_exec(
                *with_pdeathsig([sys.executable, "-m", "frontend.worker", "--config-json", cfg_json,
                                 "--fleet", str(self.fleet_path), "--fd", str(sock.fileno()),
                                 "--reports", str(self.reports_dir)]),
                pass_fds=(sock.fileno(),), start_new_session=True,
                stdin=asyncio.subprocess.DEVNULL,
            )
            self._worker_procs.append(proc)

    async def _write_snapshots(self) -> None:
        """Rewrite the snapshot after changes; each write carries the next sequence number."""
        while True:
            await self._fleet_changed.wait()
            self._fleet_changed.clear()
            await asyncio.to_thread(self.fleet.write_snapshot, self.fleet_path)

    async def add_instance(self, weight: float | None = None) -> Instance:
        """One more instance of the fixed fleet (every model, ``fleet.instance_type``)."""
        spec = LaunchSpec(instance_type=self.cfg.fleet.instance_type,
                          models=tuple(m.name for m in self.cfg.models), ready_after_s=0.0)
        return await self._add(spec, weight or min(m.capacity_rps for m in self.cfg.models))

    async def _health_loop(self) -> None:
        """Take unhealthy instances out of routing; bring recovered ones back."""
        interval = self.cfg.fleet.health_interval_s
        probe = Upstream(pool_size=4, connect_timeout_s=self.cfg.frontend.connect_timeout_s,
                         timeout_s=max(1.0, interval))

        failures: dict[str, int] = {}
        limit = self.cfg.control.health_failures

        def forget(inst: Instance) -> None:  # no pool outlives its instance's place in the fleet
            probe.drop(inst.url)
            failures.pop(inst.id, None)

        self.fleet.on_leave.append(forget)
        try:
            while True:
                await asyncio.sleep(interval)
                for inst in list(self.fleet.instances.values()):
                    if inst.state == InstanceState.TERMINATED:
                        self.fleet.remove(inst.id, "terminated")
                        continue
                    if inst.state in (InstanceState.PENDING, InstanceState.DRAINING):
                        continue
                    ok = await probe.healthy(inst.url)
                    if ok:
                        failures.pop(inst.id, None)
                    else:
                        failures[inst.id] = failures.get(inst.id, 0) + 1
                    if ok and inst.state == InstanceState.UNHEALTHY:
                        self.fleet.set_state(inst.id, InstanceState.READY, "health check passed")
                    elif not ok and inst.state == InstanceState.READY:
                        self.fleet.set_state(inst.id, InstanceState.UNHEALTHY, "health check failed")
                    if (not ok and failures[inst.id] >= limit and self.controls
                            and self.control is not None):
                        failures.pop(inst.id, None)
                        await self.control.replace(
                            inst.id, f"{limit} consecutive failed health checks")
        finally:
            self.fleet.on_leave.remove(forget)
            await probe.close()

    async def stop(self) -> None:
        if self.control is not None:
            await self.control.stop()
        for task in (self._health_task, self._snapshot_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for proc in self._worker_procs:
            if proc.returncode is None:
                proc.terminate()
        await asyncio.gather(*(p.wait() for p in self._worker_procs))
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.before_stop()
            self._server.close()
            await self._server.wait_closed()
            with contextlib.suppress(Exception):
                await self._server.after_stop()
            self._server = None
        if self._admin_server is not None:
            self._admin_server.close()
            await self._admin_server.wait_closed()
            self._admin_server = None
            release_port(self._admin_port)
        await self.upstream.close()
        if self.front.faas is not None:
            await self.front.faas.close()
        if self.runtime is not None:
            await self.runtime.stop()
            self.runtime = None
        if self.backend is not None:
            await self.backend.close()
        if not self.cfg.frontend.port:
            release_port(self.port)
        self._stopped.set()

    async def serve_forever(self) -> None:
        await self._stopped.wait()


class ClusterThread:
    """Run a :class:`LocalCluster` on its own event loop in a daemon thread."""

    def __init__(self, cfg: MarkConfig,
                 warm_start: Mapping[str, np.ndarray] | None = None,
                 defer_loop: bool = False) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.cluster: LocalCluster = self.call(self._make(cfg, warm_start, defer_loop))
        self.call(self.cluster.start(), timeout=600)

    @staticmethod
    async def _make(cfg: MarkConfig, warm_start: Mapping[str, np.ndarray] | None,
                    defer_loop: bool) -> LocalCluster:
        return LocalCluster(cfg, warm_start, defer_loop)  # built on the cluster's loop

    @property
    def url(self) -> str:
        return self.cluster.url

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def stop(self) -> None:
        try:
            self.call(self.cluster.stop(), timeout=60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
