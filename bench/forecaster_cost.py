"""Forecasters chosen by cost: every forecaster behind the mark policy, in the simulator.

For each forecaster the mark policy accepts (every name registered in ``predictor``, built
by ``predictor.make_rate_forecast``: window forecasts as they are, step forecasters run at
the provisioning step through ``predictor.StepRateForecast``: one step = 60 s, daily
season = 1440 steps) and each evaluation trace, one simulation with policy ``mark``,
on-demand, CPU types only:

``twitter``, ``low_rate`` and ``sparse`` of :mod:`scenarios` (the first ``--days`` days,
Inception-v3, SLO 98% under 500 ms), as in ``bench/hybrid.py``; rows in its one schema.

Columns: $ per million requests, cost as a ratio to the cheapest forecaster that meets the
SLO on that trace, SLO attainment, spill share; ``MAPE@1`` of the forecaster's expected
value (``predictor.backtest`` of the same forecaster on the same trace at 60 s, 60 steps
of warm-up; target = per-second peak within each minute, or the minute's mean rate for a
``:mean`` row; none for the window forecasts, which have no separate expectation);
``plan MAPE@1``: the
error of the value the policy actually planned for (its forecast for the current minute,
from the simulation's timeline) against that minute's per-second peak, for every
forecaster. The chosen default is the forecaster with the lowest geometric-mean cost
ratio among those that meet the SLO on every trace.

Each step forecaster runs twice: as the provisioner builds it by name (the upper
quantile, 0.95, of the per-second peak within each minute: ``StepRateForecast(name)``), and as
``NAME:mean`` (its expectation of the minute's mean rate, ``target="mean", use="mean"``,
leaving the peaks within the minute to queueing and spill, as the provisioner's own
quantile forecasts do; ``adaptive:mean`` plans for its upper with ``min_scale=0``, so
its margin over the mean-rate forecast widens after misses and can relax to nothing).

    .venv/bin/python bench/forecaster_cost.py [--json bench/results/forecaster_cost.json]
        [--days 2] [--jobs 2] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scenarios import INCEPTION_SLO, Scenario, low_rate, row, sparse, twitter  # noqa: E402

from mark.core.workload.traces import Trace  # noqa: E402
from predictor import (  # noqa: E402
    PeakRateForecaster,
    StepRateForecast,
    available_forecasters,
    backtest,
    forecaster_kind,
)
from provisioner import DEFAULT_FORECAST  # noqa: E402

SLO = INCEPTION_SLO
STEP_S = 60


def scenarios(days: float) -> list[Scenario]:
    return [twitter(days), low_rate(days), sparse(days)]


def plan_mape(counts: np.ndarray, timeline: dict[str, np.ndarray]) -> float:
    """MAPE (%) of the planned rate for the current step vs that step's per-second peak."""
    t = np.asarray(timeline.get("t_s", []), dtype=np.int64)
    f = np.asarray(timeline.get("forecast_rps", []), dtype=np.float64)
    ok = (t + STEP_S <= counts.size) & np.isfinite(f)
    t, f = t[ok], f[ok]
    if t.size == 0:
        return math.nan
    peak = np.array([counts[a : a + STEP_S].max() for a in t], dtype=np.float64)
    scored = peak > 0
    if not scored.any():
        return math.nan
    return float(100.0 * np.mean(np.abs(f[scored] - peak[scored]) / peak[scored]))


def variants(names: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, name, forecast_kw): each name as built by name, plus ``NAME:mean`` rows."""
    out: list[tuple[str, str, dict[str, Any]]] = [(n, n, {}) for n in names]
    for n in names:
        if forecaster_kind(n) == "window":
            continue
        # the adaptive forecaster's point is its margin: plan for its upper, which may
        # relax to the mean itself (min_scale=0) after a run of good steps
        kw = ({"target": "mean", "min_scale": 0.0} if n == "adaptive"
              else {"target": "mean", "use": "mean"})
        out.append((f"{n}:mean", n, kw))
    return out


def backtest_mape(trace: Trace, name: str, kw: dict[str, Any]) -> float | None:
    """MAPE@1 (%) of the forecaster's expected value for the next step, as the policy's
    forecaster makes it (its peak target, or the mean rate for a ``:mean`` row)."""
    if forecaster_kind(name) == "window":
        return None
    adapter = StepRateForecast(name, **kw)
    model: Any = adapter.build(STEP_S)
    if adapter.target == "peak" and not isinstance(model, PeakRateForecaster):
        model = model.inner  # a wrapper keeps its inner's mean
    target: Literal["mean", "peak"] = "mean" if adapter.target == "mean" else "peak"
    r = backtest(trace, model, 1, step_s=STEP_S, target=target, warmup=60)
    return float(r.mape[1])


def one(job: tuple[Scenario, str, str, dict[str, Any]]) -> dict[str, Any]:
    sc, label, name, kw = job
    t0 = time.perf_counter()
    r = sc.simulate("mark", timeline=True, policy_kw={"forecast": name, "forecast_kw": kw})
    sim_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    mape = backtest_mape(Trace(sc.counts, 1, sc.name), name, kw)
    pm = plan_mape(sc.counts, r.timeline)
    return row(sc, "mark", "on-demand", r, None, forecaster=label, name=name, forecast_kw=kw,
               mape1=None if mape is None else round(mape, 2),
               plan_mape1=round(pm, 2) if math.isfinite(pm) else None,
               sim_s=round(sim_s, 1), backtest_s=round(time.perf_counter() - t1, 1))


def choose(rows: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """Ratios to the cheapest at the SLO per trace, and the forecaster to default to."""
    for sc in {r["scenario"] for r in rows}:
        rs = [r for r in rows if r["scenario"] == sc]
        ok = [r for r in rs if r["slo_attainment"] >= target] or rs
        best = min(r["cost_usd"]["total"] for r in ok)
        for r in rs:
            r["ratio_to_best"] = round(r["cost_usd"]["total"] / best, 4) if best > 0 else 1.0
            r["meets_slo"] = r["slo_attainment"] >= target
    scores = {}
    for name in sorted({r["forecaster"] for r in rows}):
        rs = [r for r in rows if r["forecaster"] == name]
        if all(r["meets_slo"] for r in rs):
            scores[name] = float(np.exp(np.mean([np.log(r["ratio_to_best"]) for r in rs])))
    best_name = min(scores, key=lambda n: scores[n]) if scores else None
    return {"geo_mean_ratio_at_slo": {k: round(v, 4) for k, v in scores.items()},
            "cheapest_at_slo": best_name, "current_default": DEFAULT_FORECAST}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path,
                    default=REPO / "bench" / "results" / "forecaster_cost.json")
    ap.add_argument("--days", type=float, default=2.0, help="days of each trace")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--only", nargs="*", default=None, help="forecaster names to run")
    args = ap.parse_args(argv)
    rows_to_run = [v for v in variants(available_forecasters())
                   if not args.only or v[0] in args.only or v[1] in args.only]
    scs = scenarios(args.days)
    # longest first, so the two workers finish together
    jobs = sorted(((sc, *v) for sc in scs for v in rows_to_run), key=lambda j: -j[0].requests)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for row in pool.map(one, jobs):
            rows.append(row)
            print(f"  {row['scenario'][:30]:30s} {row['forecaster']:22s} "
                  f"${row['cost_per_million_usd']:8.3f}/M att {row['slo_attainment']:.4%} "
                  f"({row['sim_s']:.0f}+{row['backtest_s']:.0f} s)", file=sys.stderr, flush=True)
    order = {v[0]: i for i, v in enumerate(rows_to_run)}
    sc_order = {sc.name: i for i, sc in enumerate(scs)}
    rows.sort(key=lambda r: (sc_order[r["scenario"]], order[r["forecaster"]]))
    summary = choose(rows, SLO.percentile / 100.0)
    doc = {
        "policy": "mark", "profile": scs[0].profile,
        "slo": {"ms": SLO.latency_ms, "percentile": SLO.percentile},
        "types": list(scs[0].types or ()), "market": "on-demand", "step_s": STEP_S,
        "scenarios": {sc.name: {"seconds": int(sc.counts.size), "requests": sc.requests}
                      for sc in scs},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                   f"Python {platform.python_version()}",
        "wall_s": round(time.perf_counter() - t0, 1),
        "rows": rows, "summary": summary,
    }
    head = (f"{'scenario':30s} {'forecaster':22s} {'$/M':>8s} {'x best':>7s} {'SLO att':>8s} "
            f"{'spill':>7s} {'MAPE@1':>7s} {'plan MAPE@1':>11s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        mape = "-" if r["mape1"] is None else f"{r['mape1']:.1f}"
        plan = "-" if r["plan_mape1"] is None else f"{r['plan_mape1']:.1f}"
        print(f"{r['scenario'][:30]:30s} {r['forecaster']:22s} {r['cost_per_million_usd']:8.3f} "
              f"{r['ratio_to_best']:7.2f} {r['slo_attainment']:8.3%} {r['spill_share']:7.2%} "
              f"{mape:>7s} {plan:>11s}")
    print("\ngeometric-mean cost ratio to the best, forecasters meeting the SLO on every trace:")
    for k, v in sorted(summary["geo_mean_ratio_at_slo"].items(), key=lambda kv: kv[1]):
        print(f"  {k:22s} {v:.3f}")
    print(f"cheapest at the SLO: {summary['cheapest_at_slo']} "
          f"(current default: {DEFAULT_FORECAST}); {doc['wall_s']:.0f} s wall")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
