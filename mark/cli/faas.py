"""``mark faas``: the local Lambda-compatible function runtime alone (one function per model of
the configuration; ``mark up`` starts the same runtime in-process)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from mark.core.config import load_config

log = logging.getLogger("mark.faas")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("faas", help="run the local AWS-Lambda-compatible function runtime")
    p.add_argument("--config", help="YAML/TOML configuration (models, faas section)")
    p.add_argument("--port", type=int, help="listen port (default: faas.port, 9000)")
    p.set_defaults(func=run)


async def _serve(args: argparse.Namespace) -> int:
    from mark.faas.runtime import FunctionRuntime

    cfg = load_config(args.config)
    runtime = FunctionRuntime(cfg, port=args.port)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await runtime.start()
    try:
        print(f"mark: functions {sorted(runtime.functions)} on {runtime.url} (AWS Lambda Invoke "
              f"API: boto3 with endpoint_url={runtime.url}); Ctrl-C to stop", flush=True)
        await stop.wait()
        log.info("stopping")
    finally:
        await runtime.stop()
    return 0


def run(args: argparse.Namespace) -> int:
    import uvloop

    return uvloop.run(_serve(args))
