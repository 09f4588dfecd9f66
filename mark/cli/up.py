"""``mark up``: the local cluster (front end + local Triton instances) on loopback."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from mark.core.config import load_config

log = logging.getLogger("mark.up")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("up", help="start the local cluster on loopback")
    p.add_argument("--config", help="YAML/TOML configuration (every value has a default)")
    p.add_argument("--port", type=int, help="front-end port (default 8080)")
    p.add_argument("--instances", type=int, help="number of local instances")
    p.set_defaults(func=run)


async def _serve(args: argparse.Namespace) -> int:
    from mark.cluster import LocalCluster

    cfg = load_config(args.config)
    if args.port is not None:
        cfg.frontend.port = args.port
    if args.instances is not None:
        cfg.fleet.instances = args.instances
        cfg.fleet.weights = None
    cluster = LocalCluster(cfg)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(cluster.start())
    waiting = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({starting, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if starting in done and starting.exception() is None:
        print(f"mark: serving {[m.name for m in cfg.models]} on {cluster.url} with "
              f"{len(cluster.fleet.instances)} instance(s); Ctrl-C to stop", flush=True)
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
