"""The local cluster: a backend's instances behind the Sanic front end, in one event loop.

``LocalCluster`` is what ``mark up`` runs and what the tests start (in a thread of its own
via :class:`ClusterThread`, so blocking clients such as ``tritonclient`` can talk to it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from frontend.app import FrontEnd, create_app
from frontend.fleet import Fleet
from frontend.upstream import Upstream
from mark.backends import Backend, LaunchSpec, make_backend
from mark.backends.local import free_port, release_port, with_pdeathsig
from mark.core.config import MarkConfig
from mark.core.instances import Instance, InstanceState

log = logging.getLogger(__name__)
T = TypeVar("T")


class LocalCluster:
    def __init__(self, cfg: MarkConfig) -> None:
        self.cfg = cfg
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

    @property
    def url(self) -> str:
        return f"http://{self.cfg.frontend.host}:{self.port}"

    def _on_exit(self, inst: Instance, code: int) -> None:
        self.fleet.remove(inst.id, f"process exited with code {code}")

    async def start(self) -> None:
        self.backend = make_backend(self.cfg.fleet.backend, self.cfg, self._on_exit)
        app = create_app(self.front)
        sock = self._listen()
        self._server = await app.create_server(sock=sock, return_asyncio_server=True)
        await self._server.startup()
        await self._server.before_start()
        await self._server.after_start()
        log.info("front end listening on %s", self.url)
        n = self.cfg.fleet.instances
        weights: list[float | None] = (
            [None] * n if self.cfg.fleet.weights is None else [*self.cfg.fleet.weights]
        )
        try:
            await asyncio.gather(*(self.add_instance(w) for w in weights))
        except BaseException:
            await self.stop()
            raise
        self._health_task = asyncio.create_task(self._health_loop())
        if self.workers > 1:  # after the instances, so workers start with the whole fleet
            await self._start_workers(sock)
            log.info("%d front-end worker processes share the port", self.workers)

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
                                 "--fleet", str(self.fleet_path), "--fd", str(sock.fileno())]),
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
        assert self.backend is not None
        spec = LaunchSpec(instance_type=self.cfg.fleet.instance_type,
                          models=tuple(m.name for m in self.cfg.models))
        inst = await self.backend.launch(spec)
        inst.capacity_rps = weight or min(m.capacity_rps for m in self.cfg.models)
        await self.backend.wait_ready(inst.id, self.cfg.fleet.ready_timeout_s)
        self.fleet.upsert(inst)
        return inst

    async def _health_loop(self) -> None:
        """Take unhealthy instances out of routing; bring recovered ones back."""
        interval = self.cfg.fleet.health_interval_s
        probe = Upstream(pool_size=4, connect_timeout_s=self.cfg.frontend.connect_timeout_s,
                         timeout_s=max(1.0, interval))

        def forget(inst: Instance) -> None:  # no pool outlives its instance's place in the fleet
            probe.drop(inst.url)

        self.fleet.on_leave.append(forget)
        try:
            while True:
                await asyncio.sleep(interval)
                for inst in list(self.fleet.instances.values()):
                    if inst.state == InstanceState.TERMINATED:
                        self.fleet.remove(inst.id, "terminated")
                        continue
                    ok = await probe.healthy(inst.url)
                    if ok and inst.state == InstanceState.UNHEALTHY:
                        self.fleet.set_state(inst.id, InstanceState.READY, "health check passed")
                    elif not ok and inst.state == InstanceState.READY:
                        self.fleet.set_state(inst.id, InstanceState.UNHEALTHY, "health check failed")
        finally:
            self.fleet.on_leave.remove(forget)
            await probe.close()

    async def stop(self) -> None:
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
        await self.upstream.close()
        if self.backend is not None:
            await self.backend.close()
        if not self.cfg.frontend.port:
            release_port(self.port)
        self._stopped.set()

    async def serve_forever(self) -> None:
        await self._stopped.wait()


class ClusterThread:
    """Run a :class:`LocalCluster` on its own event loop in a daemon thread."""

    def __init__(self, cfg: MarkConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.cluster: LocalCluster = self.call(self._make(cfg))
        self.call(self.cluster.start(), timeout=600)

    @staticmethod
    async def _make(cfg: MarkConfig) -> LocalCluster:
        return LocalCluster(cfg)  # built on the cluster's loop

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
