"""Extra front-end worker processes.

The control plane (``mark up``) serves in its own process and, with ``frontend.workers`` > 1,
starts ``workers - 1`` of these. All share one listening socket (inherited file descriptor),
so the kernel spreads connections over them. Each worker follows the control plane's fleet
through a snapshot file it rewrites atomically on every change (``runtime_dir/fleet.json``);
it shares each instance's spill-model state with the others through ``runtime_dir/queues``
(:mod:`frontend.queue_cells`);
that file is the seam a shared state store replaces later. A worker marks an instance that
fails a request unhealthy for itself at once, as the control plane does.

Run as ``python -m frontend.worker --config C --fleet F --fd N``; the control plane starts
it so that it dies with its parent. ``C`` is the configuration as JSON in a file only its owner
may read (:func:`write_private`): on the command line ``ps`` would show its admin token and
API keys to every user of the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
from pathlib import Path

import uvloop

from frontend.admin import ProxyAdmin
from frontend.app import FrontEnd, create_app
from frontend.arrivals import write_report
from frontend.dashboard import add_dashboard_route
from frontend.faas import make_spill
from frontend.fleet import Fleet
from frontend.metrics import FrontendMetrics, setup_multiprocess
from frontend.queue_cells import QueueCells
from frontend.shared import apply_snapshot, follow_store, publish_store, worker_id
from frontend.upstream import Upstream
from mark.core.config import MarkConfig
from mark.core.instances import InstanceState
from mark.core.logs import configure_logging
from mark.core.state import CountPublisher, make_state_store

log = logging.getLogger("mark.worker")


async def recheck_unhealthy(fleet: Fleet, upstream: Upstream, every_s: float) -> None:
    """Bring instances this worker marked unhealthy back once their health check passes."""
    while True:
        await asyncio.sleep(every_s)
        for inst in [i for i in fleet.instances.values() if i.state == InstanceState.UNHEALTHY]:
            trusted = inst.extra.get("remote_state") == InstanceState.READY.value
            if trusted and await upstream.healthy(inst.url):
                fleet.set_state(inst.id, InstanceState.READY, "health check passed")


async def report(front: FrontEnd, path: Path, period_s: float = 0.25) -> None:
    """Publish this worker's arrival counts, in-flight requests and applied snapshot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        while True:
            try:
                usd = front.faas.invoker.stats.usd if front.faas is not None else 0.0
                await asyncio.to_thread(write_report, path, front.arrivals,
                                        front.fleet.snapshot_seq, dict(front.inflight), usd)
            except OSError as exc:
                log.warning("cannot write worker report %s: %s", path, exc)
            await asyncio.sleep(period_s)
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)  # gone with this worker


async def follow(front: FrontEnd, path: Path, period_s: float = 0.1) -> None:
    """Apply the snapshot at ``path`` whenever its sequence number changes: the fleet and
    the registered models.

    The file is read every period: its mtime cannot tell two rewrites within one timestamp
    tick apart, its sequence number can (the control plane numbers each write).
    """
    seen: int | None = None
    while True:
        try:
            snap = json.loads(await asyncio.to_thread(path.read_bytes))
            seq = int(snap.get("seq", 0))
            if seq != seen:
                apply_snapshot(front, snap)
                seen = seq
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("cannot read fleet snapshot %s: %s", path, exc)
        await asyncio.sleep(period_s)


async def serve(cfg: MarkConfig, fleet_path: Path, fd: int, reports: Path | None = None,
                cells: QueueCells | None = None) -> None:
    fleet = Fleet([m.name for m in cfg.models])
    upstream = Upstream(cfg.frontend.pool_size, cfg.frontend.connect_timeout_s,
                        cfg.frontend.upstream_timeout_s, cfg.frontend.max_connections_per_instance)
    store = make_state_store(cfg.state) if cfg.state.backend != "memory" else None
    if store is not None:  # the fleet and the counts go through the shared store
        await store.start()
        first = await store.get_fleet()
        if first is not None:
            fleet.apply_snapshot(first)
    else:
        fleet.apply_snapshot(json.loads(await asyncio.to_thread(fleet_path.read_text)))
    if cfg.metrics.enabled:  # the control plane's directory, inherited (never cleared here)
        setup_multiprocess(Path(cfg.runtime_dir, "metrics"), worker=True)
    front = FrontEnd(cfg, fleet, upstream, cells=cells)
    if front.metrics is not None:
        _flush_on_sigterm(front.metrics)
    if fleet.admin_url:
        front.admin = ProxyAdmin(fleet.admin_url, upstream, cfg.admin.effective_token())
    if fleet.faas_url:
        front.faas = make_spill(cfg, fleet, fleet.faas_url)
    app = create_app(front)
    add_dashboard_route(app)
    sock = socket.socket(fileno=fd)
    server = await app.create_server(sock=sock, return_asyncio_server=True)
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    checker = asyncio.create_task(recheck_unhealthy(fleet, upstream, cfg.fleet.health_interval_s))
    if store is not None:
        front.sync_models(fleet.model_docs)
        front.arrivals.publisher = CountPublisher(source=f"{worker_id()}:")
        reporter: asyncio.Task[None] | None = asyncio.create_task(
            publish_store(front, store, front.arrivals.publisher))
    else:
        reporter = (asyncio.create_task(report(front, reports / f"{os.getpid()}.json"))
                    if reports is not None else None)
    try:
        if store is not None:
            await follow_store(front, store, token=cfg.admin.effective_token())
        else:
            await follow(front, fleet_path)
    finally:
        checker.cancel()
        if reporter is not None:
            reporter.cancel()


def _flush_on_sigterm(metrics: FrontendMetrics) -> None:
    """On SIGTERM, write the metrics' pending sums, then end as SIGTERM ends a process."""
    loop = asyncio.get_running_loop()

    def flush_and_die() -> None:
        metrics.flush()
        loop.remove_signal_handler(signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)

    loop.add_signal_handler(signal.SIGTERM, flush_and_die)


def write_private(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` readable and writable by its owner only (0600 from the
    start: created under that mode, then renamed into place); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True,
                    help="the configuration as JSON, in a file only its owner can read")
    ap.add_argument("--fleet", required=True)
    ap.add_argument("--fd", type=int, required=True)
    ap.add_argument("--reports", help="directory for this worker's report (counts, in flight)")
    ap.add_argument("--queues", help="directory of the instances' shared spill state")
    ap.add_argument("--slot", type=int, default=1, help="this worker's in-flight slot there")
    ap.add_argument("--processes", type=int, default=2, help="front-end processes sharing it")
    args = ap.parse_args()
    cfg = MarkConfig.model_validate_json(Path(args.config).read_bytes())
    configure_logging(cfg.logging, secrets=[cfg.admin.effective_token(),
                                            *cfg.frontend.effective_api_keys()])
    cells = (QueueCells(Path(args.queues), args.slot, args.processes) if args.queues
             else None)
    uvloop.run(serve(cfg, Path(args.fleet), args.fd, Path(args.reports) if args.reports else None,
                     cells))


if __name__ == "__main__":
    main()
