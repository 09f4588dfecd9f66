"""Every policy on the shared Twitter week and on MMPP traces with +75% / +100% surges.

For each scenario and policy: cost per million requests, SLO attainment, spill share, and
the cost as a ratio to the oracle (the cheapest feasible fleet with perfect foresight and
instant launches). Policies run on-demand only and with spot; the SageMaker-style baseline
is reported billed at ml.* prices (x1.4) and at EC2 prices.

Scaling (say it in every report): the Twitter week is replayed at its own rate (x1, 38.7 M
requests) with the Inception-v3 profile (MArk's model; c5.large 210 ms per image, SLO 98%
under 500 ms), which needs a fleet of tens of c5.large-class instances; ``--minilm-day``
adds one day of the week x20 with the MiniLM profile (SLO 98% under 200 ms), the design
notes' scale. The MMPP traces use the Inception-v3 profile too.

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

from common import CPU_TYPES, TWITTER  # noqa: E402

from mark.core.workload.arrivals import mmpp_trace  # noqa: E402
from mark.core.workload.traces import load_trace  # noqa: E402
from mark.sim.simulator import simulate  # noqa: E402
from provisioner import Slo  # noqa: E402

POLICIES = ("oracle", "mark", "sagemaker", "lambda", "batch", "mark-released")


def mmpp_with_surges(days: float, seed: int) -> np.ndarray:
    """A 3-state MMPP (quiet / normal / busy around 64 req/s like the Twitter mean) with a
    +75% surge for 20 minutes at 6 h and a +100% surge for 20 minutes at 14 h of each day."""
    dur = int(days * 86400)
    rates = [40.0, 64.0, 100.0]
    q = np.array([[0.0, 1 / 1800, 0.0], [1 / 3600, 0.0, 1 / 3600], [0.0, 1 / 1200, 0.0]])
    counts = mmpp_trace(rates, q, dur, seed=seed).counts.astype(np.int64)
    rng = np.random.default_rng(seed + 1)
    for day in range(int(np.ceil(days))):
        for at_h, factor in ((6, 1.75), (14, 2.0)):
            a = day * 86400 + at_h * 3600
            b = min(a + 1200, dur)
            if a < dur:
                counts[a:b] += rng.poisson((factor - 1.0) * counts[a:b])
    return counts


def scenarios(quick: bool, minilm_day: bool, types: tuple[str, ...] | None
              ) -> list[dict[str, Any]]:
    tw = load_trace(TWITTER).counts
    days = 1 if quick else 7
    out = [
        {"name": f"twitter-week x1, inception-v3, {days} d", "counts": tw[: days * 86400],
         "profile": "inception-v3", "slo": Slo(500, 98), "scale": 1.0},
        {"name": f"mmpp+surges 75%/100%, inception-v3, {min(days, 2)} d",
         "counts": mmpp_with_surges(min(days, 2), 7), "profile": "inception-v3",
         "slo": Slo(500, 98), "scale": 1.0},
    ]
    if minilm_day:
        out.append({"name": "twitter day 1 x20, minilm", "counts": tw[:86400],
                    "profile": "minilm", "slo": Slo(200, 98), "scale": 20.0})
    for sc in out:
        sc["types"] = types
    return out


def run_scenario(sc: dict[str, Any], plot_dir: Path | None) -> list[dict[str, Any]]:
    rows = []
    for spot in (False, True):
        oracle_cost = None
        for pol in POLICIES:
            if spot and pol in ("lambda", "batch"):
                continue  # no instances: identical to the on-demand run
            variants = [(pol, {"ml_premium": True})]
            if pol == "sagemaker":
                variants.append(("sagemaker (EC2 prices)", {"ml_premium": False}))
            for label, kw in variants:
                t0 = time.perf_counter()
                r = simulate(sc["counts"], pol, profile=sc["profile"], slo=sc["slo"],
                             scale=sc["scale"], spot=spot and pol != "sagemaker", seed=1,
                             types=sc["types"],
                             timeline=plot_dir is not None and pol == "mark", **kw)
                if pol == "oracle":
                    oracle_cost = r.cost_usd["total"]
                assert oracle_cost is not None
                row = {"scenario": sc["name"], "market": "spot" if spot else "on-demand",
                       **r.to_json(), "policy": label,
                       "ratio_to_oracle": r.cost_usd["total"] / oracle_cost}
                rows.append(row)
                print(f"  {row['market']:9s} {label:24s} ${r.cost_per_million_usd:8.3f}/M "
                      f"x{row['ratio_to_oracle']:5.2f} oracle  att {r.slo_attainment:7.3%} "
                      f"spill {r.spill_share:6.2%}  ({time.perf_counter() - t0:.0f} s)",
                      flush=True)
                if r.timeline and plot_dir is not None:
                    from mark.sim.plot import plot_timeline

                    slug = "".join(ch if ch.isalnum() else "-" for ch in sc["name"])[:40]
                    plot_timeline(r, plot_dir / f"timeline-{slug}-{row['market']}.png",
                                  f"{sc['name']} / {label} / {row['market']}")
    return rows


def speed_check() -> dict[str, Any]:
    tw = load_trace(TWITTER).counts[:86400]
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
        print(f"{sc['name']}: {int(sc['counts'].sum() * sc['scale'])} requests", flush=True)
        rows += run_scenario(sc, out.parent if args.timelines else None)
    doc: dict[str, Any] = {
        "types": "all profiled" if args.all_types else list(CPU_TYPES),
        "rows": rows, "summary": summary(rows)}
    if not args.no_speed:
        doc["speed"] = speed_check()
    print()
    print(f"{'scenario':44s} {'market':9s} {'policy':24s} {'$/M':>8s} {'x oracle':>8s} "
          f"{'SLO att':>8s} {'spill':>7s}")
    for r in rows:
        print(f"{r['scenario'][:44]:44s} {r['market']:9s} {r['policy']:24s} "
              f"{r['cost_per_million_usd']:8.3f} {r['ratio_to_oracle']:8.2f} "
              f"{r['slo_attainment']:8.3%} {r['spill_share']:7.2%}")
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
