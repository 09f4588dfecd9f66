"""MArk's experiments at AWS scale, in the simulator, written up as one report with figures.

For each scenario (``bench/scenarios.py``; Inception-v3, SLO 98% under 500 ms, CPU types
only, seed 1 unless ``--seed``):

- ``twitter(7)``: the shipped Twitter week at its own rate (x1, mean ~64 req/s);
- the Twitter trace x20 (MArk's scale, peak ~4,000 req/s), ``--x20-days`` days from the
  week's start (default 1: the hindsight plan's five variants over a week at x20 would
  take about an hour on a 2-core box);
- ``mmpp_surges(2)``: 3-state MMPP arrivals with +75% and +100% surges;

every policy: ``mark`` on demand and with spot, ``sagemaker`` (billed at ml.* prices and at
EC2 prices), ``lambda``, ``batch``, ``mark-released`` (on demand and spot) and
``hindsight`` (on demand and spot), plus the lower bound each run reports
(``lower_bound_usd``, per market). Rows are :func:`scenarios.row`, plus the ratio to the
lower bound and the latency CCDF on a log grid. Then the twin (``bench/results/twin.json``,
when the lead has produced it) and the live local numbers (``live_control.json``,
``frontend_overhead.json``, when present).

Writes the markdown report (``--out``), its figures (``docs/figures/evaluation-*.png``,
beside the report) and the JSON (``--json``).

    nice -n 19 .venv/bin/python bench/evaluation.py [--quick] [--out docs/evaluation.md]
        [--json bench/results/evaluation.json]

``--quick`` runs short slices (6 h x1, 1 h x20, 7.2 h of MMPP) for a smoke run of well
under a minute; its numbers are not the report's.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import inspect
import json
import math
import os
import platform
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scenarios import (  # noqa: E402
    CPU_TYPES,
    MMPP_SEED,
    TWITTER,
    Scenario,
    mmpp_surges,
    row,
    twitter,
)

from mark.sim import SimResult  # noqa: E402
from provisioner import POLICIES  # noqa: E402

#: (label, policy, market, simulate kw); hindsight first in each market (the ratio's base)
RUNS: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("hindsight", "hindsight", "on-demand", {}),
    ("mark", "mark", "on-demand", {}),
    ("sagemaker", "sagemaker", "on-demand", {"ml_premium": True}),
    ("sagemaker (EC2 prices)", "sagemaker", "on-demand", {"ml_premium": False}),
    ("lambda", "lambda", "on-demand", {}),
    ("batch", "batch", "on-demand", {}),
    ("mark-released", "mark-released", "on-demand", {}),
    ("hindsight", "hindsight", "spot", {}),
    ("mark", "mark", "spot", {}),
    ("mark-released", "mark-released", "spot", {}),
)
#: the latency CCDF's grid: 10^0 .. 10^7 ms, CCDF_BINS log-uniform steps
CCDF_LO, CCDF_HI, CCDF_BINS = 0.0, 7.0, 280
COLORS = {"hindsight": "#636363", "mark": "#3182bd", "sagemaker": "#31a354",
          "sagemaker (EC2 prices)": "#a1d99b", "lambda": "#de2d26", "batch": "#fc9272",
          "mark-released": "#756bb1"}
FIG_DIR_NAME = "figures"
#: policies run on demand only (no instances, or no spot market for SageMaker hosting)
MARKETLESS = ("sagemaker", "sagemaker (EC2 prices)", "lambda", "batch")


# --------------------------------------------------------------------------- scenarios


def x20(days: float) -> Scenario:
    """The Twitter trace's first ``days`` days x20 (``twitter``'s scenario, rescaled)."""
    span = f"{days:g} d" if days >= 1 else f"{days * 24:g} h"
    return dataclasses.replace(twitter(days), name=f"twitter x20, {span}", scale=20.0)


def build_scenarios(quick: bool, days: float, x20_days: float, mmpp_days: float,
                    only: list[str] | None) -> list[tuple[str, Scenario, str]]:
    """(key, scenario, how it is built) for each scenario run."""
    if quick:
        days, x20_days, mmpp_days = 0.25, 1 / 24, 0.3
    out = [
        ("twitter-x1", twitter(days), f"scenarios.twitter({days:g})"),
        ("twitter-x20", x20(x20_days),
         f"scenarios.twitter({x20_days:g}) with scale=20 (dataclasses.replace)"),
        ("mmpp-surges", mmpp_surges(mmpp_days), f"scenarios.mmpp_surges({mmpp_days:g})"),
    ]
    return [o for o in out if not only or o[0] in only]


# --------------------------------------------------------------------------- running


def ccdf(lat_s: np.ndarray) -> list[float]:
    """P(latency >= edge) at each edge of the log grid (ms); failed requests (inf) count as
    above every edge."""
    n = lat_s.size
    if n == 0:
        return [0.0] * (CCDF_BINS + 1)
    with np.errstate(divide="ignore"):
        x = np.log10(np.maximum(lat_s, 1e-9) * 1000.0)
    below = int(np.count_nonzero(x < CCDF_LO))
    h, _ = np.histogram(x[np.isfinite(x)], bins=CCDF_BINS, range=(CCDF_LO, CCDF_HI))
    less = below + np.r_[0, np.cumsum(h)]
    return [float(f"{v:.6g}") for v in 1.0 - less / n]


def ccdf_grid_ms() -> list[float]:
    return [float(f"{v:.6g}") for v in np.logspace(CCDF_LO, CCDF_HI, CCDF_BINS + 1)]


def run_scenario(key: str, sc: Scenario, seed: int, fig_dir: Path | None
                 ) -> tuple[list[dict[str, Any]], dict[str, float | None]]:
    rows: list[dict[str, Any]] = []
    bounds: dict[str, float | None] = {}
    base: dict[str, float] = {}
    for label, pol, market, kw in RUNS:
        spot = market == "spot"
        want_tl = fig_dir is not None and key == "mmpp-surges" and pol == "mark"
        t0 = time.perf_counter()
        r: SimResult = sc.simulate(pol, spot=spot, seed=seed, timeline=want_tl, **kw)
        wall = time.perf_counter() - t0
        lb = r.extra.get("lower_bound_usd")
        bounds.setdefault(market, lb)
        if pol == "hindsight":
            base[market] = r.cost_usd["total"]
        out = row(sc, label, market, r, base.get(market),
                  ratio_to_lower_bound=(r.cost_usd["total"] / lb if lb else None),
                  run_wall_s=round(wall, 1), ccdf=ccdf(r.latencies_s))
        rows.append(out)
        if want_tl and fig_dir is not None and r.timeline:
            from mark.sim.plot import plot_timeline

            plot_timeline(r, fig_dir / f"evaluation-timeline-{key}-{market}.png",
                          f"{sc.name} / mark / {market} (seed {seed})")
        ratio = out["ratio_to_oracle"]
        print(f"  {market:9s} {label:24s} ${r.cost_usd['total']:10.2f} "
              f"${r.cost_per_million_usd:8.3f}/M x{ratio if ratio else math.nan:5.2f} hindsight "
              f"att {r.slo_attainment:8.4%} spill {r.spill_share:6.2%} ({wall:.0f} s)",
              flush=True)
        del r
    return rows, bounds


# --------------------------------------------------------------------------- summary


def get(rows: list[dict[str, Any]], sc: str, label: str, market: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["scenario"] == sc and r["policy"] == label
                 and r["market"] == market), None)


def usd(r: dict[str, Any] | None) -> float:
    return math.nan if r is None else float(r["cost_usd"]["total"])


def summarise(rows: list[dict[str, Any]], target: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for sc in dict.fromkeys(r["scenario"] for r in rows):
        m_od, m_sp = get(rows, sc, "mark", "on-demand"), get(rows, sc, "mark", "spot")
        sm = get(rows, sc, "sagemaker", "on-demand")
        sm_ec2 = get(rows, sc, "sagemaker (EC2 prices)", "on-demand")
        s: dict[str, Any] = {
            "sagemaker_over_mark_on_demand": usd(sm) / usd(m_od),
            "sagemaker_over_mark_spot": usd(sm) / usd(m_sp),
            "sagemaker_ec2_over_mark_on_demand": usd(sm_ec2) / usd(m_od),
            "sagemaker_ec2_over_mark_spot": usd(sm_ec2) / usd(m_sp),
        }
        for market, m in (("on_demand", m_od), ("spot", m_sp)):
            if m is None:
                continue
            s[f"mark_attainment_{market}"] = m["slo_attainment"]
            s[f"mark_over_hindsight_{market}"] = m["ratio_to_oracle"]
            s[f"mark_over_lower_bound_{market}"] = m["ratio_to_lower_bound"]
        s["losses"] = losses(rows, sc, target)
        out[sc] = s
    return out


def losses(rows: list[dict[str, Any]], sc: str, target: float) -> list[str]:
    """Plain statements of where mark does worse than another policy on ``sc``."""
    out: list[str] = []
    for market in ("on-demand", "spot"):
        m = get(rows, sc, "mark", market)
        if m is None:
            continue
        if m["slo_attainment"] < target:
            out.append(f"mark ({market}) misses the SLO: {m['slo_attainment']:.3%} of requests "
                       f"within the bound, {target:.0%} required.")
        # the same market's rows, and (against spot) the policies with no spot variant
        rivals = [r for r in rows if r["scenario"] == sc and r["policy"] != "mark"
                  and (r["market"] == market
                       or (r["policy"] in MARKETLESS and r["market"] == "on-demand"))]
        for r in rivals:
            cheaper = usd(r) < usd(m)
            better_att = r["slo_attainment"] > m["slo_attainment"]
            meets = r["slo_attainment"] >= target
            what = f"{r['policy']} ({r['market']})"
            if r["policy"] == "hindsight":
                if cheaper:
                    out.append(f"mark ({market}) costs {usd(m) / usd(r):.2f}x the hindsight "
                               f"plan ({market}): the gap left by not knowing the future "
                               "(and by boot delays the hindsight plan does not pay).")
                continue
            if cheaper and meets:
                out.append(f"{what} costs less than mark ({market}): ${usd(r):.2f} vs "
                           f"${usd(m):.2f} ({usd(m) / usd(r):.2f}x), at "
                           f"{r['slo_attainment']:.3%} attainment vs mark's "
                           f"{m['slo_attainment']:.3%}.")
            elif cheaper:
                out.append(f"{what} costs less than mark ({market}) but misses the SLO "
                           f"({r['slo_attainment']:.3%}).")
            elif better_att and r["slo_attainment"] - m["slo_attainment"] >= 1e-3:
                out.append(f"{what} has higher SLO attainment than mark ({market}): "
                           f"{r['slo_attainment']:.3%} vs {m['slo_attainment']:.3%} "
                           f"(at {usd(r) / usd(m):.2f}x mark's cost).")
        # tail latency: mark spends the SLO's slack; say against whom it shows
        p99 = m["latency_ms"].get("p99") or math.inf
        faster = [f"{r['policy']} ({r['market']}) {r['latency_ms']['p99']:.0f} ms"
                  for r in rivals if r["slo_attainment"] >= target
                  and r["policy"] not in ("sagemaker (EC2 prices)",)
                  and (r["latency_ms"].get("p99") or math.inf) * 1.2 < p99]
        if faster:
            out.append(f"tail latency: mark ({market})'s p99 is {p99:.0f} ms, against "
                       f"{', '.join(faster)} (mark plans to the SLO bound, spilling what "
                       "would pass it, rather than to low latency).")
    return out


# --------------------------------------------------------------------------- figures


def plot_cost(rows: list[dict[str, Any]], bounds: dict[str, dict[str, float | None]],
              target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scs = list(dict.fromkeys(r["scenario"] for r in rows))
    fig, axes = plt.subplots(2, len(scs), figsize=(5.2 * len(scs), 7.5), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 2]})
    for j, sc in enumerate(scs):
        rs = [r for r in rows if r["scenario"] == sc]
        x = np.arange(len(rs))
        colors = [COLORS.get(r["policy"], "#999999") for r in rs]
        hatch = ["//" if r["market"] == "spot" else "" for r in rs]
        ax = axes[0][j]
        ys = [r["cost_per_million_usd"] for r in rs]
        bars = ax.bar(x, ys, color=colors, edgecolor="black", linewidth=0.4)
        for b, h in zip(bars, hatch, strict=True):
            b.set_hatch(h)
        for xi, y in zip(x, ys, strict=True):
            ax.text(xi, y, f"{y:.2f}", ha="center", va="bottom", fontsize=6)
        n = next((r["requests"] for r in rs), 0)
        for market, ls in (("on-demand", "--"), ("spot", ":")):
            lb = bounds.get(sc, {}).get(market)
            if lb and n:
                ax.axhline(lb / n * 1e6, color="black", ls=ls, lw=0.9,
                           label=f"lower bound, {market}")
        ax.set_ylim(0, 1.12 * max(ys))
        ax.set_ylabel("$ per million requests")
        ax.set_title(sc, fontsize=9)
        if j == 0:
            ax.legend(fontsize=7, loc="upper left")
        ax2 = axes[1][j]
        bars2 = ax2.bar(x, [100 * r["slo_attainment"] for r in rs], color=colors,
                        edgecolor="black", linewidth=0.4)
        for b, h in zip(bars2, hatch, strict=True):
            b.set_hatch(h)
        ax2.axhline(100 * target, color="#de2d26", ls="--", lw=0.8,
                    label=f"SLO: {100 * target:g}%")
        low = min(100 * r["slo_attainment"] for r in rs)
        ax2.set_ylim(min(95.0, 5 * (low // 5)), 100.3)
        ax2.set_ylabel("SLO attainment %")
        if j == 0:
            ax2.legend(fontsize=7, loc="lower left")
        ax.set_xticks(x)
        ax.set_xticklabels([])
        ax2.set_xticks(x)
        ax2.set_xticklabels([f"{r['policy']}\n{r['market']}" for r in rs], fontsize=6,
                            rotation=60)
    fig.suptitle("Cost and SLO attainment per policy (hatched: spot allowed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ccdf(rows: list[dict[str, Any]], grid: list[float], slo_ms: float,
              path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scs = list(dict.fromkeys(r["scenario"] for r in rows))
    fig, axes = plt.subplots(1, len(scs), figsize=(5.2 * len(scs), 5.4), squeeze=False)
    g = np.asarray(grid)
    for j, sc in enumerate(scs):
        ax = axes[0][j]
        # rows with the same latencies (the same fleet billed otherwise) share one curve
        curves: dict[tuple[float, ...], list[dict[str, Any]]] = {}
        for r in (r for r in rows if r["scenario"] == sc):
            curves.setdefault(tuple(r["ccdf"]), []).append(r)
        for same in curves.values():
            r = same[0]
            y = np.asarray(r["ccdf"], dtype=np.float64)
            y = np.where(y > 0, y, np.nan)
            label = " = ".join(f"{o['policy']} ({o['market']})" for o in same)
            ax.plot(g, y, color=COLORS.get(r["policy"], "#999999"),
                    ls=":" if r["market"] == "spot" else "-", lw=1.1, label=label)
        ax.axvline(slo_ms, color="black", ls="--", lw=0.8, label=f"SLO bound {slo_ms:g} ms")
        ax.axhline(0.02, color="#de2d26", ls=":", lw=0.8, label="2% (98th percentile)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(1e-7, 1.5)
        ax.set_xlim(50, 10 ** CCDF_HI)
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("P(latency >= x)")
        ax.set_title(sc, fontsize=9)
        ax.grid(True, which="major", lw=0.3)
    handles: dict[str, Any] = {}
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), fontsize=7, loc="lower center", ncol=4)
    fig.suptitle("Latency CCDF per policy (failed requests count as infinitely late)",
                 fontsize=10)
    rows_l = math.ceil(len(handles) / 4)
    fig.tight_layout(rect=(0.0, 0.05 * rows_l, 1.0, 1.0))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rel(p: Path, to: Path = REPO) -> str:
    """``p`` relative to ``to`` where it is below it, else as it is."""
    try:
        return str(p.resolve().relative_to(to.resolve()))
    except ValueError:
        return str(p)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Numeric (and short string) leaves of a nested dict, keys joined with '.'."""
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif d is None or isinstance(d, bool | int | float | str):
        out[prefix[:-1]] = d
    return out


def plot_twin(table: list[tuple[str, Any, Any, Any]], path: Path) -> bool:
    items = [(k, float(ra)) for k, _, _, ra in table
             if isinstance(ra, int | float) and not isinstance(ra, bool) and math.isfinite(ra)]
    if not items:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(items) + 2), 4))
    x = np.arange(len(items))
    ax.bar(x, [v for _, v in items], color="#3182bd")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels([k for k, _ in items], rotation=60, fontsize=7, ha="right")
    ax.set_ylabel("ratio (from twin.json)")
    ax.set_title("Twin: simulated against live", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- markdown


def fmt(v: Any, spec: str = ".4g") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int | float):
        if isinstance(v, float) and not math.isfinite(v):
            return "-"
        return format(v, spec)
    return str(v)


def md_table(head: list[str], body: Iterable[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in body]
    return out


def policy_options() -> list[str]:
    """Every evaluated policy's constructor defaults, read from the registry."""
    lines = []
    for name in ("mark", "sagemaker", "lambda", "batch", "mark-released", "hindsight"):
        fac = POLICIES[name]
        params = [f"{p.name}={p.default!r}" for p in inspect.signature(fac).parameters.values()
                  if p.name != "ctx" and p.default is not inspect.Parameter.empty]
        space = getattr(fac, "search_space", ())
        extra = f"; variants tried: {list(space)}" if space else ""
        lines.append(f"- `{name}` ({fac.__module__}.{fac.__name__}): defaults, "
                     f"`{', '.join(params) or 'none'}`{extra}")
    return lines


def results_table(rows: list[dict[str, Any]], bounds: dict[str, float | None],
                  target: float) -> list[str]:
    body = []
    n = next((r["requests"] for r in rows), 0)
    for r in rows:
        lat = r["latency_ms"]
        att = r["slo_attainment"]
        body.append([
            r["policy"], r["market"], fmt(r["cost_usd"]["total"], ",.2f"),
            fmt(r["cost_per_million_usd"], ".3f"), fmt(r["ratio_to_oracle"], ".2f"),
            fmt(r["ratio_to_lower_bound"], ".2f"),
            f"{att:.3%}" + ("" if att >= target else " **(miss)**"),
            fmt(lat.get("p50"), ".0f"), fmt(lat.get("p98"), ".0f"), fmt(lat.get("p99"), ".0f"),
            f"{r['spill_share']:.2%}", fmt(r.get("launches"), "d"),
            fmt(r.get("faas_throttled"), "d"), fmt(r["run_wall_s"], ".0f"),
        ])
    for market in ("on-demand", "spot"):
        lb = bounds.get(market)
        if lb:
            body.append(["**lower bound**", market, fmt(lb, ",.2f"), fmt(lb / n * 1e6, ".3f"),
                         "-", "1.00", f">= {target:.0%} (by definition)", "-", "-", "-", "-",
                         "-", "-", "-"])
    return md_table(["policy", "market", "cost $", "$/M req", "x hindsight", "x lower bound",
                     "SLO attainment", "p50 ms", "p98 ms", "p99 ms", "spill", "launches",
                     "FaaS throttled", "wall s"], body)


def twin_section(path: Path, fig_dir: Path, doc_dir: Path) -> tuple[list[str], Any]:
    lines = ["## The twin: live against simulated", ""]
    if not path.exists():
        lines += [f"Not yet run (`{rel(path)}` is absent: the lead produces it "
                  "with the live cluster)."]
        return lines, None
    twin = json.loads(path.read_text())
    live = flatten(twin.get("live", {}))
    sim = flatten(twin.get("sim", {}))
    ratio = flatten(twin.get("ratio", {}))
    keys = list(dict.fromkeys([*live, *sim, *ratio]))
    table = [(k, live.get(k), sim.get(k), ratio.get(k)) for k in keys]
    other = {k: v for k, v in twin.items() if k not in ("live", "sim", "ratio")}
    mtime = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).strftime("%Y-%m-%d %H:%M")
    lines += [f"From `{rel(path)}` (written {mtime} UTC by the lead's twin run, "
              "not by this script; the ratio column is the file's own `ratio`).", ""]
    if other:
        lines += ["How it was produced (the file's other fields):", "", "```json",
                  json.dumps(other, indent=1)[:3000], "```", ""]
    lines += md_table(["metric", "live", "sim", "ratio"],
                      [[k, fmt(a), fmt(b), fmt(c)] for k, a, b, c in table])
    png = fig_dir / "evaluation-twin.png"
    if plot_twin(table, png):
        lines += ["", f"![twin ratios]({rel(png, doc_dir)})"]
    return lines, {"live": live, "sim": sim, "ratio": ratio}


def live_section(results: Path) -> tuple[list[str], dict[str, Any]]:
    lines = ["## Live local numbers", ""]
    found: dict[str, Any] = {}
    lc = results / "live_control.json"
    if lc.exists():
        d = json.loads(lc.read_text())
        found["live_control"] = True
        mt = dt.datetime.fromtimestamp(lc.stat().st_mtime, dt.UTC).strftime("%Y-%m-%d %H:%M")
        sl = d.get("slice", {})
        lines += [
            f"### The control loop on the local cluster (`bench/live_control.py`, "
            f"`{rel(lc)}`, written {mt} UTC)", "",
            f"Trace {sl.get('trace')} from minute {sl.get('start_min')} for "
            f"{sl.get('minutes')} minutes x{sl.get('scale')} ({sl.get('requests')} requests, "
            f"peak {sl.get('peak_rps')} req/s), policy `{d.get('policy')}`, emulated boot "
            f"{d.get('launch_delay_s')} s; the same slice replayed in the simulator beside it"
            + (f", both worlds' past the {sl['warmup_min']} minutes before it"
               if sl.get("warmup_min") else "")
            + ". Run by the lead (a live bench, not run by this script).", ""]
        body = []
        lv, sm = d.get("live", {}), d.get("simulated", {})
        for k in ("requests", "lost", "errors", "slo_attainment", "latency_ms.p50",
                  "latency_ms.p90", "latency_ms.p98", "latency_ms.p99", "cost_usd", "launches"):
            a, b = flatten(lv).get(k), flatten(sm).get(k)
            spec = ".4%" if k == "slo_attainment" else ".6g"
            body.append([k, fmt(a, spec), fmt(b, spec)])
        ws = d.get("wall_s", {})
        body.append(["wall s", fmt(ws.get("live"), ".1f"), fmt(ws.get("simulated"), ".2f")])
        lines += md_table(["metric", "live", "simulated"], body)
        lines += ["", "Its figure: `bench/results/live_control.png`.", ""]
    else:
        lines += ["`bench/results/live_control.json`: not yet run.", ""]
    fo = results / "frontend_overhead.json"
    if fo.exists():
        d2 = json.loads(fo.read_text())
        found["frontend_overhead"] = True
        mt = dt.datetime.fromtimestamp(fo.stat().st_mtime, dt.UTC).strftime("%Y-%m-%d %H:%M")
        lines += [f"### Front-end overhead (`bench/frontend_overhead.py`, "
                  f"`{rel(fo)}`, written {mt} UTC)", "",
                  "Closed-loop clients against Triton directly and through the front end on "
                  "this machine (2 cores, shared); run by the lead.", ""]
        rows = d2 if isinstance(d2, list) else d2.get("rows", [])
        lines += md_table(
            ["model", "concurrency", "target", "throughput req/s", "p50 ms", "p99 ms",
             "front-end CPU ms/req"],
            [[str(r.get("model")), str(r.get("concurrency")), str(r.get("target")),
              fmt(r.get("throughput_rps"), ".0f"), fmt(r.get("p50_ms"), ".2f"),
              fmt(r.get("p99_ms"), ".2f"), fmt(r.get("frontend_cpu_ms_per_request"), ".3f")]
             for r in rows])
        lines.append("")
    else:
        lines += ["`bench/results/frontend_overhead.json`: not yet run.", ""]
    return lines, found


def headline(doc: dict[str, Any]) -> list[str]:
    """The summary table across scenarios and the plain verdict."""
    rows: list[dict[str, Any]] = doc["rows"]
    target = doc["slo"]["percentile"] / 100.0
    body = []
    beaten: list[str] = []
    for sc, s in doc["summary"].items():
        cells = [sc]
        for market in ("on-demand", "spot"):
            m = get(rows, sc, "mark", market)
            cells += (["-"] * 4 if m is None else [
                fmt(m["cost_per_million_usd"], ".2f"), fmt(m["ratio_to_oracle"], ".2f"),
                fmt(m["ratio_to_lower_bound"], ".2f"), f"{m['slo_attainment']:.2%}"])
        cells += [fmt(s["sagemaker_over_mark_on_demand"], ".2f"),
                  fmt(s["sagemaker_over_mark_spot"], ".2f")]
        ok = [r for r in rows if r["scenario"] == sc and r["slo_attainment"] >= target
              and r["policy"] not in ("hindsight", "mark")]
        best = min(ok, key=usd, default=None)
        cells.append("-" if best is None else f"{best['policy']} ({best['market']}), "
                     f"{best['cost_per_million_usd']:.2f}")
        body.append(cells)
        for market in ("on-demand", "spot"):
            m = get(rows, sc, "mark", market)
            if m is None:
                continue
            for r in rows:
                if (r["scenario"] == sc and r["policy"] not in ("mark", "hindsight")
                        and (r["market"] == market or r["policy"] in MARKETLESS)
                        and r["slo_attainment"] >= target and usd(r) < usd(m)):
                    beaten.append(f"{r['policy']} ({r['market']}) under mark ({market}) on {sc}")
    out = ["## Headline", ""]
    out += md_table(["scenario", "mark $/M", "x hindsight", "x lower bound", "attainment",
                     "mark+spot $/M", "x hindsight", "x lower bound", "attainment",
                     "SageMaker / mark", "SageMaker / mark+spot",
                     "cheapest baseline meeting the SLO, $/M"], body)
    out += ["", "Verdict, from the rows below:", ""]
    marks = [r for r in rows if r["policy"] == "mark"]
    if marks:
        low = min(marks, key=lambda r: r["slo_attainment"])
        out.append(("- mark meets the SLO in every run" if low["slo_attainment"] >= target
                    else "- mark misses the SLO in at least one run")
                   + f" (lowest: {low['slo_attainment']:.2%}, {low['scenario']}, "
                   f"{low['market']}; target {target:.0%}).")
        for market in ("on-demand", "spot"):
            ms = [r for r in marks if r["market"] == market and r["ratio_to_oracle"]]
            if ms:
                lo_r = min(ms, key=lambda r: r["ratio_to_oracle"])
                hi_r = max(ms, key=lambda r: r["ratio_to_oracle"])
                out.append(f"- mark ({market}) costs more than the hindsight plan everywhere: "
                           f"{lo_r['ratio_to_oracle']:.2f}x ({lo_r['scenario']}) to "
                           f"{hi_r['ratio_to_oracle']:.2f}x ({hi_r['scenario']}). The hindsight "
                           "plan knows the trace and launches instantly; mark pays for boot "
                           "delays with headroom and with spill to Lambda.")
    out.append("- No baseline that meets the SLO is cheaper than mark in any scenario."
               if not beaten else "- Cheaper than mark while meeting the SLO: "
               + "; ".join(beaten) + ".")
    out.append("- mark's p98/p99 sit closer to the bound than those of the costlier policies "
               "(hindsight, mark-released): it plans to the SLO, spilling what would pass it, "
               "not to low latency (see the CCDF and each scenario's list).")
    lbs = [r["ratio_to_lower_bound"] for r in rows if r["ratio_to_lower_bound"]]
    if lbs:
        out.append(f"- Every run costs at least {min(lbs):.2f}x the lower bound, the hindsight "
                   "plan's included: the bound is loose (it charges only the busy time of the "
                   "most efficient batches within the SLO and nothing for boots, idle "
                   "capacity, queueing or billing granularity). It bounds; it does not rank.")
    return out


def write_markdown(doc: dict[str, Any], out: Path, fig_dir: Path, results: Path,
                   cmd: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = doc["rows"]
    target = doc["slo"]["percentile"] / 100.0
    d = out.parent
    lines = [
        "# Evaluation: MArk's experiments at AWS scale, in the simulator", "",
        f"Generated by `{cmd}` on {doc['generated']} ({doc['machine']}, at nice 19, "
        f"{doc['wall_seconds']:.0f} s wall){' -- QUICK SMOKE RUN, not the report' if doc['quick'] else ''}. "
        "Every number below comes from that run unless its section names another file; "
        f"the JSON beside it is `{doc['json']}`.", "",
        *headline(doc), "",
        "## How the numbers are produced", "",
        f"- Simulator: `mark.sim.simulate` (a virtual clock; each request's latency from "
        f"Triton-style dynamic batching with instance service times spread around the profile's "
        f"means, coefficient of variation {doc['service_cv']}; spill to Lambda with buffering, "
        "cold starts, concurrency limits and per-ms billing; spot interruptions with a "
        "2-minute notice; launch delays and billing minimum from the catalogue "
        "`mark/core/data/catalogue.json`, us-east-1 list prices). No policy sees the future "
        "except `hindsight` (and `mark-released`, below); every policy starts with no past.",
        f"- Model: `{doc['profile']}` profile; SLO: {doc['slo']['percentile']:g}% of requests "
        f"within {doc['slo']['latency_ms']:g} ms (attainment = share of all requests within "
        "the bound; failed requests count as late).",
        f"- Instance types: CPU only, `{', '.join(doc['types'])}` (bench/scenarios.py's "
        "`CPU_TYPES`: with the shipped GPU estimates one GPU instance carries a whole trace, "
        "which says little about provisioning). Markets: on-demand only, or on-demand + spot "
        "(`spot=True`).",
        f"- Seed {doc['seed']} for every run (arrivals spread within each second, stochastic "
        "rounding of scaled counts, service-time draws, spot interruptions, the MMPP). One seed: "
        "differences of a few percent between policies are within seed noise and are not "
        "claims.",
        "- `x hindsight`: cost over the hindsight plan's in the same market (the cheapest of its "
        "variants meeting the SLO; it knows the whole trace and launches instantly, so it is a "
        "strong plan, not a bound). `x lower bound`: cost over `lower_bound_usd`, which every "
        "SimResult reports (`provisioner/bound.py`: no plan meeting the SLO can cost less in "
        "the simulator; it ignores launch delays, billing granularity, queueing and cold "
        "starts, so it is loose).",
        "- `sagemaker` is billed at ml.* prices (the catalogue's SageMaker premium); "
        "`sagemaker (EC2 prices)` is the same fleet billed at EC2 prices, so the reader sees "
        "how much of its gap is the premium. SageMaker hosting has no spot market: it is "
        "compared with mark's spot runs as it is.",
        "- `lambda` and `batch` use no instances, so they have no spot variant.",
        *([f"- The x20 run covers {doc['scenarios']['twitter-x20']['seconds'] / 86400:g} "
           f"day(s) of the week, not all of it: that is already "
           f"{doc['scenarios']['twitter-x20']['requests'] / 1e6:.0f} M requests, "
           "every latency kept, and the hindsight plan runs five variants per market, so a "
           "week would need several times the memory (over this 23 GB machine's) and over an hour "
           "at nice 19 on 2 cores."]
          if "twitter-x20" in doc["scenarios"]
          and doc["scenarios"]["twitter-x20"]["seconds"] < 7 * 86400 else []),
        "- `mark-released` follows MArk's released scheduler: a fixed fleet for 1.2x the "
        "trace's all-time peak, which it is *given from the whole trace in advance* (as the "
        "released code's hard-coded peak), no spill.",
        "",
        "Policy options (the registry's defaults; every run uses them):", "",
        *policy_options(), "",
        "Scenarios (defined in `bench/scenarios.py`, not here):", "",
    ]
    lines += md_table(
        ["scenario", "built by", "trace", "seconds", "scale", "requests", "peak req/s (x scale)",
         "mean req/s (x scale)"],
        [[s["name"], f"`{s['built_by']}`", s["trace"], str(s["seconds"]), fmt(s["scale"], "g"),
          f"{s['requests']:,}", fmt(s["peak_rps"], ".0f"), fmt(s["mean_rps"], ".1f")]
         for s in doc["scenarios"].values()])
    lines += ["", "## Cost and SLO attainment per policy per scenario", ""]
    lines += [f"![cost and attainment]({rel(fig_dir / 'evaluation-cost.png', d)})", "",
              "Bars: $ per million requests (the dashed and dotted lines are the "
              "lower bounds on demand and with spot) and SLO attainment (the red line is the "
              f"{target:.0%} target), per policy and market.", ""]
    for sc in dict.fromkeys(r["scenario"] for r in rows):
        s = doc["summary"][sc]
        lines += [f"### {sc}", ""]
        lines += results_table([r for r in rows if r["scenario"] == sc],
                               doc["bounds"].get(sc, {}), target)
        lines += ["",
                  f"SageMaker over mark: {s['sagemaker_over_mark_on_demand']:.2f}x on demand, "
                  f"{s['sagemaker_over_mark_spot']:.2f}x against mark with spot (at EC2 prices "
                  f"{s['sagemaker_ec2_over_mark_on_demand']:.2f}x and "
                  f"{s['sagemaker_ec2_over_mark_spot']:.2f}x). MArk reported up to 3.6x on "
                  "demand and 7.8x with spot on AWS.", ""]
        for r in (r for r in rows if r["scenario"] == sc):
            thr = r.get("faas_throttled") or 0
            if thr > 0.001 * r["requests"] and r["policy"] != "sagemaker (EC2 prices)":
                lines += [f"Note: {r['policy']} ({r['market']}) had {thr:,} FaaS invocations "
                          f"throttled ({thr / r['requests']:.2%} of requests): Lambda's default "
                          f"quota of {r.get('faas_max_concurrency', 1000):,} concurrent "
                          "executions per region (the catalogue's), which the simulator "
                          "enforces; throttled requests wait and retry.", ""]
        lines += ["Where mark does worse:", ""]
        lines += [f"- {x}" for x in s["losses"]] or ["- nowhere on this scenario."]
        lines.append("")
    grid = doc["ccdf_grid_ms"]
    lines += ["## Latency CCDF", "",
              f"![latency CCDF]({rel(fig_dir / 'evaluation-ccdf.png', d)})", "",
              "P(latency >= x) per policy, log-log, from every request's simulated latency "
              f"(a {CCDF_BINS}-step log grid from {grid[0]:g} ms to {grid[-1]:g} ms; the "
              "`ccdf` field of each JSON row). The dashed vertical line is the SLO bound; a "
              "curve crossing it below the 2% line meets the SLO. Solid: on demand; dotted: "
              "spot allowed. Policies with identical latencies (the same fleet billed at other "
              "prices, or the same Lambda configuration) share one curve, labelled with all "
              "their names.", ""]
    tl = sorted(fig_dir.glob("evaluation-timeline-*.png"))
    if tl:
        lines += ["## mark's timeline on the MMPP surges", ""]
        lines += [f"![{p.stem}]({rel(p, d)})" for p in tl]
        lines += ["", "Arrival rate, mark's forecast, capacity by market and what spilled to "
                  "FaaS (top); per-step p99 latency against the SLO (bottom). The surges are at "
                  "6 h (+75%) and 14 h (+100%) of each day, 20 minutes each.", ""]
    twin_lines, twin = twin_section(results / "twin.json", fig_dir, d)
    live_lines, live = live_section(results)
    lines += [*twin_lines, "", *live_lines]
    lines += ["## Reproducing", "", "```", f"nice -n 19 {cmd}", "```", "",
              "`--quick` runs short slices (a smoke run under a minute); `--x20-days`, "
              "`--days`, `--mmpp-days`, `--seed` and `--only` change what is run, and this "
              "page says what was. `--render-only` simulates nothing: it rewrites this page "
              "and its figures from the JSON, picking up `twin.json` and the live results "
              "as they are now.", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    return {"twin": twin, "live": live}


# --------------------------------------------------------------------------- main


def run_all(args: argparse.Namespace, js: Path, fig_dir: Path, cmd: str) -> dict[str, Any]:
    """Simulate every scenario and policy; the JSON document (without the report's parts)."""
    for old in fig_dir.glob("evaluation-timeline-*.png"):
        old.unlink()
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    bounds: dict[str, dict[str, float | None]] = {}
    scen: dict[str, Any] = {}
    scs = build_scenarios(args.quick, args.days, args.x20_days, args.mmpp_days, args.only)
    for key, sc, how in scs:
        print(f"{sc.name}: {sc.requests:,} requests", flush=True)
        c = sc.counts.astype(np.float64) * sc.scale
        scen[key] = {"name": sc.name, "built_by": how,
                     "trace": TWITTER if key.startswith("twitter") else
                     f"3-state MMPP around the Twitter mean (seed {MMPP_SEED}) + surges",
                     "seconds": int(sc.counts.size), "scale": sc.scale,
                     "requests": sc.requests, "peak_rps": float(c.max()),
                     "mean_rps": float(c.mean()), "profile": sc.profile,
                     "slo": {"latency_ms": sc.slo.latency_ms, "percentile": sc.slo.percentile},
                     "types": list(sc.types or ())}
        rs, b = run_scenario(key, sc, args.seed, fig_dir)
        rows += rs
        bounds[sc.name] = b
    slo = scs[0][1].slo
    return {
        "generated": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": cmd,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                   f"Python {platform.python_version()}",
        "quick": args.quick, "seed": args.seed, "profile": scs[0][1].profile,
        "slo": {"latency_ms": slo.latency_ms, "percentile": slo.percentile},
        "types": list(CPU_TYPES), "service_cv": next((r.get("service_cv") for r in rows), None),
        "json": rel(js), "scenarios": scen, "bounds": bounds, "ccdf_grid_ms": ccdf_grid_ms(),
        "rows": rows, "summary": summarise(rows, slo.percentile / 100.0),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short slices: a smoke run")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "evaluation.md")
    ap.add_argument("--json", type=Path, default=REPO / "bench" / "results" / "evaluation.json")
    ap.add_argument("--results", type=Path, default=REPO / "bench" / "results",
                    help="where twin.json, live_control.json, frontend_overhead.json are read")
    ap.add_argument("--render-only", action="store_true",
                    help="simulate nothing: rewrite the report and its figures from --json "
                         "(e.g. once twin.json exists); the timelines are kept")
    ap.add_argument("--days", type=float, default=7.0, help="days of the x1 Twitter week")
    ap.add_argument("--x20-days", type=float, default=1.0, help="days of the x20 Twitter run")
    ap.add_argument("--mmpp-days", type=float, default=2.0, help="days of MMPP + surges")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", nargs="*", default=None,
                    choices=["twitter-x1", "twitter-x20", "mmpp-surges"])
    args = ap.parse_args(argv)
    out, js = args.out.resolve(), args.json.resolve()
    fig_dir = out.parent / FIG_DIR_NAME
    fig_dir.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        doc = json.loads(js.read_text())
        doc.setdefault("command", ".venv/bin/python bench/evaluation.py")
        doc["summary"] = summarise(doc["rows"], doc["slo"]["percentile"] / 100.0)
    else:
        cmd = " ".join([".venv/bin/python bench/evaluation.py",
                        *(argv if argv is not None else sys.argv[1:])])
        doc = run_all(args, js, fig_dir, cmd)
    rows, target = doc["rows"], doc["slo"]["percentile"] / 100.0
    plot_cost(rows, doc["bounds"], target, fig_dir / "evaluation-cost.png")
    plot_ccdf(rows, doc["ccdf_grid_ms"], doc["slo"]["latency_ms"],
              fig_dir / "evaluation-ccdf.png")
    doc.update(write_markdown(doc, out, fig_dir, args.results.resolve(), doc["command"]))
    js.parent.mkdir(parents=True, exist_ok=True)
    js.write_text(json.dumps(doc, indent=1, default=float) + "\n")
    print()
    for sc, s in doc["summary"].items():
        print(f"{sc}: sagemaker/mark {s['sagemaker_over_mark_on_demand']:.2f}x on demand, "
              f"{s['sagemaker_over_mark_spot']:.2f}x spot")
        for x in s["losses"]:
            print(f"  - {x}")
    print(f"\nwrote {out}, {fig_dir}/evaluation-*.png and {js} "
          f"(simulation {doc['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
