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

from mark.core.errors import ConfigError


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
    With ``target="mean"`` the named forecaster forecasts the mean rate per step itself
    (no peak/mean ratio): the plan then covers the step's mean rate up to the forecaster's
    quantile and leaves the within-step peaks to queueing and spill.

    A forecaster that takes a ``season`` and is given none gets a daily one
    (``86400 / step_s`` steps). A wrapper forecaster (one with ``wraps_forecaster``, such as
    ``"adaptive"``) is wrapped around the peak-rate forecaster instead, so it sees the
    peaks it is scored on; its own inner forecaster (``inner_kw["inner"]``, default
    ``"ewma"``) becomes the mean-rate forecaster, and keyword arguments it does not take go
    to that one.

    Still a function of the history: the stateful forecaster is only a cache of the steps
    already fed. A history that is not an extension of the one seen (a new run) rebuilds it.
    """

    def __init__(self, inner: str = "ewma", use: str = "upper", margin: float = 1.0,
                 target: str = "peak", **inner_kw: Any) -> None:
        from predictor.base import available_forecasters

        if use not in ("upper", "mean"):
            raise ConfigError(f"PredictorPeak use must be 'upper' or 'mean', got {use!r}")
        if target not in ("peak", "mean"):
            raise ConfigError(f"PredictorPeak target must be 'peak' or 'mean', got {target!r}")
        self.target = target
        if inner not in available_forecasters():
            raise ConfigError(f"unknown forecaster {inner!r}; accepted: "
                              f"{', '.join(available_peak_forecasts())}")
        self.inner, self.use, self.margin, self.inner_kw = inner, use, margin, inner_kw
        self._build(60)  # validates the keyword arguments now rather than at the first step
        self._fc: Any = None
        self._seen = 0
        self._step = 0
        self._head: float = -1.0

    def _build(self, step: int) -> Any:
        from predictor.base import _factory, forecaster_parameters, make_forecaster
        from predictor.peak import PeakRateForecaster

        kw = dict(self.inner_kw)
        wrapper: dict[str, Any] = {}
        mean_name = self.inner
        if getattr(_factory(self.inner), "wraps_forecaster", False):
            own = set(forecaster_parameters(self.inner)) - {"inner", "inner_kw", "max_gap_steps"}
            wrapper = {k: kw.pop(k) for k in list(kw) if k in own}
            mean_name = kw.pop("inner", "ewma")
            if not isinstance(mean_name, str):
                raise ConfigError(f"{self.inner}: inner must be a forecaster name")
            kw.update(kw.pop("inner_kw", None) or {})
            if "quantile" in wrapper:  # one level for both
                kw.setdefault("quantile", wrapper["quantile"])
        peak_own = ("ratio_window", "initial_ratio", "quantile", "max_gap_steps", "error_window")
        if "season" in forecaster_parameters(mean_name) and "season" not in kw:
            kw["season"] = max(2, round(86_400 / step))
        try:
            if self.target == "mean":
                fc: Any = make_forecaster(mean_name, **kw)
            else:
                fc = PeakRateForecaster(mean_name, **kw)
        except TypeError as exc:
            accepted = sorted(set(forecaster_parameters(mean_name)) | set(peak_own))
            raise ConfigError(f"forecaster {mean_name!r}: {exc}; it accepts: "
                              f"{', '.join(accepted)}") from None
        except ValueError as exc:
            raise ConfigError(f"forecaster {mean_name!r}: {exc}") from None
        if self.inner != mean_name or wrapper:
            wrapper.setdefault("quantile", kw.get("quantile", 0.95))
            fc = make_forecaster(self.inner, inner=fc, **wrapper)
        return fc

    def __call__(self, counts: np.ndarray, horizon: int, step_s: float) -> np.ndarray:
        step = int(step_s)
        n = counts.size // step
        head = float(counts[:step].sum()) if counts.size >= step else -1.0
        if self._fc is None or n < self._seen or step != self._step or head != self._head:
            self._fc = self._build(step)
            self._seen, self._step, self._head = 0, step, head
        if n > self._seen:
            blk = counts[self._seen * step : n * step].reshape(-1, step).astype(np.float64)
            if self.target == "mean":
                self._fc.observe(blk.mean(axis=1))
            else:
                self._fc.observe(np.column_stack((blk.mean(axis=1), blk.max(axis=1))))
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

#: The mark policy's peak forecast unless told otherwise: the one with the lowest cost at the
#: SLO on the shared evaluation traces (``bench/forecaster_cost.py``). The greedy planner
#: turns ``"auto-quantile"`` into ``"recent-quantile"`` with its quantile re-derived from
#: instance vs FaaS prices at each decision.
DEFAULT_FORECAST = "auto-quantile"

#: Peak forecasts of the provisioner itself (functions of the per-second counts).
IN_HOUSE_FORECASTS = ("auto-quantile", "recent-peak", "recent-quantile", "trend-peak")


def available_peak_forecasts() -> list[str]:
    """Every name the mark policy's ``forecast`` takes: the provisioner's own peak forecasts
    and every forecaster registered in :mod:`predictor` (run through :class:`PredictorPeak`
    at the provisioning step). ``"predictor"`` (the adapter by its own name) is accepted too
    but not listed."""
    from predictor.base import available_forecasters

    return [*IN_HOUSE_FORECASTS, *available_forecasters()]


def make_peak_forecast(name: str, **kw: Any) -> PeakForecast:
    """A peak forecast by name (see :func:`available_peak_forecasts`); a name registered in
    :mod:`predictor` is ``PredictorPeak(inner=name, **kw)``. ``"auto-quantile"`` builds the
    two-minute :class:`RecentQuantile` at a fixed ``q`` (0.9 unless given); only the greedy
    planner re-derives it from prices. Unknown names raise ``ConfigError`` listing all."""
    if name in FORECASTS:
        try:
            return FORECASTS[name](**kw)
        except TypeError as exc:
            raise ConfigError(f"peak forecast {name!r}: {exc}") from None
    if name == "auto-quantile":
        kw.setdefault("window_s", 120)
        return make_peak_forecast("recent-quantile", **kw)
    from predictor.base import available_forecasters

    if name in available_forecasters():
        return PredictorPeak(name, **kw)
    raise ConfigError(f"unknown forecaster {name!r}; accepted: "
                      f"{', '.join(available_peak_forecasts())}")
