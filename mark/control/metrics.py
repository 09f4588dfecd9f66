"""The control plane's gauges: fleet, cost, rates and SLO attainment over a sliding window.

Set by the process that runs the control loop, into the same metrics directory as the front
end's series (:mod:`frontend.metrics`), so ``/metrics`` answered by any worker has them.
Gauges use prometheus-client's ``mostrecent`` multiprocess mode (one writer; no ``pid``
label). Every ``period_s``:

- ``mark_instances{model,instance_type,market,state}``: instances of the fleet (a label set
  seen before and gone now is set to 0);
- ``mark_cost_usd_total{market}`` (on_demand, spot, faas, total): the ledger's USD since start;
  ``mark_cost_usd_per_hour{market}``: the running instances' prices, FaaS at its spend over
  the window;
- ``mark_arrival_rate_rps{model}`` (requests/s over the last 10 whole seconds, every front-end
  process's counts), ``mark_forecast_rate_rps{model}`` (the last decision's forecast),
  ``mark_capacity_rps{model}`` (what the ready instances sustain);
- ``mark_slo_latency_seconds{model}``, ``mark_slo_percentile{model}``: the SLO in force;
  ``mark_slo_attainment_ratio{model}``: met / requests over the window, from the merged
  ``mark_slo_*_total`` counters; ``mark_latency_window_seconds{model,quantile}`` (0.5, 0.98,
  0.99): interpolated within the buckets of the merged ``mark_request_duration_seconds``
  histogram's increase over the window (as PromQL's ``histogram_quantile``). NaN while the
  window holds no request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import Gauge
from prometheus_client.samples import Sample

from frontend import metrics as fm
from mark.control.loop import ControlLoop
from mark.core.instances import InstanceState

log = logging.getLogger(__name__)

QUANTILES = (0.5, 0.98, 0.99)
ARRIVAL_WINDOW_S = 10
_BOUNDS = np.array([*fm.BUCKETS_S, math.inf])


def _gauge(name: str, doc: str, labels: tuple[str, ...]) -> Gauge:
    return fm.family(name, lambda reg: Gauge(name, doc, labels, registry=reg,
                                             multiprocess_mode="mostrecent"))


@dataclass
class _Totals:
    """The merged counters of one model at one time."""

    buckets: np.ndarray = field(default_factory=lambda: np.zeros(_BOUNDS.size))
    slo_requests: float = 0.0
    slo_met: float = 0.0


def quantile(bounds: np.ndarray, counts: np.ndarray, q: float) -> float:
    """The ``q`` quantile of observations counted per bucket (``counts[i]``: those in
    ``(bounds[i-1], bounds[i]]``), linear within a bucket; the highest finite bound when it
    falls in the +Inf one; NaN without observations."""
    total = float(counts.sum())
    if total <= 0:
        return math.nan
    rank = q * total
    cum = np.cumsum(counts)
    i = int(np.searchsorted(cum, rank, side="left"))
    i = min(i, len(bounds) - 1)
    if math.isinf(bounds[i]):
        return float(bounds[i - 1]) if i > 0 else math.nan
    lo = 0.0 if i == 0 else float(bounds[i - 1])
    below = 0.0 if i == 0 else float(cum[i - 1])
    inside = float(counts[i])
    frac = (rank - below) / inside if inside > 0 else 1.0
    return lo + (float(bounds[i]) - lo) * frac


def merged_totals(samples: Mapping[str, Sequence[Sample]]) -> dict[str, _Totals]:
    """Per model: the request-duration histogram's per-bucket counts (summed over backends)
    and the SLO counters, from :func:`frontend.metrics.aggregate`'s samples."""
    out: dict[str, _Totals] = {}
    index = {b: i for i, b in enumerate(_BOUNDS.tolist())}
    for s in samples.get("mark_request_duration_seconds", ()):
        if s.name.endswith("_bucket"):
            t = out.setdefault(s.labels["model"], _Totals())
            i = index.get(float(s.labels["le"]))
            if i is not None:
                t.buckets[i] += s.value  # cumulative, made per bucket below
    for t in out.values():
        t.buckets = np.diff(t.buckets, prepend=0.0)
    for s in samples.get("mark_slo_requests", ()):
        if s.name.endswith("_total"):
            out.setdefault(s.labels["model"], _Totals()).slo_requests += s.value
    for s in samples.get("mark_slo_met", ()):
        if s.name.endswith("_total"):
            out.setdefault(s.labels["model"], _Totals()).slo_met += s.value
    return out


class ControlMetrics:
    """The gauges of one control loop (see the module docstring); ``window_s``: the sliding
    window of the attainment, the latency quantiles and the FaaS spend rate."""

    def __init__(self, loop: ControlLoop, window_s: float = 60.0) -> None:
        self.loop = loop
        self.window_s = window_s
        self._history: deque[tuple[float, dict[str, _Totals], float]] = deque()
        self._instance_keys: set[tuple[str, str, str, str]] = set()
        self._models: set[str] = set()
        self.instances = _gauge("mark_instances", "instances by model, type, market and state",
                                ("model", "instance_type", "market", "state"))
        self.cost_total = _gauge("mark_cost_usd_total", "USD spent since start, by market "
                                 "(on_demand|spot|faas|total)", ("market",))
        self.cost_rate = _gauge("mark_cost_usd_per_hour", "USD per hour now: running "
                                "instances' prices; FaaS at its spend over the window",
                                ("market",))
        self.arrival = _gauge("mark_arrival_rate_rps", f"arrivals per second over the last "
                              f"{ARRIVAL_WINDOW_S} s", ("model",))
        self.forecast = _gauge("mark_forecast_rate_rps", "the last control step's forecast "
                               "(requests/s)", ("model",))
        self.capacity = _gauge("mark_capacity_rps", "requests/s the ready instances sustain",
                               ("model",))
        self.attainment = _gauge("mark_slo_attainment_ratio", "share of requests within the "
                                 "SLO bound over the sliding window", ("model",))
        self.slo_latency = _gauge("mark_slo_latency_seconds", "the SLO's latency bound (s)",
                                  ("model",))
        self.slo_percentile = _gauge("mark_slo_percentile", "the SLO's percentile (%)",
                                     ("model",))
        self.latency = _gauge("mark_latency_window_seconds", "request latency quantiles over "
                              "the sliding window (s)", ("model", "quantile"))

    # -- one update ------------------------------------------------------------------------
    def update(self, samples: Mapping[str, Sequence[Sample]] | None = None) -> None:
        """Set every gauge now; ``samples``: the merged counters (read here when None; they
        are files, so :meth:`run` reads them in a thread)."""
        if samples is None:
            fm.flush_all()
            samples = fm.aggregate(_MERGED)
        loop = self.loop
        now = loop.clock.now()
        models = set(loop.models) | set(loop.fleet.models)
        self._models |= models
        self._set_instances()
        totals = loop.ledger.totals(now)
        for market, usd in totals.items():
            self.cost_total.labels(market).set(usd)
        merged = merged_totals(samples)
        base_t, base, base_faas = self._window(now, merged, totals["faas"])
        hourly = self._hourly()
        span = now - base_t
        hourly["faas"] = (totals["faas"] - base_faas) / span * 3600.0 if span > 0 else 0.0
        hourly["total"] = sum(hourly.values())
        for market, usd in hourly.items():
            self.cost_rate.labels(market).set(usd)
        second = math.floor(now)
        for m in models:
            counts = loop.counts.take(m, second - ARRIVAL_WINDOW_S, second)
            self.arrival.labels(m).set(float(counts.sum()) / ARRIVAL_WINDOW_S)
            self.capacity.labels(m).set(sum(loop.capacity_by_market(m).values()))
            fc = self._forecast(m)
            if fc is not None:
                self.forecast.labels(m).set(fc)
            mc = loop.models.get(m)
            if mc is not None:
                self.slo_latency.labels(m).set(mc.ctx.slo.latency_s)
                self.slo_percentile.labels(m).set(mc.ctx.slo.percentile)
            cur, old = merged.get(m, _Totals()), base.get(m, _Totals())
            n = cur.slo_requests - old.slo_requests
            self.attainment.labels(m).set((cur.slo_met - old.slo_met) / n if n > 0 else math.nan)
            delta = np.maximum(cur.buckets - old.buckets, 0.0)
            for q in QUANTILES:
                self.latency.labels(m, str(q)).set(quantile(_BOUNDS, delta, q))

    def _window(self, now: float, merged: dict[str, _Totals],
                faas_usd: float) -> tuple[float, dict[str, _Totals], float]:
        """The oldest record within the window (or just before it) as the baseline; keeps
        this one."""
        h = self._history
        h.append((now, merged, faas_usd))
        while len(h) > 1 and h[1][0] <= now - self.window_s:
            h.popleft()
        return h[0]

    def _set_instances(self) -> None:
        counts: dict[tuple[str, str, str, str], int] = {}
        for inst in self.loop.fleet.instances.values():
            if inst.state == InstanceState.TERMINATED:
                continue
            for m in inst.models:
                key = (m, inst.instance_type, inst.market.value, inst.state.value)
                counts[key] = counts.get(key, 0) + 1
        for key in self._instance_keys - counts.keys():
            self.instances.labels(*key).set(0)
        for key, n in counts.items():
            self.instances.labels(*key).set(n)
        self._instance_keys |= counts.keys()

    def _hourly(self) -> dict[str, float]:
        out = {"on_demand": 0.0, "spot": 0.0}
        ledger = self.loop.ledger
        for inst in self.loop.fleet.instances.values():
            if inst.state != InstanceState.TERMINATED:
                out[inst.market.value] = out.get(inst.market.value, 0.0) + ledger.price_usd_per_h(
                    inst.instance_type, inst.market)
        return out

    def _forecast(self, model: str) -> float | None:
        for d in reversed(self.loop.decisions):
            if d.get("model") == model and d.get("forecast_rps") is not None:
                return float(d["forecast_rps"])
        return None

    # -- running ---------------------------------------------------------------------------
    async def run(self, period_s: float = 1.0) -> None:
        """Update every ``period_s`` until cancelled; then the fleet gauges go to 0 (so a
        stopped loop leaves no instances behind in a process that starts another)."""
        try:
            while True:
                try:
                    await self.loop.counts.refresh()
                    fm.flush_all()
                    samples = await asyncio.to_thread(fm.aggregate, _MERGED)
                    self.update(samples)
                except Exception:  # a bad read must not end the gauges
                    log.exception("control metrics update failed")
                await asyncio.sleep(period_s)
        finally:
            with contextlib.suppress(Exception):
                for key in self._instance_keys:
                    self.instances.labels(*key).set(0)
                for m in self._models:
                    self.capacity.labels(m).set(0)
                    self.arrival.labels(m).set(0)


_MERGED = ("mark_request_duration_seconds", "mark_slo_requests", "mark_slo_met")
