"""Measuring a model's service time per batch size on a live Triton instance of this machine.

One local instance is started; for each batch size, requests of that many rows are sent one
at a time (so each executes as exactly one batch), and the per-batch compute time is read
back from Triton's own statistics (``/v2/models/M/stats``: compute input + infer + output,
per batch size), so HTTP overhead is not counted as service time. The result has the shape
of a profile file (:mod:`mark.core.profiles`). ``mark profile`` prints it; ``mark up``
measures a real model without a configured profile once and caches the result
(:func:`ensure_measured`), so the control loop plans with this machine's speed.
"""

from __future__ import annotations

import json
import logging
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from mark.backends.base import LaunchSpec
from mark.backends.local import LocalBackend
from mark.core.config import MarkConfig, ModelConfig
from mark.core.errors import ConfigError
from mark.loadgen import build_request

log = logging.getLogger(__name__)

#: Batch sizes and batches per size of the measurement ``mark up`` makes once.
QUICK_BATCHES = (1, 2, 4, 8, 16, 32)
QUICK_REPEATS = 5


def _batch_compute_ms(stats: dict[str, Any]) -> dict[int, tuple[int, float]]:
    out: dict[int, tuple[int, float]] = {}
    for b in stats["model_stats"][0].get("batch_stats", []):
        parts = [b[k] for k in ("compute_input", "compute_infer", "compute_output")]
        count = int(parts[1]["count"])
        if count:
            out[int(b["batch_size"])] = (count, sum(int(p["ns"]) for p in parts) / 1e6)
    return out


async def measure(cfg: MarkConfig, model: str, batches: list[int], repeats: int,
                  instance_type: str = "local") -> dict[str, Any]:
    """The profile of ``model`` (as configured in ``cfg``) measured on this machine."""
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


def measured_path(cfg: MarkConfig, model: ModelConfig) -> Path:
    """Where ``mark up`` caches the measured profile of ``model``."""
    return Path(cfg.runtime_dir).resolve() / "profiles" / f"{model.name}-{model.kind}-measured.json"


async def ensure_measured(cfg: MarkConfig, model: ModelConfig) -> Path:
    """The cached measured profile of ``model``; measured now (once) when there is none."""
    path = measured_path(cfg, model)
    if path.exists():
        return path
    batches = [b for b in QUICK_BATCHES if b <= max(model.max_batch_size, 1)]
    log.info("measuring %s on this machine once (batches %s; cached in %s)", model.name,
             batches, path)
    prof = await measure(cfg, model.name, batches, QUICK_REPEATS)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(prof, indent=2))
    tmp.replace(path)
    return path
