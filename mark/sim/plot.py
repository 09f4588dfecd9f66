"""Timeline plot of a simulation: rate, forecast, capacity by market, latency vs the SLO."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mark.sim.metrics import SimResult


def plot_timeline(res: SimResult, path: str | Path, title: str | None = None) -> None:
    """Two panels over time (hours): requests/s with forecast and capacity stacked by market
    (on-demand, spot, FaaS-served), and per-step p99 latency against the SLO bound. With a
    FaaS-tier policy, the steps with no instance and the cold-start cover are shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = res.timeline
    if not tl:
        raise ValueError("the result has no timeline (simulate(..., timeline=True))")
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 7), sharex=True,
                                   gridspec_kw={"height_ratios": [2, 1]})
    th = tl["step_t_s"] / 3600.0
    ct = np.asarray(tl["t_s"]) / 3600.0
    od, sp = tl["cap_on_demand_rps"], tl["cap_spot_rps"]
    ax1.stackplot(ct, od, sp, labels=["capacity on-demand", "capacity spot"],
                  colors=["#9ecae1", "#a1d99b"], step="post", alpha=0.8)
    ax1.plot(th, tl["rate_rps"], color="black", lw=0.7, label="arrival rate")
    ax1.plot(th, tl["faas_rps"], color="#de2d26", lw=0.7, label="spilled to FaaS")
    fc = tl.get("forecast_rps")
    if fc is not None and np.isfinite(fc).any():
        ax1.plot(ct, fc, color="#756bb1", lw=0.8, ls="--", label="forecast")
    cover = np.asarray(tl.get("faas_cover", []), dtype=np.float64)
    if cover.size == ct.size and np.isfinite(cover).any():  # the FaaS tier's record
        zero = (np.asarray(od) + np.asarray(sp)) <= 0
        for mask, color, label in ((zero, "#fee0d2", "no instance (FaaS tier)"),
                                   (cover == 1.0, "#fdae6b", "cover: warm containers"),
                                   (cover == 2.0, "#bcbddc", "cover: one instance")):
            if mask.any():
                ax1.fill_between(ct, 0, 1, where=mask, step="post", color=color, alpha=0.5,
                                 transform=ax1.get_xaxis_transform(), label=label, lw=0)
    ax1.set_ylabel("requests/s")
    ax1.legend(loc="upper left", fontsize=8, ncol=3)
    ax1.set_title(title or f"{res.policy}: ${res.cost_usd['total']:.2f}, "
                  f"SLO attainment {res.slo_attainment:.3%}, spill {res.spill_share:.2%}")
    ax2.plot(th, tl["p99_ms"], lw=0.7, label="p99 latency per step")
    ax2.axhline(res.slo_ms, color="#de2d26", ls="--", lw=0.8, label=f"SLO {res.slo_ms:g} ms")
    ax2.set_yscale("log")
    ax2.set_ylabel("ms")
    ax2.set_xlabel("hours")
    ax2.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
