"""Every policy on the shipped Twitter week and on MMPP traces with +75% / +100% surges.

For each scenario and policy: cost per million requests, SLO attainment, spill share, and
the cost as a ratio to the oracle (the cheapest feasible fleet with perfect foresight and
instant launches). Policies run on-demand only and with spot; the SageMaker-style baseline
is reported billed at ml.* prices (x1.4) and at EC2 prices.

Scenarios and scaling: :mod:`scenarios` (``twitter``, ``mmpp_surges`` and, with
``--minilm-day``, ``twitter_minilm_x20``); rows in its one schema.

Also timed: 24 hours of the Twitter trace x3 (about 17 M requests) under ``mark`` with
MiniLM, per-request latencies kept (``speed`` in the JSON).

    .venv/bin/python bench/policies.py [--json bench/results/policies.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scenarios import (  # noqa: E402
    CPU_TYPES,
    Scenario,
    mmpp_surges,
    print_rows,
    row,
    twitter,
    twitter_minilm_x20,
)

from mark.sim import simulate  # noqa: E402
from mark.sim.plot import plot_timeline  # noqa: E402

POLICIES = ("oracle", "mark", "sagemaker", "lambda", "batch", "mark-released")


def scenarios(quick: bool, minilm_day: bool, types: tuple[str, ...] | None) -> list[Scenario]:
    days = 1 if quick else 7
    out = [twitter(days), mmpp_surges(min(days, 2))]
    if minilm_day:
        out.append(twitter_minilm_x20())
    return [sc.with_types(types) for sc in out]


def run_scenario(sc: Scenario, plot_dir: Path | None) -> list[dict[str, Any]]:
    rows = []
    for spot in (False, True):
        market = "spot" if spot else "on-demand"
        oracle_usd = None
        for pol in POLICIES:
            if spot and pol in ("lambda", "batch"):
                continue  # no instances: identical to the on-demand run
            variants = [(pol, {"ml_premium": True})]
            if pol == "sagemaker":
                variants.append(("sagemaker (EC2 prices)", {"ml_premium": False}))
            for label, kw in variants:
                t0 = time.perf_counter()
                r = sc.simulate(pol, spot=spot and pol != "sagemaker",
                                timeline=plot_dir is not None and pol == "mark", **kw)
                if pol == "oracle":
                    oracle_usd = r.cost_usd["total"]
                rows.append(row(sc, label, market, r, oracle_usd))
                print(f"  {market:9s} {label:24s} ${r.cost_per_million_usd:8.3f}/M "
                      f"x{rows[-1]['ratio_to_oracle']:5.2f} oracle  att {r.slo_attainment:7.3%} "
                      f"spill {r.spill_share:6.2%}  ({time.perf_counter() - t0:.0f} s)",
                      flush=True)
                if r.timeline and plot_dir is not None:
                    slug = "".join(ch if ch.isalnum() else "-" for ch in sc.name)[:40]
                    plot_timeline(r, plot_dir / f"timeline-{slug}-{market}.png",
                                  f"{sc.name} / {label} / {market}")
    return rows


def speed_check() -> dict[str, Any]:
    tw = twitter(1).counts
    simulate(tw[:3600], "mark", scale=3.0, timeline=False)  # compile / warm caches
    t0 = time.perf_counter()
    r = simulate(tw, "mark", scale=3.0, seed=0, timeline=False)
    wall = time.perf_counter() - t0
    print(f"speed: 24 h of Twitter x3, {r.requests} requests, mark: {wall:.1f} s wall "
          f"(latencies kept: {r.latencies_s.size})")
    return {"requests": r.requests, "wall_seconds": round(wall, 2), "policy": "mark",
            "trace": "twitter day 1 x3"}


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for sc in sorted({r["scenario"] for r in rows}):
        def get(pol: str, market: str, sc: str = sc) -> dict[str, Any] | None:
            return next((r for r in rows if r["scenario"] == sc and r["policy"] == pol
                         and r["market"] == market), None)

        m_od, m_sp = get("mark", "on-demand"), get("mark", "spot")
        sm, sm_ec2 = get("sagemaker", "on-demand"), get("sagemaker (EC2 prices)", "on-demand")
        if not (m_od and m_sp and sm and sm_ec2):
            continue
        out[sc] = {
            "mark_vs_oracle_on_demand": m_od["ratio_to_oracle"],
            "mark_vs_oracle_spot": m_sp["ratio_to_oracle"],
            "mark_attainment_on_demand": m_od["slo_attainment"],
            "sagemaker_over_mark_on_demand": sm["cost_usd"]["total"] / m_od["cost_usd"]["total"],
            "sagemaker_over_mark_spot": sm["cost_usd"]["total"] / m_sp["cost_usd"]["total"],
            "sagemaker_ec2_over_mark_on_demand":
                sm_ec2["cost_usd"]["total"] / m_od["cost_usd"]["total"],
            "sagemaker_ec2_over_mark_spot":
                sm_ec2["cost_usd"]["total"] / m_sp["cost_usd"]["total"],
            "sagemaker_attainment": sm["slo_attainment"],
        }
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scs = sorted({r["scenario"] for r in rows})
    fig, axes = plt.subplots(len(scs), 2, figsize=(13, 3.6 * len(scs)), squeeze=False)
    for i, sc in enumerate(scs):
        rs = [r for r in rows if r["scenario"] == sc]
        labels = [f"{r['policy']}\n{r['market']}" for r in rs]
        x = np.arange(len(rs))
        colors = ["#3182bd" if r["market"] == "on-demand" else "#31a354" for r in rs]
        axes[i][0].bar(x, [r["ratio_to_oracle"] for r in rs], color=colors)
        axes[i][0].axhline(1.10, color="#de2d26", ls="--", lw=0.8, label="1.10x target")
        axes[i][0].set_yscale("log")
        axes[i][0].set_ylabel("cost / oracle")
        axes[i][0].set_title(sc, fontsize=9)
        axes[i][0].legend(fontsize=7)
        axes[i][1].bar(x, [100 * r["slo_attainment"] for r in rs], color=colors)
        axes[i][1].axhline(99, color="#de2d26", ls="--", lw=0.8)
        low = min(100 * r["slo_attainment"] for r in rs)
        axes[i][1].set_ylim(min(90.0, 5 * (low // 5)), 100.2)
        axes[i][1].set_ylabel("SLO attainment %")
        for ax in axes[i]:
            ax.set_xticks(x)
            ax.set_xticklabels(labels, fontsize=6, rotation=60)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "policies.json"))
    ap.add_argument("--png", default=None, help="default: beside the JSON, .png")
    ap.add_argument("--quick", action="store_true", help="one day instead of the week")
    ap.add_argument("--minilm-day", action="store_true",
                    help="add one Twitter day x20 with MiniLM (about 110 M requests)")
    ap.add_argument("--no-speed", action="store_true", help="skip the 24 h x3 timing")
    ap.add_argument("--timelines", action="store_true", help="PNG timeline of each mark run")
    ap.add_argument("--all-types", action="store_true",
                    help="let policies use every profiled type, GPUs included")
    args = ap.parse_args(argv)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for sc in scenarios(args.quick, args.minilm_day, None if args.all_types else CPU_TYPES):
        print(f"{sc.name}: {sc.requests} requests", flush=True)
        rows += run_scenario(sc, out.parent if args.timelines else None)
    doc: dict[str, Any] = {
        "types": "all profiled" if args.all_types else list(CPU_TYPES),
        "rows": rows, "summary": summary(rows)}
    if not args.no_speed:
        doc["speed"] = speed_check()
    print()
    print_rows(rows)
    for sc, s in doc["summary"].items():
        print(f"\n{sc}:")
        for k, v in s.items():
            print(f"  {k:36s} {v:.3f}")
    out.write_text(json.dumps(doc, indent=1) + "\n")
    png = Path(args.png) if args.png else out.with_suffix(".png")
    plot(rows, png)
    print(f"\nwrote {out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
