"""A front-end process following the control plane through the shared state store.

With ``state.backend: redis`` every front-end process (on any host) follows the fleet
snapshot the control loop publishes in the store (its registered models with it) and
publishes its own arrival counts and a short report (the snapshot it applied, its requests
in flight per instance, its FaaS spend) there. The file seam in ``runtime_dir`` does the
same on one host without a store (:mod:`frontend.worker`).

If the store goes away, the process keeps serving with the last snapshot it applied, keeps
counting (:class:`~mark.core.state.CountPublisher` holds the counts and sends each batch
exactly once when the store is back) and resyncs the fleet as soon as it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

from frontend.admin import ProxyAdmin
from frontend.app import FrontEnd
from frontend.faas import make_spill
from mark.core.state import CountPublisher, StateStore, StateUnavailable

log = logging.getLogger(__name__)


def apply_snapshot(front: FrontEnd, snap: dict[str, Any]) -> None:
    """Adopt a published snapshot: its models first (so their instances have a router),
    then its fleet."""
    if "models" in snap:
        front.sync_models(snap["models"])
    front.fleet.apply_snapshot(snap)


def attach(front: FrontEnd, token: str | None) -> None:
    """Once the snapshot names them: the control plane's admin address (the admin routes
    forward there; a control plane that restarted publishes a new one, followed at once)
    and the functions' endpoint (spill; followed when it moves too)."""
    fleet = front.fleet
    admin = front.admin
    if fleet.admin_url and (admin is None or (isinstance(admin, ProxyAdmin)
                                              and admin.base_url != fleet.admin_url.rstrip("/"))):
        front.admin = ProxyAdmin(fleet.admin_url, front.upstream, token)
    if fleet.faas_url:
        if front.faas is None:
            front.faas = make_spill(front.cfg, fleet, fleet.faas_url)
        elif front.faas.invoker.endpoint_url != fleet.faas_url.rstrip("/"):
            # a provisioner restarted with its own runtime on another port: spill follows it
            # (its counters and spend go on; invocations under way finish where they went)
            log.warning("functions' endpoint moved from %s to %s; spilling there",
                        front.faas.invoker.endpoint_url, fleet.faas_url)
            front.faas.invoker.retarget(fleet.faas_url)


async def follow_store(front: FrontEnd, store: StateStore, period_s: float = 0.1,
                       token: str | None = None) -> None:
    """Apply the store's snapshot whenever its sequence number changes; serve with the last
    one applied while the store is unreachable (logged once per outage)."""
    seen: int | None = None
    down = False
    while True:
        try:
            seq = await store.fleet_seq()
            if seq != seen:
                snap = await store.get_fleet()
                if snap is not None:
                    apply_snapshot(front, snap)
                    attach(front, token)
                    seen = seq
            if down:
                down = False
                log.warning("state store %s reachable again: fleet resynced (snapshot %s)",
                            store.url, seen)
        except StateUnavailable as exc:
            if not down:
                down = True
                log.warning("state store unreachable; serving with the last fleet applied "
                            "(snapshot %s) until it is back: %s", seen, exc)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("cannot apply the published snapshot: %s", exc)
        await asyncio.sleep(period_s)


def worker_id() -> str:
    """This process's name in the store's reports: host and pid."""
    return f"{os.uname().nodename}:{os.getpid()}"


async def publish_store(front: FrontEnd, store: StateStore, publisher: CountPublisher,
                        period_s: float = 0.25, report_ttl_s: float = 5.0) -> None:
    """Flush this process's counts and publish its report every ``period_s``."""
    me = worker_id()
    try:
        while True:
            await publisher.flush(store)
            usd = front.faas.invoker.stats.usd if front.faas is not None else 0.0
            doc = {"pid": os.getpid(), "seq": front.fleet.snapshot_seq,
                   "inflight": {k: v for k, v in front.inflight.items() if v},
                   "faas_usd": usd, "written_at": time.time()}
            with contextlib.suppress(StateUnavailable):
                await store.put_report(me, doc, report_ttl_s)
            await asyncio.sleep(period_s)
    finally:
        with contextlib.suppress(Exception):  # a last flush on the way out
            await asyncio.wait_for(asyncio.shield(publisher.flush(store)), 1.0)
