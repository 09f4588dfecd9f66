"""Evaluation traces beyond the shared Twitter week (used by the hybrid-planner benchmarks).

- :func:`low_rate` scales a trace so its peak fits about one instance (a quiet model).
- :func:`sparse_diurnal` generates a seeded trace with idle hours: a diurnal rate that is
  switched on and off by a two-state Markov process (an on/off MMPP), off for hours at night
  and in long gaps by day.

Both return per-second :class:`~mark.core.workload.traces.Trace` objects.
"""

from __future__ import annotations

import numpy as np

from mark.core.errors import ConfigError
from mark.core.workload.arrivals import rates_to_trace
from mark.core.workload.traces import Trace

DAY_S = 86_400


def low_rate(trace: Trace, peak_rps: float, window_s: int = 60) -> Trace:
    """``trace`` scaled so its largest ``window_s``-second mean rate equals ``peak_rps``.

    The peak is taken over windows (not single seconds) so one noisy second does not set
    the scale; the result's per-second peaks may exceed ``peak_rps`` a little.
    """
    if not peak_rps > 0:
        raise ConfigError(f"peak_rps must be > 0, got {peak_rps}")
    per_s = trace.resample(1, "sum") if trace.step_s != 1 else trace
    counts = per_s.counts.astype(np.float64)
    n = len(counts) // window_s * window_s
    if n == 0:
        raise ConfigError(f"trace {trace.name!r} is shorter than one {window_s} s window")
    peak = counts[:n].reshape(-1, window_s).mean(axis=1).max()
    if peak <= 0:
        raise ConfigError(f"trace {trace.name!r} has no requests to scale")
    scaled = per_s.scale(peak_rps / peak)
    return Trace(scaled.counts, 1, name=f"{trace.name} low-rate (peak {peak_rps:g}/s)")


def sparse_diurnal(
    days: float = 2.0,
    peak_rps: float = 8.0,
    night_hours: tuple[float, float] = (0.0, 7.0),
    mean_on_s: float = 1_800.0,
    mean_off_s: float = 3_600.0,
    seed: int = 0,
) -> Trace:
    """A diurnal Poisson rate, zero at night and gated by an on/off Markov process by day.

    The day-time rate follows ``peak_rps * (0.55 + 0.45 * sin(...))`` peaking mid-afternoon;
    the on/off gate has exponential dwell times with means ``mean_on_s`` and ``mean_off_s``
    (so by day the model is idle about ``mean_off_s / (mean_on_s + mean_off_s)`` of the
    time), and the night from ``night_hours[0]`` to ``night_hours[1]`` is always idle.
    """
    if days <= 0 or peak_rps <= 0 or mean_on_s <= 0 or mean_off_s <= 0:
        raise ConfigError("days, peak_rps, mean_on_s and mean_off_s must all be > 0")
    rng = np.random.default_rng(seed)
    n = int(days * DAY_S)
    t = np.arange(n, dtype=np.float64)
    hour = (t % DAY_S) / 3600.0
    rate = peak_rps * (0.55 + 0.45 * np.sin(2 * np.pi * (hour - 9.0) / 24.0))
    gate = np.zeros(n, dtype=bool)
    pos, on = 0, bool(rng.random() < mean_on_s / (mean_on_s + mean_off_s))
    while pos < n:
        dwell = max(1, int(rng.exponential(mean_on_s if on else mean_off_s)))
        gate[pos : pos + dwell] = on
        pos += dwell
        on = not on
    lo, hi = night_hours
    night = (hour >= lo) & (hour < hi)
    rate = np.where(gate & ~night, rate, 0.0)
    trace = rates_to_trace(rate, seed=rng)
    return Trace(trace.counts, 1, name=f"sparse diurnal on/off ({days:g} d, seed {seed})")
