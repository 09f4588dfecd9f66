"""``mark up``: the local cluster (front end + local Triton instances) on loopback."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from mark.core.config import MarkConfig, load_config
from mark.core.logs import configure_logging

log = logging.getLogger("mark.up")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("up", help="start the local cluster on loopback")
    p.add_argument("--config", help="YAML/TOML configuration (every value has a default)")
    p.add_argument("--port", type=int, help="front-end port (default 8080)")
    p.add_argument("--instances", type=int, help="number of local instances")
    p.add_argument("--frontend-only", action="store_true",
                   help="serve the front end alone, following the fleet `mark provisioner` "
                   "publishes in the shared state store (needs state.backend: redis)")
    p.set_defaults(func=run, role=None)


def admin_notice(cfg: MarkConfig) -> str:
    """How the admin API (and the inference routes) are protected, said at start."""
    if cfg.admin.effective_token():
        admin = "admin API: bearer token required"
    else:
        admin = "admin API: loopback only (no admin token set; set MARK_ADMIN_TOKEN)"
    keys = len(cfg.frontend.effective_api_keys())
    return f"{admin}; inference: {f'{keys} API key(s) accepted' if keys else 'open'}"


async def _serve(args: argparse.Namespace) -> int:
    from mark.cluster import LocalCluster

    cfg = load_config(args.config)
    log_cfg = cfg.logging.model_copy(update={"level": "DEBUG"}) if getattr(
        args, "verbose", False) else cfg.logging
    configure_logging(log_cfg, secrets=[cfg.admin.effective_token(),
                                        *cfg.frontend.effective_api_keys()])
    print(f"mark: {admin_notice(cfg)}", flush=True)
    if args.port is not None:
        cfg.frontend.port = args.port
    if args.instances is not None:
        cfg.fleet.instances = args.instances
        cfg.fleet.weights = None
    role = args.role or ("frontend" if getattr(args, "frontend_only", False) else "all")
    cluster = LocalCluster(cfg, role=role)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(cluster.start())
    waiting = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if starting in done and starting.exception() is None:
        where = cluster.fleet.admin_url if role == "provisioner" else cluster.url
        print(f"mark: {role if role != 'all' else 'serving'} {[m.name for m in cfg.models]} "
              f"on {where} with {len(cluster.fleet.instances)} instance(s); Ctrl-C to stop",
              flush=True)
        await waiting
    elif starting in done:
        waiting.cancel()
        await cluster.stop()
        raise starting.exception()  # type: ignore[misc]
    else:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
    log.info("stopping")
    await cluster.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    import uvloop

    return uvloop.run(_serve(args))
