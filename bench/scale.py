"""The planner at MArk's scale: a day of the Twitter trace at x1, x3, x20 and x100.

For each scale, model (Inception-v3 with 98% under 500 ms, MiniLM with 98% under 200 ms),
market (on demand, spot) and type set (CPU types only, all profiled types with the GPUs):
``mark`` and the hindsight plan (``oracle``, run with the same FaaS limits; it launches
instantly) and that plan launched a launch delay ahead (``oracle-lead``: the same launch
delays as mark, what a real cloud could run with perfect foresight; ``ratio_to_oracle_lead``),
and per row SLO
attainment, cost against the hindsight plan, launches per hour (and the hindsight plan's),
churn, FaaS throttles, FaaS's share of the bill and the simulator's speed (requests per
second of wall time). Rows in :mod:`scenarios`' one schema; targets checked per row:
attainment >= 99%, cost <= 1.10x the hindsight plan, launches per hour <= 3x its, and the
simulator at >= 3 M requests/s at x100.

    .venv/bin/python bench/scale.py [--hours 24] [--scales 1 3 20 100] [--models ...]
        [--markets on-demand spot] [--types cpu all] [--json bench/results/scale.json]

The full matrix is 32 configurations (x100 alone is 553 M requests per run, ~30 GB of
simulator memory for a day); ``--hours``, ``--hours-at 100=6``, ``--scales``,
``--spot-scales`` and the other filters run a part of it, and the JSON says which.
``--start-h``/``--warm-h`` start later in the week with the hours before as the policies'
past (a planner that has been running: it has seen bursts before the first one it is
judged on; ``--warm-at 100=2``: the same for one scale, starting that many hours in);
``--quick-oracle-from`` runs one hindsight variant at large scales; ``--no-oracle
--merge-into scale.json`` reruns mark only and replaces its rows there (after a planner
change: the hindsight rows and their ratios stay comparable). FaaS
throttling passes its check only where the plan said it accepts it
(``throttling_accepted_share`` > 0: ``Decision.info``'s ``throttling_accepted``) and the
throttles are at most twice what it expected (``expected_unabsorbed_share``: spill beyond
what FaaS absorbs and cold starts at burst onsets, :meth:`provisioner.headroom.Replay.shares`;
results from before it was reported carry only the cold starts' ``expected_throttled_share``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from scenarios import CPU_TYPES, TWITTER, Scenario, print_rows, row  # noqa: E402

from mark.core.slo import Slo  # noqa: E402
from mark.core.workload.traces import load_trace  # noqa: E402
from provisioner.oracle import Oracle  # noqa: E402

MODELS = {"inception-v3": Slo(500, 98), "minilm": Slo(200, 98)}
TARGETS = {"attainment": 0.99, "cost_ratio": 1.10, "launch_ratio": 3.0, "sim_rps_x100": 3e6}


def scenario(hours: float, scale: float, model: str, types: str, start_h: float = 0.0,
             warm_h: float = 0.0) -> tuple[Scenario, np.ndarray | None]:
    """The scenario and the history the policies see before it (``warm_h`` hours before
    ``start_h``; None: none, the simulator's pre-roll)."""
    tw = load_trace(TWITTER)
    a = int(start_h * 3600)
    counts = tw.slice(a, a + int(hours * 3600)).counts
    w = min(int(warm_h * 3600), a)
    hist = tw.slice(a - w, a).counts if w > 0 else None
    when = f" from {start_h:g} h, warm {w / 3600:g} h" if start_h or w else ""
    return (Scenario(f"twitter {hours:g} h{when} x{scale:g}, {model}, {types}", counts, model,
                     MODELS[model], scale, CPU_TYPES if types == "cpu" else None), hist)


def run(sc: Scenario, market: str, hours: float, oracle: bool, history: np.ndarray | None,
        quick_oracle: bool) -> list[dict[str, Any]]:
    spot = market == "spot"
    out: dict[str, dict[str, Any]] = {}
    variant: dict[str, Any] = dict(Oracle.search_space[0])
    for pol in (("oracle", "oracle-lead", "mark") if oracle else ("mark",)):
        t0 = time.perf_counter()
        kw: dict[str, Any] = {"history": history}
        if pol == "oracle" and quick_oracle:  # one hindsight variant (the x20 CPU winner)
            kw["policy_kw"] = dict(variant)
        if pol == "oracle-lead":  # the winning plan, launched a launch delay ahead
            kw["policy_kw"] = {**variant, "launch_lead": True}
        r = sc.simulate("oracle" if pol == "oracle-lead" else pol, spot=spot, timeline=False,
                        **kw)
        if pol == "oracle" and "variant" in r.extra:
            variant = dict(r.extra["variant"])
        wall = time.perf_counter() - t0
        e = r.extra
        out[pol] = row(sc, pol, market, r, None, hours=hours,
                       launches_per_hour=e["launches"] / hours,
                       faas_share_of_cost=(r.cost_usd["faas"] / r.cost_usd["total"]
                                           if r.cost_usd["total"] else 0.0),
                       sim_requests_per_s=r.requests / wall if wall > 0 else 0.0)
        print(f"  {market:9s} {pol:11s} ${r.cost_usd['total']:10.2f} att {r.slo_attainment:7.3%} "
              f"launches/h {e['launches'] / hours:8.1f} throttled {e['faas_throttled']:9d} "
              f"({wall:.0f} s, {r.requests / wall / 1e6:.1f} M req/s)", flush=True)
        del r, e  # its per-request arrays (~1 GB at x20) go before the next run starts
    if "oracle" in out:
        base, lead = out["oracle"], out["oracle-lead"]
        for r_ in out.values():
            r_["ratio_to_oracle"] = r_["cost_usd"]["total"] / base["cost_usd"]["total"]
            r_["ratio_to_oracle_lead"] = r_["cost_usd"]["total"] / lead["cost_usd"]["total"]
            r_["launch_ratio_to_oracle"] = (r_["launches_per_hour"] / base["launches_per_hour"]
                                            if base["launches_per_hour"] else None)
    return list(out.values())


def check(r: dict[str, Any], scale: float) -> dict[str, bool]:
    ok = {"attainment": r["slo_attainment"] >= TARGETS["attainment"]}
    if r.get("ratio_to_oracle") is not None:
        ok["cost"] = r["ratio_to_oracle"] <= TARGETS["cost_ratio"]
    if r.get("launch_ratio_to_oracle") is not None:
        ok["launches"] = r["launch_ratio_to_oracle"] <= TARGETS["launch_ratio"]
    # throttling only where the plan said it accepts it (Decision.info), and no more than
    # twice what it expected (its mean expected share of requests over its decisions)
    exp = r.get("expected_unabsorbed_share", r.get("expected_throttled_share"))
    ok["throttling"] = r["faas_throttled"] == 0 or (
        r.get("throttling_accepted_share", 0.0) > 0.0 and exp is not None
        and r["faas_throttled"] <= 2.0 * exp * r["requests"])
    if scale >= 100:
        ok["speed"] = r["sim_requests_per_s"] >= TARGETS["sim_rps_x100"]
    return ok


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    marks = [r for r in rows if r["policy"] == "mark"]
    if not marks:
        return
    groups = sorted({(r["model"], r["market"], r["types"]) for r in marks})
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4))
    for g in groups:
        rs = sorted((r for r in marks if (r["model"], r["market"], r["types"]) == g),
                    key=lambda r: r["scale"])
        x = [r["scale"] for r in rs]
        label = " / ".join(g)
        if all(r.get("ratio_to_oracle") for r in rs):
            a1.plot(x, [r["ratio_to_oracle"] for r in rs], marker="o", label=label)
        a2.plot(x, [100 * r["slo_attainment"] for r in rs], marker="o", label=label)
    a1.axhline(TARGETS["cost_ratio"], color="#de2d26", ls="--", lw=0.8)
    a2.axhline(100 * TARGETS["attainment"], color="#de2d26", ls="--", lw=0.8)
    for a, y in ((a1, "cost / hindsight plan"), (a2, "SLO attainment %")):
        a.set_xscale("log")
        a.set_xlabel("trace scale (x)")
        a.set_ylabel(y)
    a1.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(args: argparse.Namespace, rows: list[dict[str, Any]], hours_at: dict[float, float],
          warm_at: dict[float, float], wall_s: float, complete: bool) -> Path:
    """The JSON of ``rows`` (``complete``: False while the run goes on: a run stopped or
    killed keeps the rows it finished)."""
    doc = {"hours": args.hours, "scales": args.scales, "models": args.models,
           "markets": args.markets, "types": args.types, "targets": TARGETS,
           "hours_at": hours_at, "warm_at": warm_at, "spot_scales": args.spot_scales,
           "start_h": args.start_h,
           "warm_h": args.warm_h, "quick_oracle_from": args.quick_oracle_from,
           "full_matrix": (args.hours >= 24 and not hours_at and not warm_at
                           and sorted(args.scales) == [1, 3, 20, 100]
                           and len(args.models) == 2 and len(args.markets) == 2
                           and args.spot_scales is None
                           and len(args.types) == 2 and not args.no_oracle),
           "complete": complete, "wall_seconds": round(wall_s, 1), "rows": rows}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    tmp.replace(out)
    return out


def merge_into(path: Path, rows: list[dict[str, Any]], run_args: dict[str, Any]) -> int:
    """Replace the mark rows of the results at ``path`` with ``rows`` (a ``--no-oracle``
    rerun after a planner change; the hindsight rows there are kept, their code unchanged):
    ratios and targets against those hindsight rows, each row's ratio before it as
    ``previous_ratio_to_oracle``, the run in ``runs``; the plot redrawn. The rows merged."""
    doc = json.loads(path.read_text())
    old = doc["rows"]

    def at(key: tuple[str, str], policy: str) -> int:
        return next(i for i, r in enumerate(old)
                    if (r["scenario"], r["market"]) == key and r["policy"] == policy)

    for n in (r for r in rows if r["policy"] == "mark"):
        key = (n["scenario"], n["market"])
        i = at(key, "mark")
        base, lead = old[at(key, "oracle")], old[at(key, "oracle-lead")]
        n["ratio_to_oracle"] = n["cost_usd"]["total"] / base["cost_usd"]["total"]
        n["ratio_to_oracle_lead"] = n["cost_usd"]["total"] / lead["cost_usd"]["total"]
        n["launch_ratio_to_oracle"] = (n["launches_per_hour"] / base["launches_per_hour"]
                                       if base["launches_per_hour"] else None)
        n["previous_ratio_to_oracle"] = old[i].get("previous_ratio_to_oracle",
                                                   old[i]["ratio_to_oracle"])
        n["targets_met"] = check(n, n["scale"])
        old[i] = n
    doc.setdefault("runs", []).append({**run_args, "mark_only": True})
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    tmp.replace(path)
    plot(old, path.with_suffix(".png"))
    return sum(1 for r in rows if r["policy"] == "mark")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--scales", type=float, nargs="+", default=[1, 3, 20, 100])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--markets", nargs="+", default=["on-demand", "spot"],
                    choices=["on-demand", "spot"])
    ap.add_argument("--types", nargs="+", default=["cpu", "all"], choices=["cpu", "all"])
    ap.add_argument("--no-oracle", action="store_true", help="mark only (no cost ratios)")
    ap.add_argument("--hours-at", nargs="*", default=[], metavar="SCALE=HOURS",
                    help="hours for a scale (x100 for a day needs ~30 GB of memory)")
    ap.add_argument("--spot-scales", type=float, nargs="*", default=None,
                    help="scales run with spot too (default: every scale)")
    ap.add_argument("--start-h", type=float, default=0.0, help="start in the trace (hours)")
    ap.add_argument("--warm-h", type=float, default=0.0,
                    help="hours before the start the policies see as their past")
    ap.add_argument("--warm-at", nargs="*", default=[], metavar="SCALE=HOURS",
                    help="for a scale: start HOURS in, those hours the policies' past")
    ap.add_argument("--quick-oracle-from", type=float, default=math.inf,
                    help="from this scale on, the oracle runs one variant, not its search")
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "scale.json"))
    ap.add_argument("--merge-into", metavar="JSON", default=None,
                    help="with --no-oracle: replace the mark rows of these results (kept "
                         "hindsight rows give the ratios; see merge_into)")
    args = ap.parse_args(argv)
    if args.merge_into and not args.no_oracle:
        ap.error("--merge-into reruns mark only: give --no-oracle too")
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    hours_at = {float(k): float(v) for k, v in (x.split("=") for x in args.hours_at)}
    warm_at = {float(k): float(v) for k, v in (x.split("=") for x in args.warm_at)}
    for model in args.models:
        for types in args.types:
            for scale in args.scales:
                hours = hours_at.get(scale, args.hours)
                start_h, warm_h = ((warm_at[scale], warm_at[scale]) if scale in warm_at
                                   else (args.start_h, args.warm_h))
                sc, hist = scenario(hours, scale, model, types, start_h, warm_h)
                print(f"{sc.name}: {sc.requests} requests", flush=True)
                for market in args.markets:
                    if (market == "spot" and args.spot_scales is not None
                            and scale not in args.spot_scales):
                        continue
                    for r in run(sc, market, hours, not args.no_oracle, hist,
                                 scale >= args.quick_oracle_from):
                        r.update(model=model, types=types, scale=scale, start_h=start_h,
                                 warm_h=warm_h)
                        r["targets_met"] = check(r, scale)
                        rows.append(r)
                    write(args, rows, hours_at, warm_at, time.perf_counter() - t0,
                          complete=False)
    print()
    print_rows(rows)
    print(f"\n{'scenario':44s} {'market':9s} {'policy':11s} {'SLO att':>8s} {'cost x':>7s} "
          f"{'x lead':>7s} "
          f"{'launch/h':>9s} {'x oracle':>8s} "
          f"{'throttled':>10s} {'faas %':>7s} {'M req/s':>8s}  targets")
    for r in rows:
        lr = r.get("launch_ratio_to_oracle")
        cr = r.get("ratio_to_oracle")
        cl = r.get("ratio_to_oracle_lead")
        print(f"{r['scenario'][:44]:44s} {r['market']:9s} {r['policy']:11s} "
              f"{r['slo_attainment']:8.3%} {'-' if cr is None else f'{cr:.2f}':>7s} "
              f"{'-' if cl is None else f'{cl:.2f}':>7s} "
              f"{r['launches_per_hour']:9.1f} {'-' if lr is None else f'{lr:.2f}':>8s} "
              f"{r['faas_throttled']:10d} {100 * r['faas_share_of_cost']:7.1f} "
              f"{r['sim_requests_per_s'] / 1e6:8.2f}  "
              f"{' '.join(k + ('+' if v else '-') for k, v in r['targets_met'].items())}")
    out = write(args, rows, hours_at, warm_at, time.perf_counter() - t0, complete=True)
    png = out.with_suffix(".png")
    plot(rows, png)
    met = [all(r["targets_met"].values()) for r in rows if r["policy"] == "mark"]
    print(f"\nmark rows meeting every target: {sum(met)} of {len(met)}; wrote {out} and {png}")
    if args.merge_into:
        n = merge_into(Path(args.merge_into), rows, {
            k: getattr(args, k) for k in ("models", "types", "scales", "markets",
                                          "spot_scales")} | {
            "hours_at": hours_at, "warm_at": warm_at,
            "wall_seconds": round(time.perf_counter() - t0, 1)})
        print(f"merged {n} mark rows into {args.merge_into}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
