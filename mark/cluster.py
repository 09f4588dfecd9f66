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
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Coroutine, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from sanic import Request, Sanic
from sanic.response import HTTPResponse

from frontend.admin import add_admin_routes
from frontend.app import FrontEnd, create_app, error_response
from frontend.dashboard import add_dashboard_route
from frontend.faas import make_spill
from frontend.fleet import Fleet
from frontend.metrics import process_dead, setup_multiprocess
from frontend.queue_cells import QueueCells
from frontend.shared import apply_snapshot, attach, follow_store, publish_store
from frontend.upstream import Upstream
from frontend.worker import recheck_unhealthy, write_private
from mark.backends import Backend, LaunchSpec, make_backend
from mark.backends.local import free_port, release_port, with_pdeathsig
from mark.control import (
    ControlAdmin,
    ControlLoop,
    CostLedger,
    LiveCounts,
    ModelControl,
    build_control,
    build_controls,
    cheapest_type,
    planning_catalogue,
)
from mark.control.metrics import ControlMetrics
from mark.control.models import ModelRegistry
from mark.control.shared import (
    Leadership,
    PlanPublisher,
    StoreCounts,
    publish_fleet,
    stored_models,
    sync_models,
)
from mark.core.clock import WallClock
from mark.core.config import MarkConfig, ModelConfig
from mark.core.errors import ConfigError, Conflict
from mark.core.instances import Instance, InstanceState, Market
from mark.core.state import CountPublisher, StateStore, make_state_store
from mark.faas.runtime import FunctionRuntime
from mark.models.repository import model_metadata
from mark.profiling import ensure_measured

log = logging.getLogger(__name__)
T = TypeVar("T")
#: What one process runs: everything (``mark up``), the control plane alone (``mark
#: provisioner``), or a front end alone that follows the shared store.
ROLES = ("all", "provisioner", "frontend")


class LocalCluster:
    """``warm_start``: per model, arrival counts the control loop's first step sees as its
    past (a replay's warm-up, as the simulator's ``history``); that step's launches are then the starting
    fleet instead of ``fleet.instances``. ``defer_loop``: the loop does not step on its own
    until ``control.begin()`` (a replay starts it with its trace)."""

    def __init__(self, cfg: MarkConfig,
                 warm_start: Mapping[str, np.ndarray] | None = None,
                 defer_loop: bool = False, role: str = "all") -> None:
        if role not in ROLES:
            raise ConfigError(f"role must be one of {list(ROLES)}, got {role!r}")
        if role != "all" and cfg.state.backend == "memory":
            raise ConfigError(f"the {role} alone needs a shared state store (state.backend: "
                              "redis): with the in-process one nothing would connect it")
        self.cfg = cfg
        self.role = role
        self.store: StateStore | None = (make_state_store(cfg.state)
                                         if cfg.state.backend != "memory" else None)
        self._store_tasks: list[asyncio.Task[Any]] = []
        self.leadership: Leadership | None = None
        self.defer_loop = defer_loop
        self.warm_start = dict(warm_start or {}) if cfg.control.enabled else {}
        self.fleet = Fleet([m.name for m in cfg.models])
        self.upstream = Upstream(cfg.frontend.pool_size, cfg.frontend.connect_timeout_s,
                                 cfg.frontend.upstream_timeout_s,
                                 cfg.frontend.max_connections_per_instance)
        if cfg.metrics.enabled:  # before any metric exists; worker processes inherit it
            setup_multiprocess(Path(cfg.runtime_dir).resolve() / "metrics")
        self.workers = cfg.frontend_workers()
        self.port = cfg.frontend.port or free_port(cfg.frontend.host)
        # with worker processes, the front end shares the instances' spill state with them
        # (a provisioner alone serves nothing: its front end is never asked to admit)
        self.queues_dir = Path(cfg.runtime_dir).resolve() / f"queues-{self.port}"
        shared = self.workers > 1 and role != "provisioner"
        self.front = FrontEnd(cfg, self.fleet, self.upstream, cells=QueueCells(
            self.queues_dir if shared else None, 0, self.workers, owner=True))
        self._metrics_task: asyncio.Task[None] | None = None
        self.backend: Backend | None = None
        self._server: Any = None
        self._health_task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._worker_procs: list[asyncio.subprocess.Process] = []
        self._worker_keepers: list[asyncio.Task[None]] = []  # restart workers that die
        self._stopping = False
        self._snapshot_task: asyncio.Task[None] | None = None
        self._fleet_changed = asyncio.Event()
        self.fleet_path = Path(cfg.runtime_dir).resolve() / "fleet.json"
        self.reports_dir = Path(cfg.runtime_dir).resolve() / "workers"
        self.clock = WallClock()
        # built before anything starts, so a bad control configuration fails fast; a real
        # model without a profile is planned with this machine's, measured in start()
        self.controls: dict[str, ModelControl] = build_controls(cfg) if cfg.control.enabled else {}
        self.ledger = CostLedger(planning_catalogue(cfg))
        self.counts: LiveCounts | StoreCounts = LiveCounts(self.front.arrivals, self.front.inflight,
                                 self.reports_dir if self.workers > 1 else None)
        self.control: ControlLoop | None = None
        self._admin_server: Any = None
        self.runtime: FunctionRuntime | None = None
        self.registry: ModelRegistry | None = None
        self._measured: dict[str, Path] = {}

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
        if self.store is not None:
            await self._start_store()
            if self.role == "frontend":
                await self._start_follower()
                return
        to_measure = [m for m in self.cfg.models if self.controls and m.kind == "minilm"
                      and m.profile is None and self.cfg.fleet.backend == "local"]
        if to_measure:
            measured = {m.name: await ensure_measured(self.cfg, m) for m in to_measure}
            self.controls = build_controls(self.cfg, measured=measured)
            self._measured = measured
        if self.cfg.faas.enabled and self.controls:  # spill follows a plan's budgets
            await self._start_faas()
        for m in self.cfg.models:
            self.fleet.fallback_metadata[m.name] = model_metadata(m)
            self.fleet.model_docs[m.name] = m.model_dump(mode="json")
        self.backend = make_backend(self.cfg.fleet.backend, self.cfg, self._on_exit,
                                    self._on_notice)
        budget = max(self.front.budget_s.values(), default=30.0)
        self.control = ControlLoop(
            self.controls, self.backend, self.fleet, self.ledger, self.clock, self.counts,
            inflight=self.counts, interval_s=self.cfg.control.interval_s,
            history_s=self.cfg.control.history_s, ready_timeout_s=self.ready_timeout_s,
            drain_timeout_s=budget + 1.0,
            settle_s=1.0 if self.workers > 1 or self.store is not None else 0.0,
            decisions_kept=self.cfg.control.decisions_kept, warm_start=self.warm_start,
            min_instances=self.min_instances, faas=self.front.faas is not None,
        )
        if self.cfg.control.enabled:
            self.registry = ModelRegistry(
                self.cfg, self.front, self.control, self.backend, self._build_control,
                runtime=self.runtime, starting_instances=self.cfg.fleet.instances,
                drain_timeout_s=budget + 1.0)
        self.front.admin = ControlAdmin(self.control, self.backend, self.registry)
        await asyncio.to_thread(self._clear_reports)
        if self.store is not None:
            await self._share_state()
        sock = None
        if self.role == "all":
            sock = await self._serve_public()
        try:
            if not self.warm_start:
                await self._start_fleet()
        except BaseException:
            await self.stop()
            raise
        self._health_task = asyncio.create_task(self._health_loop())
        if self.front.metrics is not None:
            self._metrics_task = asyncio.create_task(
                ControlMetrics(self.control, self.cfg.metrics.window_s).run())
        if self.controls:
            await self.control.start(run=not self.defer_loop)
            log.info("control loop: policy %s every %g s for %s", self.cfg.control.policy,
                     self.control.interval_s, sorted(self.controls))
        if self.workers > 1 and sock is not None:  # after the instances: workers start
            if not self.fleet.admin_url:           # with the whole fleet
                await self._start_admin_server()
            await self._start_workers(sock)
            log.info("%d front-end worker processes share the port", self.workers)

    async def _serve_public(self) -> socket.socket:
        """The front end on its public port (inference, admin, metrics, dashboard)."""
        app = create_app(self.front)
        add_dashboard_route(app)
        sock = self._listen()
        self._server = await app.create_server(sock=sock, return_asyncio_server=True)
        await self._server.startup()
        await self._server.before_start()
        await self._server.after_start()
        log.info("front end listening on %s", self.url)
        return sock

    # ---- the shared state store (state.backend: redis) -------------------------------------
    async def _start_store(self) -> None:
        """Connect; a control plane leads (the provisioner waits for the lead, ``mark up``
        refuses to start a second loop) and adopts the models registered in the store."""
        assert self.store is not None
        await self.store.start()
        log.info("state store: %s", self.store.url)
        if self.role == "frontend":
            return
        self.leadership = Leadership(
            self.store, f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
            self.cfg.state.leader_ttl_s)
        if self.role == "provisioner":
            await self.leadership.acquire()
        elif not await self.leadership.try_acquire():
            raise Conflict(f"another control loop leads the state at {self.store.url} "
                           f"({await self.store.leader()}); start this host's front end alone "
                           "(mark up --frontend-only) or stop the other one")
        stored = await stored_models(self.store)
        if stored:
            by_name = {m.name: m for m in self.cfg.models}
            by_name.update({m.name: m for m in stored})  # as registered or updated last
            self.cfg.models[:] = list(by_name.values())
            for m in self.cfg.models:
                self.front.set_model(m)
            if self.cfg.control.enabled:
                self.controls = build_controls(self.cfg)
            log.info("models from the state store: %s", sorted(m.name for m in stored))
        self.fleet.snapshot_seq = await self.store.fleet_seq()  # numbering goes on
        self.counts = StoreCounts(self.store, self._controlled, self.front.inflight)
        self.front.arrivals.publisher = CountPublisher(source=f"{socket.gethostname()}:"
                                                              f"{os.getpid()}:")

    def _controlled(self) -> list[str]:
        return list(self.control.models) if self.control is not None else []

    async def _share_state(self) -> None:
        """Publish the fleet, the models and this process's counts; keep the lead."""
        store = self.store
        assert store is not None and self.front.arrivals.publisher is not None
        await self._start_admin_server()  # front ends anywhere forward /admin here
        if self.registry is not None:
            self.registry.on_change = lambda: sync_models(store, self.fleet.model_docs)
        await sync_models(store, self.fleet.model_docs)
        self.fleet.on_change = lambda _fleet: self._fleet_changed.set()
        plans = PlanPublisher(store)
        if self.control is not None:
            self.control.on_plan = plans.mark
            for mc in self.control.models.values():
                plans.mark(mc)
        self._store_tasks += [
            asyncio.create_task(plans.run()),
            asyncio.create_task(publish_fleet(
                self.fleet, store, self._fleet_changed,
                on_resync=lambda: sync_models(store, self.fleet.model_docs))),
            asyncio.create_task(publish_store(self.front, store, self.front.arrivals.publisher)),
        ]
        if self.leadership is not None:
            self._store_tasks.append(asyncio.create_task(self._keep_lead(self.leadership)))

    async def _keep_lead(self, lead: Leadership) -> None:
        await lead.keep()  # returns when another loop took the lead
        if self.control is not None:
            await self.control.stop()
            log.error("control loop stopped: another one leads now")

    async def _start_follower(self) -> None:
        """A front end alone: it serves the fleet the provisioner publishes in the store."""
        assert self.store is not None
        token = self.cfg.admin.effective_token()
        publisher = self.front.arrivals.publisher = CountPublisher(
            source=f"{socket.gethostname()}:{os.getpid()}:")
        snap = await self.store.get_fleet()
        if snap is not None:
            apply_snapshot(self.front, snap)
            attach(self.front, token)
        self._store_tasks += [
            asyncio.create_task(follow_store(self.front, self.store, token=token)),
            asyncio.create_task(publish_store(self.front, self.store, publisher)),
            asyncio.create_task(recheck_unhealthy(self.fleet, self.upstream,
                                                  self.cfg.fleet.health_interval_s)),
        ]
        sock = await self._serve_public()
        if self.workers > 1:
            await self._start_workers(sock)

    def _build_control(self, cfg: MarkConfig, model: ModelConfig) -> ModelControl:
        """A registered model's control (this machine's measured profile for a real model
        measured at start)."""
        return build_control(cfg, model, measured=self._measured.get(model.name))

    @property
    def ready_timeout_s(self) -> float:
        """How long a launch may take to pass its health check (EC2 boots: ``aws``'s)."""
        if self.cfg.fleet.backend == "aws":
            return self.cfg.aws.ready_timeout_s
        return self.cfg.fleet.ready_timeout_s

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
        if endpoint is None and self.cfg.fleet.backend == "aws":
            # real Lambda in the functions' region, SigV4-signed with boto3's credential
            # chain (make_spill signs for a fleet on AWS)
            endpoint = f"https://lambda.{self.cfg.faas.region}.amazonaws.com"
        elif endpoint is None:
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
        app: Sanic[Any, Any] = Sanic(f"mark_admin_{id(self)}", configure_logging=False)
        app.config.MOTD = False
        app.config.ACCESS_LOG = False
        app.config.TOUCHUP = False
        # the same token as the front end's port: a local process cannot skip it here
        add_admin_routes(app, lambda: self.front.admin, token=self.cfg.admin.effective_token())
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
        if self.store is None:  # else they follow the store
            await asyncio.to_thread(self.fleet.write_snapshot, self.fleet_path)
            self.fleet.on_change = lambda _fleet: self._fleet_changed.set()
            self._snapshot_task = asyncio.create_task(self._write_snapshots())
        # the configuration goes through a file only this user can read, never the command
        # line (``ps`` would show the admin token and API keys there)
        cfg_path = write_private(self.fleet_path.parent / "worker-config.json",
                                 self.cfg.model_dump_json().encode())
        for slot in range(1, self.workers):
            proc = await self._spawn_worker(sock, cfg_path, slot)
            self._worker_keepers.append(asyncio.create_task(
                self._keep_worker(sock, cfg_path, proc, slot)))

    async def _spawn_worker(self, sock: socket.socket, cfg_path: Path,
                            slot: int) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *with_pdeathsig([sys.executable, "-m", "frontend.worker", "--config",
                             str(cfg_path),
                             "--fleet", str(self.fleet_path), "--fd", str(sock.fileno()),
                             "--reports", str(self.reports_dir),
                             "--queues", str(self.queues_dir), "--slot", str(slot),
                             "--processes", str(self.workers)]),
            pass_fds=(sock.fileno(),), start_new_session=True,
            stdin=asyncio.subprocess.DEVNULL,
        )
        self._worker_procs.append(proc)
        return proc

    async def _keep_worker(self, sock: socket.socket, cfg_path: Path,
                           proc: asyncio.subprocess.Process, slot: int) -> None:
        """Start another worker whenever this one dies (killed, crashed) until the cluster
        stops, so the front end keeps its processes; a worker that keeps dying young is
        restarted ever later (at most every 10 s)."""
        pause_s = 0.1
        while True:
            started = time.monotonic()
            code = await proc.wait()
            if self._stopping:
                return
            process_dead(proc.pid)
            self._worker_procs.remove(proc)
            pause_s = 0.1 if time.monotonic() - started > 10.0 else min(pause_s * 2, 10.0)
            log.error("front-end worker process %d exited with code %s; starting another in "
                      "%.1f s", proc.pid, code, pause_s)
            await asyncio.sleep(pause_s)
            if self._stopping:
                return
            proc = await self._spawn_worker(sock, cfg_path, slot)  # its slot, zeroed

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
        for store_task in self._store_tasks:
            store_task.cancel()
        await asyncio.gather(*self._store_tasks, return_exceptions=True)
        if self.leadership is not None:
            await self.leadership.release()
        for task in (self._health_task, self._snapshot_task, self._metrics_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._stopping = True
        for keeper in self._worker_keepers:
            keeper.cancel()
        await asyncio.gather(*self._worker_keepers, return_exceptions=True)
        for proc in self._worker_procs:
            if proc.returncode is None:
                proc.terminate()
        await asyncio.gather(*(p.wait() for p in self._worker_procs))
        for proc in self._worker_procs:
            process_dead(proc.pid)
        self.front.cells.close()
        if self.front.metrics is not None:
            self.front.metrics.close()
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
        if self.store is not None:
            await self.store.close()
        if not self.cfg.frontend.port:
            release_port(self.port)
        self._stopped.set()

    async def serve_forever(self) -> None:
        await self._stopped.wait()


class ClusterThread:
    """Run a :class:`LocalCluster` on its own event loop in a daemon thread."""

    def __init__(self, cfg: MarkConfig,
                 warm_start: Mapping[str, np.ndarray] | None = None,
                 defer_loop: bool = False, role: str = "all") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.cluster: LocalCluster = self.call(self._make(cfg, warm_start, defer_loop, role))
        self.call(self.cluster.start(), timeout=600)

    @staticmethod
    async def _make(cfg: MarkConfig, warm_start: Mapping[str, np.ndarray] | None,
                    defer_loop: bool, role: str) -> LocalCluster:
        return LocalCluster(cfg, warm_start, defer_loop, role)  # built on the cluster's loop

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
