"""Spill to FaaS on the local cluster: a +100% surge for 2 minutes, with and without spill.

``mark up`` in process (real Triton processes serving the ``profiled`` Inception-v3 model
on c5/m5 types, the control loop with the ``mark`` policy, a 20 s emulated boot) takes a
Poisson load at a base rate for 2 minutes, twice that for 2 minutes, then the base again
for 1 minute. Both arms start from the fleet the policy plans for the base rate (the same
pre-roll). Three arms:

- ``spill``: the planner plans with the FaaS tier (lean: FaaS absorbs what a short
  forecast miss leaves) and the front end sends a request to its model's function in the
  local Lambda-compatible runtime when its predicted completion at the instance WRR picked
  puts the SLO (98% under 500 ms) at risk;
- ``lean plan, no spill``: the same plan, but the front end may not spill (the surge waits
  in the instances' queues until new ones are ready): what spill is worth to that plan;
- ``no FaaS``: FaaS off, so the planner plans without it (it holds the recent peak).

Prints and writes, per arm: SLO attainment, p50/p98, spill share, lost, errors, cost (total
and FaaS), FaaS invocations, cold starts and throttles.

    .venv/bin/python bench/spill.py [--base 8] [--json bench/results/spill.json]
"""

from __future__ import annotations

import argparse
import asyncio
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

from live import MODEL, live_config  # noqa: E402

from mark.cluster import ClusterThread  # noqa: E402
from mark.core.config import FunctionsConfig, MarkConfig  # noqa: E402
from mark.loadgen import LoadClient  # noqa: E402

SLO_S = 0.5
PHASES = ((120.0, 1.0), (120.0, 2.0), (60.0, 1.0))  # (seconds, x base rate)


def config(runtime: Path, spill: bool, launch_delay_s: float) -> MarkConfig:
    return live_config(runtime, launch_delay_s,
                       FunctionsConfig(enabled=spill, port=0, concurrency=64))


def arrivals(base_rps: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out, t0 = [], 0.0
    for seconds, x in PHASES:
        n = rng.poisson(base_rps * x * seconds)
        out.append(t0 + np.sort(rng.uniform(0.0, seconds, n)))
        t0 += seconds
    return np.concatenate(out)


ARMS = {
    # name: (FaaS on for the planner, the front end spills)
    "spill": (True, True),
    "lean plan, no spill": (True, False),
    "no FaaS": (False, False),
}


def run_arm(arm: str, base_rps: float, launch_delay_s: float, seed: int) -> dict[str, Any]:
    plan_faas, spill = ARMS[arm]
    with tempfile.TemporaryDirectory(prefix="mark-spill-") as tmp:
        cfg = config(Path(tmp), plan_faas, launch_delay_s)
        preroll = np.random.default_rng(seed + 1).poisson(base_rps, 600).astype(np.int64)
        cluster = ClusterThread(cfg, warm_start={MODEL: preroll})
        if plan_faas and not spill:  # the plan counts on spill; the front end may not
            cluster.cluster.front.faas = None
        try:
            at = arrivals(base_rps, seed)

            async def drive() -> dict[str, Any]:
                async with LoadClient(cluster.url, MODEL, timeout_s=60.0, pool=4096) as c:
                    res = await c.open_loop(at)
                    cost_total = await c.cost_usd()
                async with aiohttp.ClientSession() as s:
                    async with s.get(f"{cluster.url}/admin/cost") as r:
                        cost = await r.json()
                    stats: dict[str, Any] = {}
                    if cluster.cluster.runtime is not None:
                        async with s.get(f"{cluster.cluster.runtime.url}/mark/stats") as r:
                            stats = await r.json()
                lat = np.asarray(res.latencies_s)
                fn: dict[str, Any] = next(iter(stats.values()), {})  # the one function
                return {
                    "arm": arm, "spill": spill, "requests": res.sent, "lost": res.lost,
                    "errors": sum(res.errors.values()),
                    "slo_attainment": float((lat <= SLO_S).sum() / res.sent),
                    "latency_ms": {k: round(v, 1) for k, v in res.percentiles_ms().items()},
                    "spill_share": res.spilled / res.sent if res.sent else 0.0,
                    "cost_usd": cost_total, "faas_usd": cost.get("faas", 0.0),
                    "faas_invocations": fn.get("invocations", 0),
                    "cold_starts": fn.get("cold_starts", 0),
                    "throttles": fn.get("throttles", 0),
                }

            return asyncio.run(drive())
        finally:
            cluster.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", type=float, default=8.0, help="base rate (requests/s)")
    ap.add_argument("--launch-delay", type=float, default=20.0, help="emulated boot (s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(REPO / "bench/results/spill.json"))
    args = ap.parse_args()
    rows = []
    for arm in ARMS:
        t0 = time.perf_counter()
        row = run_arm(arm, args.base, args.launch_delay, args.seed)
        row["wall_s"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
    print(f"{'arm':20} {'SLO att':>8} {'p50 ms':>7} {'p98 ms':>8} {'spill':>6} {'lost':>5} "
          f"{'errors':>6} {'cost $':>8} {'faas $':>8} {'invocations':>11} {'cold':>5} "
          f"{'429':>4}")
    for r in rows:
        print(f"{r['arm']:20} {r['slo_attainment']:8.2%} "
              f"{r['latency_ms']['p50']:7.1f} {r['latency_ms']['p98']:8.1f} "
              f"{r['spill_share']:6.1%} {r['lost']:5d} {r['errors']:6d} "
              f"{(r['cost_usd'] or 0):8.4f} {r['faas_usd']:8.4f} {r['faas_invocations']:11d} "
              f"{r['cold_starts']:5d} {r['throttles']:4d}")
    by = {r["arm"]: r for r in rows}
    ref = by["no FaaS"]
    print(f"\nagainst {'no FaaS'!r} (cost x, attainment points):")
    for r in rows:
        if r is ref or not (r["cost_usd"] and ref["cost_usd"]):
            continue
        print(f"{r['arm']:20} cost x{r['cost_usd'] / ref['cost_usd']:.2f}  attainment "
              f"{100 * (r['slo_attainment'] - ref['slo_attainment']):+.2f}")
    doc = {"phases": [{"seconds": s, "x_base": x} for s, x in PHASES], "base_rps": args.base,
           "launch_delay_s": args.launch_delay, "rows": rows}
    Path(args.json).write_text(json.dumps(doc, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
