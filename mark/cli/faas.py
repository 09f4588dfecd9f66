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
    p.add_argument("--gunicorn", action="store_true",
                   help="serve under gunicorn (aiohttp's worker, one process)")
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


def _gunicorn(args: argparse.Namespace) -> int:
    """Replace this process with gunicorn serving :mod:`mark.faas.gunicorn`."""
    import os
    import sys

    from mark.faas.gunicorn import CONFIG_ENV

    cfg = load_config(args.config)
    port = cfg.faas.port if args.port is None else args.port
    os.environ[CONFIG_ENV] = cfg.model_dump_json()
    argv = [sys.executable, "-m", "gunicorn", "mark.faas.gunicorn:app",
            "--worker-class", "aiohttp.GunicornWebWorker", "--workers", "1",
            "--bind", f"{cfg.faas.host}:{port}", "--graceful-timeout", "5"]
    print(f"mark: functions {[cfg.faas.function_prefix + m.name for m in cfg.models]} under "
          f"gunicorn on http://{cfg.faas.host}:{port}", flush=True)
    os.execv(sys.executable, argv)
    return 0  # not reached


def run(args: argparse.Namespace) -> int:
    if args.gunicorn:
        return _gunicorn(args)
    import uvloop

    return uvloop.run(_serve(args))
