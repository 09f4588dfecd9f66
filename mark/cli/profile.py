"""``mark profile``: measure a model's service time per batch size on a live Triton instance
(how: :mod:`mark.profiling`); prints the table and writes a profile file."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from mark.core.config import load_config
from mark.core.errors import ConfigError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("profile", help="measure service time per batch size on a live instance")
    p.add_argument("--model", required=True, help="a model of the configuration (default: minilm)")
    p.add_argument("--config", help="configuration file (models)")
    p.add_argument("--batches", default="1,2,4,8,16,32", help="batch sizes to measure")
    p.add_argument("--repeats", type=int, default=20, help="batches measured per size")
    p.add_argument("--instance-type", default="local", help="type name to record")
    p.add_argument("--json", help="write the profile here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        batches = sorted({int(x) for x in args.batches.split(",") if x.strip()})
    except ValueError:
        raise ConfigError(f"--batches must be comma-separated integers, got {args.batches!r}") \
            from None
    t0 = time.perf_counter()
    from mark.profiling import measure

    prof = asyncio.run(measure(load_config(args.config), args.model, batches, args.repeats,
                               args.instance_type))
    rows = prof["instances"][args.instance_type]["batch_ms"]
    print(f"{'batch':>6} {'ms/batch':>10} {'ms/request':>11}")
    for b, ms in rows.items():
        print(f"{b:>6} {ms:>10.2f} {ms / int(b):>11.2f}")
    print(f"({time.perf_counter() - t0:.1f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(prof, indent=2))
    return 0
