"""What the live benchmarks share: the local cluster they run and one replay through it.

The cluster is ``mark up`` in process: the front end, real Triton processes serving the
``profiled`` Inception-v3 model with the c5/m5 profile's service times, and the control loop
with the ``mark`` policy every 10 s over the CPU types (:func:`live_config`). A replay
(:func:`replay`) sends a trace slice open loop after the loop's first step, which has seen
the slice's past (``history``) as the simulator's first step does, and collects the client's
results, the whole run's bill and the loop's decisions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from scenarios import CPU_TYPES, TWITTER

from mark.cluster import ClusterThread
from mark.core.config import (
    ControlConfig,
    FleetConfig,
    FrontendConfig,
    FunctionsConfig,
    MarkConfig,
    ModelConfig,
)
from mark.core.slo import Slo
from mark.core.workload import load_trace
from mark.core.workload.arrivals import spread_trace
from mark.core.workload.traces import Trace
from mark.loadgen import LoadClient, LoadResult

MODEL = "incep"
PROFILE = "inception-v3"
SLO = Slo(500.0, 98.0)
INTERVAL_S = 10.0


def slice_counts(start_min: int, minutes: int, scale: float, seed: int) -> np.ndarray:
    """Per-second counts of the Twitter trace from ``start_min``, times ``scale`` (the
    fractions rounded up or down at random, so the mean is kept)."""
    c = load_trace(TWITTER).counts[start_min * 60:(start_min + minutes) * 60]
    x = c.astype(np.float64) * scale
    base = np.floor(x)
    return (base + (np.random.default_rng(seed).random(x.size) < x - base)).astype(np.int64)


def live_config(runtime: Path, launch_delay_s: float, faas: FunctionsConfig) -> MarkConfig:
    """The cluster the live benchmarks run, with no instance until the loop's first step."""
    return MarkConfig(
        models=[ModelConfig(name=MODEL, kind="profiled", profile=PROFILE, max_batch_size=16,
                            slo_latency_ms=SLO.latency_ms, slo_percentile=SLO.percentile)],
        fleet=FleetConfig(instances=0, launch_delay_s=launch_delay_s),
        control=ControlConfig(interval_s=INTERVAL_S, types=list(CPU_TYPES)),
        frontend=FrontendConfig(port=0, workers=1),
        faas=faas,
        runtime_dir=runtime,
    )


@dataclass
class Replay:
    """What one replay gave: the client's results, the whole run's bill (the starting fleet
    included, as the simulator's), the loop's decisions, when the replay started
    (``perf_counter``) and what ``extra`` collected."""

    result: LoadResult
    cost_usd: float | None
    decisions: list[dict[str, Any]]
    started_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    def attainment(self) -> float:
        lat = np.asarray(self.result.latencies_s)
        sent = self.result.sent
        return int((lat <= SLO.latency_ms / 1000.0).sum()) / sent if sent else 1.0

    def launches(self) -> int:
        return sum(1 for d in self.decisions for e in d["events"] if e["event"] == "launched")

    def timeline(self) -> list[dict[str, Any]]:
        """Each step's forecast and capacity by market."""
        return [{"t": d["t"], "forecast_rps": d["forecast_rps"],
                 **{f"cap_{k}_rps": v for k, v in d["capacity_rps"].items()}}
                for d in self.decisions]


Extra = Callable[[ClusterThread, aiohttp.ClientSession, float], Awaitable[dict[str, Any]]]


def replay(cfg: MarkConfig, counts: np.ndarray, history: np.ndarray, seed: int,
           extra: Extra | None = None) -> Replay:
    """Replay ``counts`` through the cluster, its loop's past being ``history``; ``extra``
    (cluster, session, replay start) collects more before the cluster stops."""
    cluster = ClusterThread(cfg, warm_start={MODEL: history}, defer_loop=True)
    try:
        loop = cluster.cluster.control
        assert loop is not None
        arrivals = spread_trace(Trace(counts, 1), seed)

        async def run() -> Replay:
            async with LoadClient(cluster.url, MODEL, timeout_s=60.0, pool=4096) as client:
                # the replay's second 0 is the loop's: start both on the same whole second
                at = float(np.ceil(loop.clock.now() + 0.5))
                cluster.loop.call_soon_threadsafe(loop.begin, at)
                await loop.clock.sleep_until(at)
                t0 = time.perf_counter()
                res = await client.open_loop(arrivals)
                cost = await client.cost_usd()
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{cluster.url}/admin/decisions?since=0") as r:
                    decisions = await r.json()
                more = await extra(cluster, s, t0) if extra is not None else {}
            return Replay(res, cost, decisions, t0, more)

        return asyncio.run(run())
    finally:
        cluster.stop()


def sim_timeline(tl: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The simulator's timeline in :meth:`Replay.timeline`'s form."""
    tl = tl or {}
    return [{"t": float(t), "forecast_rps": float(f), "cap_on_demand_rps": float(od),
             "cap_spot_rps": float(sp)}
            for t, f, od, sp in zip(tl.get("t_s", []), tl.get("forecast_rps", []),
                                    tl.get("cap_on_demand_rps", []),
                                    tl.get("cap_spot_rps", []), strict=False)]
