"""FaaS as a planned tier: mark with and without it against lambda, batch, sagemaker and the
oracle, on the shipped Twitter week, its low-rate version and a sparse trace with idle hours.

Scenarios (:mod:`scenarios`: ``twitter``, ``low_rate``, ``sparse``, the first ``--days``
days, Inception-v3, SLO 98% under 500 ms, CPU types only, on-demand); rows in its one schema.

For each: cost per million requests, SLO attainment, spill share, each cost as a ratio to
the oracle (which has the FaaS option too), and mark's FaaS-tier record (share of time at
zero instances, the cold-start cover). Targets: mark with the tier costs no more than the
cheaper of (mark without it, lambda) on every trace, strictly less on the sparse one, at
>= 99% SLO attainment. Also the instance/FaaS crossover: the closed form next to the
planner's (bisection on a flat forecast).

    .venv/bin/python bench/hybrid.py [--days 7] [--json bench/results/hybrid.json]

The shipped results are the full week (``--days 7``, about 5 minutes on a 2-core box).
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
    INCEPTION,
    INCEPTION_SLO,
    Scenario,
    low_rate,
    print_rows,
    row,
    sparse,
    twitter,
)

from mark.core.catalogue import load_catalogue  # noqa: E402
from mark.core.instances import Instance, InstanceState  # noqa: E402
from mark.core.profiles import load_profile  # noqa: E402
from provisioner import PolicyContext, Snapshot, default_serving_plan, make_policy  # noqa: E402
from provisioner.faas_batching import choose_faas_config  # noqa: E402
from provisioner.faas_tier import crossover as closed_crossover  # noqa: E402
from provisioner.faas_tier import faas_tier_cost_per_request  # noqa: E402

POLICIES = ("oracle", "mark", "mark-no-faas", "lambda", "batch", "sagemaker")
PROFILE, SLO = INCEPTION, INCEPTION_SLO


def scenarios(days: int) -> list[Scenario]:
    return [twitter(days), low_rate(days), sparse(days)]


def crossover() -> dict[str, float]:
    """Closed form vs the planner, with Lambda at batch 1 (Inception-v3 does not batch on
    Lambda within 500 ms anyway)."""
    ctx = PolicyContext(load_catalogue(), load_profile(PROFILE), SLO, types=CPU_TYPES)
    cfg = choose_faas_config(ctx, 2.0)
    c_f = faas_tier_cost_per_request(ctx, cfg, 2.0)
    closed, itype, market = closed_crossover(ctx, c_f)
    assert itype is not None and market is not None

    def planned(rate: float, running: bool) -> bool:
        class Flat:
            def __call__(self, counts: np.ndarray, horizon: int, step_s: float) -> np.ndarray:
                return np.full(horizon, rate)

        pol = make_policy("mark", ctx, forecast=Flat())
        fleet = ((Instance("i-0", itype, market, InstanceState.READY, 0.0, 120.0),)
                 if running else ())
        snap = Snapshot(3600.0, np.full(3600, round(rate)), fleet, SLO)
        return pol.decide(snap, pol.initial_state())[0].info["planned_instances"] > 0

    def threshold(running: bool) -> float:
        lo, hi = 0.01, 50.0
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            lo, hi = (lo, mid) if planned(mid, running) else (mid, hi)
        return hi

    cap = default_serving_plan(ctx).types[itype].capacity_rps
    margin = make_policy("mark", ctx).first_launch_margin  # type: ignore[attr-defined]
    keep, first = threshold(True), threshold(False)
    # the margin holds back an instance the rate would leave part idle, not a full one
    first_closed = min(closed * margin, cap)
    return {"faas_usd_per_request": c_f, "faas_memory_mb": cfg.memory_mb,
            "instance_type": itype, "closed_form_rps": closed,
            "planner_keep_rps": keep, "keep_relative_difference": abs(keep - closed) / closed,
            "first_launch_margin": margin, "capacity_rps": cap,
            "closed_form_first_launch_rps": first_closed, "planner_first_launch_rps": first,
            "first_launch_relative_difference": abs(first - first_closed) / first_closed}


def run(days: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for sc in scenarios(days):
        print(f"{sc.name}: {sc.requests} requests", flush=True)
        oracle_usd = None
        for pol in POLICIES:
            t0 = time.perf_counter()
            r = sc.simulate(pol, timeline=False)
            if pol == "oracle":
                oracle_usd = r.cost_usd["total"]
            rows.append(row(sc, pol, "on-demand", r, oracle_usd))
            tier = rows[-1].get("faas_tier", {})
            note = (f" zero-instance {tier['zero_instance_share']:.1%}, cover {tier['cover']}"
                    if tier else "")
            print(f"  {pol:13s} ${r.cost_per_million_usd:9.3f}/M "
                  f"x{rows[-1]['ratio_to_oracle']:5.2f} oracle  att {r.slo_attainment:7.3%} "
                  f"spill {r.spill_share:6.2%}{note} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    return rows


def targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tr in dict.fromkeys(r["scenario"] for r in rows):
        by = {r["policy"]: r for r in rows if r["scenario"] == tr}
        mark = by["mark"]["cost_usd"]["total"]
        rival = min(by["mark-no-faas"]["cost_usd"]["total"], by["lambda"]["cost_usd"]["total"])
        out[tr] = {
            "mark_usd": mark, "cheaper_of_no_faas_and_lambda_usd": rival,
            "mark_over_rival": mark / rival,
            "no_more": mark <= rival * (1 + 1e-9), "strictly_less": mark < rival,
            "mark_attainment": by["mark"]["slo_attainment"],
            "attainment_ok": by["mark"]["slo_attainment"] >= 0.99,
            "oracle_is_cheapest": all(by["oracle"]["cost_usd"]["total"]
                                      <= r["cost_usd"]["total"] * (1 + 1e-9)
                                      for r in by.values()),
        }
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trs = list(dict.fromkeys(r["scenario"] for r in rows))
    fig, axes = plt.subplots(len(trs), 2, figsize=(12, 3.4 * len(trs)), squeeze=False)
    colors = {"oracle": "#636363", "mark": "#3182bd", "mark-no-faas": "#9ecae1",
              "lambda": "#de2d26", "batch": "#fc9272", "sagemaker": "#31a354"}
    for i, tr in enumerate(trs):
        rs = [r for r in rows if r["scenario"] == tr]
        x = np.arange(len(rs))
        c = [colors.get(r["policy"], "#999999") for r in rs]
        ax = axes[i][0]
        ax.bar(x, [r["ratio_to_oracle"] for r in rs], color=c)
        ax.set_yscale("log")
        ax.set_ylabel("cost / oracle")
        ax.set_title(tr, fontsize=9)
        for xi, r in zip(x, rs, strict=True):
            ax.text(xi, r["ratio_to_oracle"], f"{r['ratio_to_oracle']:.2f}", ha="center",
                    va="bottom", fontsize=7)
        ax2 = axes[i][1]
        ax2.bar(x, [100 * r["slo_attainment"] for r in rs], color=c)
        ax2.axhline(99, color="#de2d26", ls="--", lw=0.8)
        low = min(100 * r["slo_attainment"] for r in rs)
        ax2.set_ylim(min(95.0, 5 * (low // 5)), 100.2)
        ax2.set_ylabel("SLO attainment %")
        for a in (ax, ax2):
            a.set_xticks(x)
            a.set_xticklabels([r["policy"] for r in rs], fontsize=7, rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, default=7, help="days of each trace (1..7)")
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "hybrid.json"))
    ap.add_argument("--png", default=None, help="default: beside the JSON, .png")
    args = ap.parse_args(argv)
    if not 1 <= args.days <= 7:
        ap.error("--days must be in 1..7")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cross = crossover()
    print(f"crossover ({cross['instance_type']}): closed form {cross['closed_form_rps']:.4f} "
          f"req/s, planner keeps a running instance above {cross['planner_keep_rps']:.4f} "
          f"({cross['keep_relative_difference']:.3%} apart); first launch from zero: closed "
          f"form min(x{cross['first_launch_margin']:.3f}, capacity) = "
          f"{cross['closed_form_first_launch_rps']:.4f}, planner "
          f"{cross['planner_first_launch_rps']:.4f} "
          f"({cross['first_launch_relative_difference']:.3%} apart)")
    rows = run(args.days)
    tg = targets(rows)
    print()
    print_rows(rows)
    for tr, t in tg.items():
        print(f"{tr}: mark / min(no-faas, lambda) = {t['mark_over_rival']:.3f} "
              f"(no more: {t['no_more']}, strictly less: {t['strictly_less']}), "
              f"attainment {t['mark_attainment']:.3%}, oracle cheapest: {t['oracle_is_cheapest']}")
    doc = {"profile": PROFILE, "slo": {"latency_ms": SLO.latency_ms,
                                       "percentile": SLO.percentile},
           "types": list(CPU_TYPES), "days": args.days, "market": "on-demand",
           "crossover": cross, "rows": rows, "targets": tg,
           "wall_seconds": round(time.perf_counter() - t0, 1)}
    out.write_text(json.dumps(doc, indent=1) + "\n")
    png = Path(args.png) if args.png else out.with_suffix(".png")
    plot(rows, png)
    print(f"\nwrote {out} and {png} ({doc['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
