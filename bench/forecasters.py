"""Every forecaster on the shared Twitter week at one-minute steps.

Rolling-origin backtest (``predictor.backtest``): two days of warm-up (Holt-Winters and
SARIMAX fit a 1440-step daily season), then an origin at every minute of the last five days
(``--every`` / ``--max-origins`` thin them). The trace is used as recorded (x1, requests
per second); steps overlapping its collection gaps are missing, not scored.

Two tables:

- ``mean``: the per-minute mean rate, each forecaster as registered;
- ``peak``: the largest per-second rate within each minute, which MArk's provisioner
  plans for: MArk's own rule (the maximum of the last 10 minutes' peaks x1.1, run on the
  peak series) and ``PeakRateForecaster`` around mean-rate forecasters.

Columns: MAPE (%) at 1, 5 and 10 minutes ahead; the under-forecast rate (share of scored
steps, all horizons, whose actual exceeds the upper quantile, 0.95 unless the row says
``q=``; for MArk's rule, the rule itself is the bound); headroom (mean of
(upper - actual) / actual, in %, the capacity the bound holds beyond the load); and the
wall time of one provisioning step (observe the new minute + forecast 10), mean, 99th
percentile and max (the max is usually the first, cold fit).

``--quick`` thins the origins, which also starves the error windows behind the upper
quantiles: its under-forecast and headroom columns are not comparable to a full run.

    .venv/bin/python bench/forecasters.py [--json bench/results/forecasters.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scenarios import TWITTER  # noqa: E402

from mark.core.workload.traces import Trace, load_trace  # noqa: E402
from predictor import PeakRateForecaster, backtest, make_forecaster  # noqa: E402
from predictor.backtest import BacktestResult  # noqa: E402

DAY = 1440

MEAN_ROWS: list[tuple[str, str, dict[str, Any]]] = [
    ("last", "last", {}),
    ("moving-max", "moving-max", {"window": 10}),
    ("ewma", "ewma", {"alpha": 0.5}),
    ("seasonal-naive", "seasonal-naive", {"season": DAY}),
    ("holt-winters", "holt-winters", {"season": DAY}),
    ("holt-winters+trend", "holt-winters", {"season": DAY, "trend": True}),
    ("sarimax", "sarimax", {"season": DAY}),
]
PEAK_ROWS: list[tuple[str, str, dict[str, Any]]] = [
    ("MArk rule: max 10 peaks x1.1", "moving-max", {"window": 10, "factor": 1.1}),
    ("peak(last)", "last", {}),
    ("peak(ewma)", "ewma", {"alpha": 0.5}),
    ("peak(holt-winters)", "holt-winters", {"season": DAY}),
    ("peak(sarimax)", "sarimax", {"season": DAY}),
    # upper quantile lowered to match the MArk rule's under-forecast rate
    ("peak(last) q=0.925", "last", {"quantile": 0.925}),
    ("peak(sarimax) q=0.925", "sarimax", {"season": DAY, "quantile": 0.925}),
]
HORIZONS = (1, 5, 10)


def row(label: str, r: BacktestResult, bound_is_mean: bool = False) -> dict[str, Any]:
    bound = r.mean if bound_is_mean else r.upper
    scored = np.isfinite(r.actual) & (r.actual > 0)
    safe = np.where(scored, r.actual, 1.0)
    headroom = 100.0 * float(np.mean(((bound - r.actual) / safe)[scored]))
    under = float(np.mean((r.actual > bound)[scored]))
    e = r.elapsed_ms
    return {
        "forecaster": label,
        "mape": {str(k): round(r.mape[k], 3) for k in HORIZONS},
        "rmse": {str(k): round(r.rmse[k], 3) for k in HORIZONS},
        "under_forecast_rate": round(under, 4),
        "headroom_pct": round(headroom, 2),
        "ms_per_forecast": round(r.ms_per_forecast, 3),
        "ms_p99": round(float(np.percentile(e, 99)), 2),
        "ms_max": round(float(e.max()), 1),
        "n_origins": r.n_origins,
    }


def run_table(
    trace: Trace, rows: list[tuple[str, str, dict[str, Any]]], target: str, args: argparse.Namespace
) -> list[dict[str, Any]]:
    out = []
    for label, name, kw in rows:
        if args.only and not any(s in label for s in args.only):
            continue
        t0 = time.perf_counter()
        direct = target == "peak" and label.startswith("MArk")
        model: Any = make_forecaster(name, **kw)
        if target == "peak" and not direct:
            model = PeakRateForecaster(model, quantile=kw.get("quantile", 0.95))
        r = backtest(
            trace,
            model,
            args.horizon,
            step_s=60,
            target="mean" if target == "mean" else "peak",
            warmup=2 * DAY,
            max_origins=args.max_origins,
        )
        out.append(row(label, r, bound_is_mean=direct))
        print(f"  {target:4s} {label:30s} {time.perf_counter() - t0:6.1f} s", file=sys.stderr)
    return out


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    head = (
        f"{'forecaster':30s} {'MAPE@1':>7s} {'MAPE@5':>7s} {'MAPE@10':>7s} {'under':>6s} "
        f"{'headroom':>8s} {'ms mean':>8s} {'ms p99':>7s} {'ms max':>7s}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        m = r["mape"]
        print(
            f"{r['forecaster']:30s} {m['1']:7.2f} {m['5']:7.2f} {m['10']:7.2f} "
            f"{r['under_forecast_rate']:6.3f} {r['headroom_pct']:7.1f}% {r['ms_per_forecast']:8.2f} "
            f"{r['ms_p99']:7.1f} {r['ms_max']:7.0f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trace", default=TWITTER, help="trace file or shipped trace name")
    parser.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "forecasters.json")
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument("--max-origins", type=int, default=None, help="thin the origins")
    parser.add_argument("--quick", action="store_true", help="500 origins instead of ~7200")
    parser.add_argument("--only", nargs="*", default=None, help="rows whose label contains")
    parser.add_argument("--no-peak", action="store_true", help="skip the peak table")
    args = parser.parse_args(argv)
    if args.quick and args.max_origins is None:
        args.max_origins = 500
    trace = load_trace(args.trace)
    t0 = time.perf_counter()
    mean_rows = run_table(trace, MEAN_ROWS, "mean", args)
    peak_rows = [] if args.no_peak else run_table(trace, PEAK_ROWS, "peak", args)
    doc = {
        "trace": trace.name,
        "scale": "x1 (as recorded), requests per second",
        "step_s": 60,
        "horizon_steps": args.horizon,
        "warmup_steps": 2 * DAY,
        "quantile": 0.95,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "wall_s": round(time.perf_counter() - t0, 1),
        "mean": mean_rows,
        "peak": peak_rows,
    }
    print_table("mean rate per minute (req/s)", mean_rows)
    if peak_rows:
        print_table("peak per-second rate within each minute (req/s)", peak_rows)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
