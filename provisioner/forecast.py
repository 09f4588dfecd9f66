"""Peak-rate forecasts for provisioning: pure functions of the observed per-second counts.

A :class:`PeakForecast` maps the counts observed so far to the predicted peak request rate
(requests/s) for each of the next ``horizon`` steps of ``step_s`` seconds. Registered by
name; :func:`make_peak_forecast` raises ``ConfigError`` for an unknown one.

The Twitter week's quirks: its nightly ~29-minute run of zeros makes "recent-peak" drop to
zero (the fleet then scales in after the hold and FaaS serves the few requests), and its
4-5x jumps within a minute cannot be foreseen from the past; the planner covers the boot
time of new instances by spill, and a forecast grows the fleet as soon as the new level
is observed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from mark.errors import ConfigError


class PeakForecast(Protocol):
    def __call__(self, counts: np.ndarray, horizon: int, step_s: float) -> np.ndarray: ...


def smoothed_peak(counts: np.ndarray, window_s: int, smooth_s: int) -> float:
    """Max over the last ``window_s`` seconds of the ``smooth_s``-second moving mean."""
    w = counts[-window_s:].astype(np.float64)
    if w.size == 0:
        return 0.0
    if smooth_s <= 1 or w.size < smooth_s:
        return float(w.max())
    c = np.cumsum(np.concatenate(([0.0], w)))
    return float(((c[smooth_s:] - c[:-smooth_s]) / smooth_s).max())


@dataclass(frozen=True)
class RecentPeak:
    """Flat forecast: ``margin`` x the peak of the smoothed rate over the last ``window_s``.

    MArk's minute-level model used the max of the last 10 minutes' peaks x 1.1.
    """

    window_s: int = 600
    smooth_s: int = 1
    margin: float = 1.1

    def __call__(self, counts: np.ndarray, horizon: int, step_s: float) -> np.ndarray:
        return np.full(horizon, self.margin * smoothed_peak(counts, self.window_s, self.smooth_s))


@dataclass(frozen=True)
class TrendPeak:
    """Recent peak plus a damped linear trend of the last minutes' smoothed peaks.

    Reacts to a level that keeps rising (a ramp) faster than a flat peak; never forecasts
    below the short-window peak, so a burst in progress is covered.
    """

    window_s: int = 300
    smooth_s: int = 10
    margin: float = 1.05
    trend_s: int = 180

    def __call__(self, counts: np.ndarray, horizon: int, step_s: float) -> np.ndarray:
        base = smoothed_peak(counts, self.window_s, self.smooth_s)
        n = self.trend_s
        if counts.size >= 2 * n:
            recent = counts[-n:].mean()
            before = counts[-2 * n : -n].mean()
            slope = max(recent - before, 0.0) / n  # per second
        else:
            slope = 0.0
        steps = np.arange(1, horizon + 1) * step_s
        return self.margin * (base + 0.5 * slope * steps)


@dataclass(frozen=True)
class RecentQuantile:
    """Flat forecast: the ``q``-quantile of the smoothed rate over the last ``window_s``.

    The newsvendor rule for deliberate spill: one more request/s of capacity costs
    ``c_iaas`` per second whether used or not and saves ``c_faas`` in every second the
    rate exceeds it, so capacity pays while P(rate > X) > c_iaas / c_faas. With ``q`` =
    1 - c_iaas / c_faas the fleet covers the rate up to that quantile and spill takes the
    rest (the greedy planner derives ``q`` from prices when asked for ``"auto-quantile"``).
    """

    window_s: int = 300
    smooth_s: int = 5
    q: float = 0.9
    margin: float = 1.0

    def __call__(self, counts: np.ndarray, horizon: int, step_s: float) -> np.ndarray:
        w = counts[-self.window_s :].astype(np.float64)
        if w.size == 0:
            return np.zeros(horizon)
        if self.smooth_s > 1 and w.size >= self.smooth_s:
            c = np.cumsum(np.concatenate(([0.0], w)))
            w = (c[self.smooth_s :] - c[: -self.smooth_s]) / self.smooth_s
        return np.full(horizon, self.margin * float(np.quantile(w, self.q)))


class PredictorPeak:
    """Adapter for the ``predictor`` package: :class:`predictor.peak.PeakRateForecaster`
    around a named mean-rate forecaster (``inner``: "ewma", "holt-winters", "sarimax", ...),
    fed one (mean, peak) pair per ``step_s`` step; returns its ``upper`` (or ``mean``).

    Still a function of the history: the stateful forecaster is only a cache of the steps
    already fed. A history that is not an extension of the one seen (a new run) rebuilds it.
    """

    def __init__(self, inner: str = "ewma", use: str = "upper", margin: float = 1.0,
                 **inner_kw: Any) -> None:
        if use not in ("upper", "mean"):
            raise ConfigError(f"PredictorPeak use must be 'upper' or 'mean', got {use!r}")
        self.inner, self.use, self.margin, self.inner_kw = inner, use, margin, inner_kw
        self._fc: Any = None
        self._seen = 0
        self._step = 0
        self._head: float = -1.0

    def __call__(self, counts: np.ndarray, horizon: int, step_s: float) -> np.ndarray:
        from predictor.peak import PeakRateForecaster

        step = int(step_s)
        n = counts.size // step
        head = float(counts[:step].sum()) if counts.size >= step else -1.0
        if self._fc is None or n < self._seen or step != self._step or head != self._head:
            self._fc = PeakRateForecaster(self.inner, **self.inner_kw)
            self._seen, self._step, self._head = 0, step, head
        if n > self._seen:
            blk = counts[self._seen * step : n * step].reshape(-1, step).astype(np.float64)
            self._fc.observe_steps(blk.mean(axis=1), blk.max(axis=1))
            self._seen = n
        if self._seen == 0:
            return np.full(horizon, float(counts.max()) if counts.size else 0.0)
        f = self._fc.forecast(horizon)
        return self.margin * np.maximum(np.asarray(getattr(f, self.use), dtype=np.float64), 0.0)


FORECASTS: dict[str, Callable[..., PeakForecast]] = {
    "predictor": PredictorPeak,
    "recent-peak": RecentPeak,
    "recent-quantile": RecentQuantile,
    "trend-peak": TrendPeak,
}


def make_peak_forecast(name: str, **kw: Any) -> PeakForecast:
    if name not in FORECASTS:
        raise ConfigError(f"unknown peak forecast {name!r}; registered: {sorted(FORECASTS)}")
    return FORECASTS[name](**kw)
