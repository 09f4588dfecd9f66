"""The twin check: one trace slice live through ``mark up`` and through ``mark simulate``.

A 10-minute slice of the shipped Twitter trace (day 1 from minute 213 by default: it opens
on a 4.5x burst), scaled to this machine, is replayed open loop through the cluster (in
process, as ``mark up`` runs it: the front end, real Triton processes serving the
``profiled`` Inception-v3 model with the profile's service times and spread, the control
loop with the ``mark`` policy, spill to the local Lambda-compatible runtime on), and the same
counts run through the simulator with the same profile, catalogue (the launch delay this
deployment really has), SLO, policy and options. Neither world sees the slice before it
happens: both policies' past is the 10 minutes before it (a separate warm-up slice), and the
first step's launches are the starting fleet in both.

Writes ``{"live": {...}, "sim": {...}, "ratio": {...}}``: each side with ``requests``,
``p50_ms``, ``p98_ms``, ``slo_attainment``, ``spill_share``, ``cost_usd`` (and launches,
lost, errors), and ``ratio`` = live / sim for ``p50``, ``p98``, ``cost`` and
``spill_share``. The target is agreement within 10% on p50, p98 and cost.

    .venv/bin/python bench/twin.py [--minutes 10] [--scale 0.15]
        [--json bench/results/twin.json] [--png bench/results/twin.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from live import (  # noqa: E402
    INTERVAL_S,
    MODEL,
    PROFILE,
    SLO,
    live_config,
    replay,
    sim_timeline,
    slice_counts,
)
from live_control import plot  # noqa: E402
from scenarios import CPU_TYPES  # noqa: E402

from mark.cluster import ClusterThread  # noqa: E402
from mark.control import planning_catalogue  # noqa: E402
from mark.core.config import FunctionsConfig, MarkConfig  # noqa: E402
from mark.sim import simulate  # noqa: E402

WARMUP_MIN = 10
TARGET = 0.10  # |live / sim - 1| on p50, p98 and cost


def config(runtime: Path, launch_delay_s: float) -> MarkConfig:
    return live_config(runtime, launch_delay_s, FunctionsConfig(enabled=True, port=0))


async def faas_and_misses(cluster: ClusterThread, s: aiohttp.ClientSession,
                          t0: float) -> dict[str, Any]:
    """The function's counters and the front end's misses by minute."""
    runtime = cluster.cluster.runtime
    faas: dict[str, Any] = {}
    if runtime is not None:
        async with s.get(f"{runtime.url}/mark/stats") as r:
            fn = (await r.json()).get(f"mark-{MODEL}", {})
        faas = {k: fn.get(k) for k in ("invocations", "cold_starts", "throttles")}
        if fn.get("cold_starts"):
            faas["mean_init_ms"] = round(fn["init_ms"] / fn["cold_starts"], 1)
    return {"faas": faas, "misses": misses_by_minute(cluster, t0)}


def live(counts: np.ndarray, history: np.ndarray, cfg: MarkConfig, seed: int) -> dict[str, Any]:
    """Replay ``counts`` through the cluster, its loop's past being ``history``."""
    r = replay(cfg, counts, history, seed, faas_and_misses)
    res = r.result
    pct = res.percentiles_ms()
    return {
        "requests": res.sent, "lost": res.lost, "errors": sum(res.errors.values()),
        "p50_ms": round(pct["p50"], 2), "p98_ms": round(pct["p98"], 2),
        "slo_attainment": r.attainment(),
        "spill_share": res.spilled / res.sent if res.sent else 0.0,
        "cost_usd": r.cost_usd,
        "missed_by_backend": res.missed(SLO.latency_ms / 1000.0),
        "front_end_misses_by_minute": r.extra["misses"],
        "faas": r.extra["faas"],
        "launches": r.launches(),
        "timeline": r.timeline(),
    }


def misses_by_minute(cluster: ClusterThread, t0: float) -> dict[str, dict[str, int]]:
    """Requests the front end answered later than the SLO (its own time: queue + upstream),
    by minute of the replay and backend, from its timing log."""
    out: dict[str, dict[str, int]] = {}
    slo_s = SLO.latency_ms / 1000.0
    for r in cluster.cluster.front.timings.records:
        if r.queued_s + r.upstream_s > slo_s:
            m = out.setdefault(str(int((r.arrival_s - t0) // 60)), {})
            m[r.backend] = m.get(r.backend, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def simulated(counts: np.ndarray, history: np.ndarray, cfg: MarkConfig,
              seed: int) -> dict[str, Any]:
    r = simulate(counts, "mark", profile=PROFILE, catalogue=planning_catalogue(cfg), slo=SLO,
                 types=CPU_TYPES, seed=seed, history=history,
                 policy_kw={"interval_s": INTERVAL_S})
    doc = r.to_json()
    second = np.repeat(np.arange(counts.size), counts)  # requests in arrival order
    late = r.latencies_s > SLO.latency_ms / 1000.0
    misses: dict[str, dict[str, int]] = {}
    for minute, spilled in zip(second[late] // 60, r.spilled[late], strict=True):
        m = misses.setdefault(str(int(minute)), {})
        key = "faas" if spilled else "iaas"
        m[key] = m.get(key, 0) + 1
    return {
        "requests": r.requests, "lost": 0, "errors": 0,
        "p50_ms": round(float(r.latency_ms["p50"]), 2),
        "p98_ms": round(float(r.latency_ms["p98"]), 2),
        "slo_attainment": float(r.slo_attainment), "spill_share": float(doc["spill_share"]),
        "cost_usd": float(r.cost_usd["total"]), "launches": int(doc["launches"]),
        "cost_by_market_usd": {k: round(float(v), 6) for k, v in r.cost_usd.items()},
        "misses_by_minute": misses,
        "faas": {k: doc[k] for k in ("faas_invocations", "faas_cold_starts", "faas_throttled",
                                     "faas_max_concurrency") if k in doc},
        "timeline": sim_timeline(r.timeline),
    }


def ratios(lv: dict[str, Any], sim: dict[str, Any]) -> dict[str, float | None]:
    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or b == 0 else round(a / b, 4)

    return {"p50": ratio(lv["p50_ms"], sim["p50_ms"]), "p98": ratio(lv["p98_ms"], sim["p98_ms"]),
            "cost": ratio(lv["cost_usd"], sim["cost_usd"]),
            "spill_share": ratio(lv["spill_share"], sim["spill_share"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--start-min", type=int, default=213, help="minute of the trace to start")
    ap.add_argument("--minutes", type=int, default=10, help="length of the slice")
    ap.add_argument("--scale", type=float, default=0.15, help="multiplies the trace's rates")
    ap.add_argument("--launch-delay", type=float, default=20.0, help="emulated boot (s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(REPO / "bench/results/twin.json"))
    ap.add_argument("--png", default=str(REPO / "bench/results/twin.png"))
    args = ap.parse_args()
    if args.minutes < 1 or args.start_min < WARMUP_MIN:
        ap.error(f"--minutes must be >= 1 and --start-min >= {WARMUP_MIN} (the warm-up slice)")
    counts = slice_counts(args.start_min, args.minutes, args.scale, args.seed)
    history = slice_counts(args.start_min - WARMUP_MIN, WARMUP_MIN, args.scale, args.seed + 1)
    with tempfile.TemporaryDirectory(prefix="mark-twin-") as tmp:
        cfg = config(Path(tmp), args.launch_delay)
        t0 = time.perf_counter()
        sim = simulated(counts, history, cfg, args.seed)
        sim_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        lv = live(counts, history, cfg, args.seed)
        live_s = time.perf_counter() - t0
    ratio = ratios(lv, sim)
    within = {k: bool(v is not None and abs(v - 1.0) <= TARGET) for k, v in ratio.items()
              if k in ("p50", "p98", "cost")}
    out = {"slice": {"trace": "twitter-2021-08-week1", "start_min": args.start_min,
                     "minutes": args.minutes, "warmup_min": WARMUP_MIN, "scale": args.scale,
                     "requests": int(counts.sum()), "peak_rps": int(counts.max())},
           "launch_delay_s": args.launch_delay, "policy": "mark (spill to FaaS on)",
           "slo": {"latency_ms": SLO.latency_ms, "percentile": SLO.percentile},
           "live": lv, "sim": sim, "ratio": ratio, "within_10pct": within,
           "wall_s": {"live": round(live_s, 1), "sim": round(sim_s, 2)}}
    print(f"{'world':6s} {'requests':>9s} {'p50 ms':>8s} {'p98 ms':>8s} {'SLO att':>8s} "
          f"{'spill':>7s} {'cost $':>9s} {'launches':>8s} {'lost':>5s}")
    for world in ("live", "sim"):
        r = out[world]
        cost = "-" if r["cost_usd"] is None else f"{r['cost_usd']:.4f}"
        print(f"{world:6s} {r['requests']:9d} {r['p50_ms']:8.1f} {r['p98_ms']:8.1f} "
              f"{r['slo_attainment']:8.2%} {r['spill_share']:7.3f} {cost:>9s} "
              f"{r['launches']:8d} {r['lost']:5d}")
    print("live / sim: " + "  ".join(f"{k} {v}" for k, v in ratio.items())
          + f"  (within 10%: {within})")
    Path(args.json).write_text(json.dumps(out, indent=1))
    plot(counts, {"live": lv, "simulated": sim}, Path(args.png))
    print(f"wrote {args.json} and {args.png}")


if __name__ == "__main__":
    main()
