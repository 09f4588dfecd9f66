"""``mark profile``: measure a model's service time per batch size on a live Triton instance.

One local instance is started; for each batch size, requests of that many rows are sent
one at a time (so each executes as exactly one batch), and the per-batch compute time is
read back from Triton's own statistics (``/v2/models/M/stats``: compute input + infer +
output, per batch size), so HTTP overhead is not counted as service time. The result has
the shape of a profile file (``mark/profiles.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


def _batch_compute_ms(stats: dict[str, Any]) -> dict[int, tuple[int, float]]:
    out: dict[int, tuple[int, float]] = {}
    for b in stats["model_stats"][0].get("batch_stats", []):
        parts = [b[k] for k in ("compute_input", "compute_infer", "compute_output")]
        count = int(parts[1]["count"])
        if count:
            out[int(b["batch_size"])] = (count, sum(int(p["ns"]) for p in parts) / 1e6)
    return out


async def measure(model: str, cfg_path: str | None, batches: list[int], repeats: int,
                  instance_type: str) -> dict[str, Any]:
    import aiohttp

    from mark.backends.base import LaunchSpec
    from mark.backends.local import LocalBackend
    from mark.loadgen import build_request

    cfg = load_config(cfg_path)
    mcfg = cfg.model(model)
    if mcfg is None:
        raise ConfigError(f"unknown model {model!r}; configured: {[m.name for m in cfg.models]}")
    too_big = [b for b in batches if b < 1 or b > max(mcfg.max_batch_size, 1)]
    if too_big:
        raise ConfigError(f"batch sizes {too_big} outside 1..{mcfg.max_batch_size} of {model!r}")
    with tempfile.TemporaryDirectory(prefix="mark-profile-") as tmp:
        backend = LocalBackend(Path(tmp), [mcfg])
        try:
            inst = await backend.launch(LaunchSpec(instance_type=instance_type, models=(model,),
                                                   ready_after_s=0.0))
            await backend.wait_ready(inst.id, cfg.fleet.ready_timeout_s)
            base = f"{inst.url}/v2/models/{model}"
            async with aiohttp.ClientSession() as http:
                async with http.get(base) as r:
                    meta = await r.json()

                async def send(rows: int, n: int) -> None:
                    body = build_request(meta, rows=rows)
                    for _ in range(n):
                        async with http.post(f"{base}/infer", data=body) as r:
                            if r.status != 200:
                                raise ConfigError(f"infer failed: {r.status} {await r.text()}")

                async def stats() -> dict[int, tuple[int, float]]:
                    async with http.get(f"{base}/stats") as r:
                        return _batch_compute_ms(await r.json())

                for b in batches:  # warm-up: first batches of a size pay one-off costs
                    await send(b, 2)
                before = await stats()
                for b in batches:
                    await send(b, repeats)
                after = await stats()
        finally:
            await backend.close()
    batch_ms: dict[str, float] = {}
    slowest = 0.0
    for b in batches:
        n = after[b][0] - before.get(b, (0, 0.0))[0]
        ms = (after[b][1] - before.get(b, (0, 0.0))[1]) / n
        # a larger batch cannot take less time than a smaller one; what looks so is noise
        slowest = max(slowest, ms)
        batch_ms[str(b)] = round(slowest, 3)
    return {
        "model": model,
        "source": (f"measured by `mark profile` on {platform.node()} "
                   f"({platform.machine()}) at {datetime.now(UTC).isoformat(timespec='seconds')}; "
                   f"Triton compute time per batch, {repeats}+ batches per size"),
        "instances": {instance_type: {"batch_ms": batch_ms, "max_batch": max(batches)}},
    }


def run(args: argparse.Namespace) -> int:
    try:
        batches = sorted({int(x) for x in args.batches.split(",") if x.strip()})
    except ValueError:
        raise ConfigError(f"--batches must be comma-separated integers, got {args.batches!r}") \
            from None
    t0 = time.perf_counter()
    prof = asyncio.run(measure(args.model, args.config, batches, args.repeats, args.instance_type))
    rows = prof["instances"][args.instance_type]["batch_ms"]
    print(f"{'batch':>6} {'ms/batch':>10} {'ms/request':>11}")
    for b, ms in rows.items():
        print(f"{b:>6} {ms:>10.2f} {ms / int(b):>11.2f}")
    print(f"({time.perf_counter() - t0:.1f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(prof, indent=2))
    return 0
