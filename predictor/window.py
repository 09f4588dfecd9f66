"""Window forecasts: the peak request rate ahead as a statistic of the last minutes of counts.

Each is a :class:`predictor.base.RateForecast` by itself: a frozen dataclass called with the
per-second arrival counts so far (oldest first), the number of steps ``horizon`` and the
step ``step_s`` (seconds), returning the forecast peak rate (requests/s) per step. They keep
no state, so re-parameterising one is ``dataclasses.replace(f, q=...)``. They are registered
in the one forecaster registry (marked ``rate_forecast = True``, so
:func:`predictor.rate.make_rate_forecast` builds them as they are; they are not step-wise
:class:`predictor.base.Forecaster` objects, as they need the per-second counts).

Registered names: ``recent-peak`` (MArk's rule), ``trend-peak``, ``recent-quantile`` and
``auto-quantile`` (the greedy planner's default; see :class:`AutoQuantile`). Bad parameters
raise ``ValueError`` at construction (``ConfigError`` through the registry).

The Twitter week's quirks: its nightly ~29-minute run of zeros makes "recent-peak" drop to
zero (the fleet then scales in after the hold and FaaS serves the few requests), and its
4-5x jumps within a minute cannot be foreseen from the past; the planner covers the boot
time of new instances by spill, and a forecast grows the fleet as soon as the new level
is observed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from predictor.base import register_forecaster


def smoothed(counts: np.ndarray, window_s: int, smooth_s: int) -> np.ndarray:
    """The ``smooth_s``-second moving mean of the last ``window_s`` seconds (the raw
    counts when the window is shorter than ``smooth_s``; empty before any)."""
    w = counts[-window_s:].astype(np.float64)
    if smooth_s <= 1 or w.size < smooth_s:
        return w
    c = np.cumsum(np.concatenate(([0.0], w)))
    return (c[smooth_s:] - c[:-smooth_s]) / smooth_s


def smoothed_peak(counts: np.ndarray, window_s: int, smooth_s: int) -> float:
    """Max over the last ``window_s`` seconds of the ``smooth_s``-second moving mean."""
    w = smoothed(counts, window_s, smooth_s)
    return float(w.max()) if w.size else 0.0


def _check_seconds(owner: object, **values: object) -> None:
    for key, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"{type(owner).__name__}: {key} must be a whole number of "
                             f"seconds >= 1, got {v!r}")


def _check_margin(owner: object, margin: float) -> None:
    if not margin > 0:
        raise ValueError(f"{type(owner).__name__}: margin must be > 0, got {margin!r}")


@register_forecaster("recent-peak")
@dataclass(frozen=True)
class RecentPeak:
    """Flat forecast: ``margin`` x the peak of the smoothed rate over the last ``window_s``.

    MArk's minute-level model used the max of the last 10 minutes' peaks x 1.1.
    """

    rate_forecast: ClassVar[bool] = True
    window_s: int = 600
    smooth_s: int = 1
    margin: float = 1.1

    def __post_init__(self) -> None:
        _check_seconds(self, window_s=self.window_s, smooth_s=self.smooth_s)
        _check_margin(self, self.margin)

    def __call__(self, counts: np.ndarray, horizon: int, step_s: float) -> np.ndarray:
        return np.full(horizon, self.margin * smoothed_peak(counts, self.window_s, self.smooth_s))


@register_forecaster("trend-peak")
@dataclass(frozen=True)
class TrendPeak:
    """Recent peak plus a damped linear trend of the last minutes' smoothed peaks.

    Reacts to a level that keeps rising (a ramp) faster than a flat peak; never forecasts
    below the short-window peak, so a burst in progress is covered.
    """

    rate_forecast: ClassVar[bool] = True
    window_s: int = 300
    smooth_s: int = 10
    margin: float = 1.05
    trend_s: int = 180

    def __post_init__(self) -> None:
        _check_seconds(self, window_s=self.window_s, smooth_s=self.smooth_s,
                       trend_s=self.trend_s)
        _check_margin(self, self.margin)

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
        return np.asarray(self.margin * (base + 0.5 * slope * steps), dtype=np.float64)


@register_forecaster("recent-quantile")
@dataclass(frozen=True)
class RecentQuantile:
    """Flat forecast: the ``q``-quantile of the smoothed rate over the last ``window_s``.

    The newsvendor rule for deliberate spill: one more request/s of capacity costs
    ``c_iaas`` per second whether used or not and saves ``c_faas`` in every second the
    rate exceeds it, so capacity pays while P(rate > X) > c_iaas / c_faas. With ``q`` =
    1 - c_iaas / c_faas the fleet covers the rate up to that quantile and spill takes the
    rest (see :class:`AutoQuantile`).
    """

    rate_forecast: ClassVar[bool] = True
    window_s: int = 300
    smooth_s: int = 5
    q: float = 0.9
    margin: float = 1.0

    def __post_init__(self) -> None:
        _check_seconds(self, window_s=self.window_s, smooth_s=self.smooth_s)
        _check_margin(self, self.margin)
        if not 0.0 <= self.q <= 1.0:
            raise ValueError(f"{type(self).__name__}: q must be in [0, 1], got {self.q!r}")

    def __call__(self, counts: np.ndarray, horizon: int, step_s: float) -> np.ndarray:
        w = smoothed(counts, self.window_s, self.smooth_s)
        if w.size == 0:
            return np.zeros(horizon)
        return np.full(horizon, self.margin * float(np.quantile(w, self.q)))


@register_forecaster("auto-quantile")
@dataclass(frozen=True)
class AutoQuantile(RecentQuantile):
    """:class:`RecentQuantile` over the last two minutes: the greedy planner's default.

    Built by name it forecasts at a fixed ``q`` (0.9 unless given). The level that makes it
    "auto" is provisioner policy, not forecasting: :class:`provisioner.greedy.MArkGreedy`
    re-derives ``q`` at each decision from instance vs FaaS cost per request (the newsvendor
    level above) and forecasts with ``dataclasses.replace(f, q=level)``.
    """

    window_s: int = 120
