"""``mark load``: drive load at a front end (or Triton) and report latency and errors."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from mark.core.errors import BadRequest

if TYPE_CHECKING:
    import numpy as np

    from mark.loadgen import LoadResult


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("load", help="replay load through the front end and report latency")
    p.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--model", required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--rate", type=float, help="Poisson arrivals at this many requests/s")
    src.add_argument("--trace", help="trace file (requests per second), replayed open loop")
    src.add_argument("--concurrency", type=int, help="closed loop with this many workers")
    p.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--speedup", type=float, default=1.0, help="replay the trace X times faster")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    p.add_argument("--json", help="write the results here")
    p.set_defaults(func=run)


def arrivals(args: argparse.Namespace) -> np.ndarray:
    import numpy as np

    rng = np.random.default_rng(args.seed)
    if args.rate is not None:
        if args.rate <= 0:
            raise BadRequest(f"--rate must be > 0, got {args.rate}")
        n = rng.poisson(args.rate * args.duration)
        return np.sort(rng.uniform(0.0, args.duration, n))
    from mark.core.workload.arrivals import spread_trace
    from mark.core.workload.traces import load_trace

    if args.speedup <= 0:
        raise BadRequest(f"--speedup must be > 0, got {args.speedup}")
    trace = load_trace(args.trace)
    span_s = args.duration * args.speedup  # trace seconds replayed
    end_s = min(trace.duration_s, math.ceil(span_s / trace.step_s) * trace.step_s)
    at = spread_trace(trace.slice(0, end_s), seed=args.seed)
    return at[at < span_s] / args.speedup


async def _drive(args: argparse.Namespace) -> LoadResult:
    from mark.loadgen import LoadClient

    async with LoadClient(args.url, args.model, timeout_s=args.timeout) as client:
        before = await client.cost_usd()
        if args.concurrency is not None:
            result = await client.closed_loop(args.concurrency, args.duration)
        else:
            result = await client.open_loop(arrivals(args))
        after = await client.cost_usd()
        if before is not None and after is not None:
            result.cost_usd = after - before
        return result


def run(args: argparse.Namespace) -> int:
    result = asyncio.run(_drive(args))
    print(result.table())
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_json(), indent=2))
    return 0
