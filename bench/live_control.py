"""The live control loop against its simulated twin: one trace slice through both worlds.

A 20-minute slice of the shipped Twitter trace (day 1 from minute 200: a 4.5x burst at
minute 13), scaled to this machine, is replayed open loop through ``mark up`` (in process:
the front end, real Triton processes serving the ``profiled`` Inception-v3 model with
c5/m5 service times, the control loop with the ``mark`` policy, FaaS unavailable), and the
same counts run through ``mark simulate`` with the same profile, catalogue (the launch delay
this deployment really has: ``fleet.launch_delay_s`` plus Triton's start) and policy options.
Neither world sees the slice before it happens: both policies' past is the 10 minutes before
it (a separate warm-up slice), and the first step's launches are the starting fleet in both.
Requests the simulator finds no instance for (FaaS unavailable) count as errors.

Prints and writes, for both: cost (USD; live from the cost ledger over the replay), SLO
attainment (98% under 500 ms), p50/p98 latency, requests lost, launches; and a PNG
timeline of the arrival rate, the policy's forecast and the capacity by market.

    .venv/bin/python bench/live_control.py [--minutes 20] [--scale 0.15]
        [--json bench/results/live_control.json] [--png bench/results/live_control.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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
from scenarios import CPU_TYPES  # noqa: E402

from mark.control import planning_catalogue  # noqa: E402
from mark.core.config import FunctionsConfig, MarkConfig  # noqa: E402
from mark.sim import simulate  # noqa: E402

__all__ = ["MODEL", "plot", "slice_counts"]

WARMUP_MIN = 10


def config(runtime: Path, launch_delay_s: float) -> MarkConfig:
    return live_config(runtime, launch_delay_s,
                       FunctionsConfig(enabled=False))  # the policy plans with FaaS unavailable


def live(counts: np.ndarray, history: np.ndarray, cfg: MarkConfig, seed: int) -> dict[str, Any]:
    """Replay ``counts`` through the cluster, its loop's past being ``history``."""
    r = replay(cfg, counts, history, seed)
    return {
        "requests": r.result.sent, "lost": r.result.lost,
        "errors": sum(r.result.errors.values()), "slo_attainment": r.attainment(),
        "latency_ms": {k: round(v, 2) for k, v in r.result.percentiles_ms().items()},
        "cost_usd": r.cost_usd, "launches": r.launches(), "timeline": r.timeline(),
    }


def simulated(counts: np.ndarray, history: np.ndarray, cfg: MarkConfig,
              seed: int) -> dict[str, Any]:
    r = simulate(counts, "mark", profile=PROFILE, catalogue=planning_catalogue(cfg), slo=SLO,
                 types=CPU_TYPES, seed=seed, history=history,
                 policy_kw={"interval_s": INTERVAL_S, "spill": False})
    doc = r.to_json()
    return {
        "requests": r.requests, "lost": 0, "errors": int(doc["failed"]),
        "slo_attainment": r.slo_attainment,
        # JSON's own numbers: a percentile among failed requests is null, not Infinity
        "latency_ms": {k: None if v is None else round(v, 2)
                       for k, v in doc["latency_ms"].items()},
        "cost_usd": r.cost_usd["total"], "launches": int(doc["launches"]),
        "timeline": sim_timeline(r.timeline),
    }


def plot(counts: np.ndarray, out: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    rate = counts[: counts.size // 10 * 10].reshape(-1, 10).mean(axis=1)
    for ax, world in zip(axes, ("live", "simulated"), strict=True):
        tl = out[world]["timeline"]
        t = [p["t"] for p in tl]
        ax.plot(np.arange(len(rate)) * 10, rate, color="0.6", lw=1, label="arrival rate (10 s)")
        ax.step(t, [p["forecast_rps"] for p in tl], where="post", label="forecast")
        ax.step(t, [p["cap_on_demand_rps"] for p in tl], where="post", label="capacity on demand")
        ax.step(t, [p["cap_spot_rps"] for p in tl], where="post", label="capacity spot")
        r = out[world]
        ax.set_title(f"{world}: cost ${r['cost_usd']:.4f}, SLO attainment "
                     f"{r['slo_attainment']:.2%}, launches {r['launches']}")
        ax.set_ylabel("requests/s")
        ax.set_xlim(left=0)
        ax.legend(loc="upper left", fontsize=8)
    axes[-1].set_xlabel("seconds into the replay")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--start-min", type=int, default=200, help="minute of the trace to start")
    ap.add_argument("--minutes", type=int, default=20, help="length of the slice (both worlds' "
                    "past: the 10 minutes before it)")
    ap.add_argument("--scale", type=float, default=0.15, help="multiplies the trace's rates")
    ap.add_argument("--launch-delay", type=float, default=20.0, help="emulated boot (s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(REPO / "bench/results/live_control.json"))
    ap.add_argument("--png", default=str(REPO / "bench/results/live_control.png"))
    args = ap.parse_args()
    if args.minutes < 1 or args.start_min < WARMUP_MIN:
        ap.error(f"--minutes must be >= 1 and --start-min >= {WARMUP_MIN} (the warm-up slice)")
    counts = slice_counts(args.start_min, args.minutes, args.scale, args.seed)
    history = slice_counts(args.start_min - WARMUP_MIN, WARMUP_MIN, args.scale, args.seed + 1)
    with tempfile.TemporaryDirectory(prefix="mark-live-") as tmp:
        cfg = config(Path(tmp), args.launch_delay)
        t0 = time.perf_counter()
        sim = simulated(counts, history, cfg, args.seed)
        sim_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        lv = live(counts, history, cfg, args.seed)
        live_s = time.perf_counter() - t0
    out = {"slice": {"trace": "twitter-2021-08-week1", "start_min": args.start_min,
                     "minutes": args.minutes, "warmup_min": WARMUP_MIN, "scale": args.scale,
                     "requests": int(counts.sum()),
                     "peak_rps": int(counts.max())},
           "launch_delay_s": args.launch_delay, "policy": "mark (FaaS unavailable)",
           "live": lv, "simulated": sim, "wall_s": {"live": live_s, "simulated": sim_s}}
    print(f"{'world':10s} {'cost $':>9s} {'SLO att':>8s} {'p50 ms':>8s} {'p98 ms':>8s} "
          f"{'lost':>5s} {'errors':>6s} {'launches':>8s} {'requests':>9s}")
    for world in ("live", "simulated"):
        r = out[world]
        cost = "-" if r["cost_usd"] is None else f"{r['cost_usd']:.4f}"
        p50, p98 = (f"{v:8.1f}" if v is not None else f"{'-':>8s}"
                    for v in (r["latency_ms"]["p50"], r["latency_ms"]["p98"]))
        print(f"{world:10s} {cost:>9s} {r['slo_attainment']:8.2%} {p50} "
              f"{p98} {r['lost']:5d} {r['errors']:6d} "
              f"{r['launches']:8d} {r['requests']:9d}")
    if lv["cost_usd"] and sim["cost_usd"]:
        print(f"live / simulated cost: {lv['cost_usd'] / sim['cost_usd']:.2f}")
    Path(args.json).write_text(json.dumps(out, indent=1))
    plot(counts, out, Path(args.png))
    print(f"wrote {args.json} and {args.png}")


if __name__ == "__main__":
    main()
