"""The benchmark scenarios, defined once, and the one row schema every simulator benchmark
writes.

A :class:`Scenario` is a per-second trace with the profile, SLO, scale and instance types it
is replayed with. Every row is :func:`row`: ``scenario``, ``policy``, ``market``, then
:meth:`mark.sim.SimResult.to_json`'s fields (requests, slo_attainment, latency_ms, cost_usd,
cost_per_million_usd, spill_share, wall_seconds, counters), then ``ratio_to_oracle`` (None
without an oracle run) and any bench-specific fields.

Traces (say the scaling in every report):

- ``twitter(days)``: the shipped Twitter week at its own rate (x1, mean ~64 req/s), the
  first ``days`` days, Inception-v3 (MArk's model), SLO 98% under 500 ms;
- ``low_rate(days)``: the same days scaled so the peak minute is ``LOW_PEAK_RPS`` (about one
  c5.xlarge under the SLO);
- ``sparse(days)``: a seeded diurnal rate peaking at ``SPARSE_PEAK_RPS``, idle at night and
  in on/off gaps by day;
- ``mmpp_surges(days)``: a 3-state MMPP around the Twitter mean with a +75% surge at 6 h and
  a +100% surge at 14 h of each day, 20 minutes each;
- ``twitter_minilm_x20()``: day 1 of the week x20 with MiniLM, SLO 98% under 200 ms (the
  design notes' scale).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mark.core.slo import Slo
from mark.core.workload.arrivals import mmpp_trace
from mark.core.workload.scenarios import low_rate as scale_to_peak
from mark.core.workload.scenarios import sparse_diurnal
from mark.core.workload.traces import load_trace
from mark.sim import SimResult, simulate

# CPU types only: with the shipped GPU estimates one g4dn/p2 would carry a whole trace,
# which says little about provisioning; benches that take --all-types lift this
CPU_TYPES = ("c5.large", "c5.xlarge", "c5.2xlarge", "c5.4xlarge", "m5.large", "m5.xlarge",
             "m5.2xlarge")
TWITTER = "twitter-2021-08-week1"
INCEPTION, INCEPTION_SLO = "inception-v3", Slo(500, 98)
LOW_PEAK_RPS = 3.5
SPARSE_PEAK_RPS = 8.0
SPARSE_SEED = 11
MMPP_SEED = 7


@dataclass(frozen=True)
class Scenario:
    name: str
    counts: np.ndarray
    profile: str = INCEPTION
    slo: Slo = INCEPTION_SLO
    scale: float = 1.0
    types: tuple[str, ...] | None = CPU_TYPES

    @property
    def requests(self) -> int:
        return int(self.counts.sum() * self.scale)

    def simulate(self, policy: str, *, spot: bool = False, seed: int = 1,
                 **kw: Any) -> SimResult:
        """``policy`` over this scenario in the simulator (``kw`` as for ``simulate``)."""
        return simulate(self.counts, policy, profile=self.profile, slo=self.slo,
                        scale=self.scale, spot=spot, seed=seed, types=self.types, **kw)

    def with_types(self, types: tuple[str, ...] | None) -> Scenario:
        return Scenario(self.name, self.counts, self.profile, self.slo, self.scale, types)


def twitter(days: float) -> Scenario:
    tw = load_trace(TWITTER).slice(0, int(days * 86_400))
    return Scenario(f"twitter x1, {days:g} d", tw.counts)


def low_rate(days: float, peak_rps: float = LOW_PEAK_RPS) -> Scenario:
    tw = load_trace(TWITTER).slice(0, int(days * 86_400))
    return Scenario(f"twitter low-rate (peak {peak_rps:g}/s), {days:g} d",
                    scale_to_peak(tw, peak_rps).counts)


def sparse(days: float, peak_rps: float = SPARSE_PEAK_RPS, seed: int = SPARSE_SEED) -> Scenario:
    return Scenario(f"sparse on/off diurnal (peak {peak_rps:g}/s, seed {seed}), {days:g} d",
                    sparse_diurnal(days, peak_rps, seed=seed).counts)


def mmpp_surges(days: float, seed: int = MMPP_SEED) -> Scenario:
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
    return Scenario(f"mmpp+surges 75%/100%, {days:g} d", counts)


def twitter_minilm_x20() -> Scenario:
    tw = load_trace(TWITTER).slice(0, 86_400)
    return Scenario("twitter day 1 x20, minilm", tw.counts, "minilm", Slo(200, 98), 20.0)


def row(sc: Scenario, policy: str, market: str, r: SimResult,
        oracle_usd: float | None = None, **extra: Any) -> dict[str, Any]:
    """The one row schema (see the module docstring)."""
    doc = r.to_json()
    doc.pop("policy")
    return {"scenario": sc.name, "policy": policy, "market": market, **doc,
            "ratio_to_oracle": None if oracle_usd is None else r.cost_usd["total"] / oracle_usd,
            **extra}


def print_rows(rows: list[dict[str, Any]]) -> None:
    """The shared table: scenario, market, policy, $/M, x oracle, SLO attainment, spill."""
    print(f"{'scenario':50s} {'market':9s} {'policy':24s} {'$/M':>9s} {'x oracle':>8s} "
          f"{'SLO att':>8s} {'spill':>7s}")
    for r in rows:
        ratio = r["ratio_to_oracle"]
        print(f"{r['scenario'][:50]:50s} {r['market']:9s} {r['policy'][:24]:24s} "
              f"{r['cost_per_million_usd']:9.3f} {'-' if ratio is None else f'{ratio:.2f}':>8s} "
              f"{r['slo_attainment']:8.3%} {r['spill_share']:7.2%}")
