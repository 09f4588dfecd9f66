"""Rolling-origin backtests of forecasters.

At each origin the forecaster has seen every step up to and including the origin and
forecasts the next ``horizon`` steps; then it observes the steps up to the next origin.
Metrics, per horizon k (steps ahead):

- ``mape[k]``: mean absolute percentage error in percent, over steps whose actual is > 0
  (zero steps have no percentage error) and not missing;
- ``rmse[k]``: root mean squared error in the series' unit, over the same steps;
- ``under_forecast_rate``: the share of all scored (origin, k) pairs whose actual exceeds
  the forecast's upper quantile (about ``1 - quantile`` when the quantile is calibrated);
- ``ms_per_forecast``: mean wall-clock milliseconds of one provisioning step, i.e.
  observing the new steps and forecasting (the initial warm-up feed is not timed).

Steps of a per-second Trace that overlap a collection gap (an improbable run of zero
seconds, such as the Twitter week's daily 29-minute hole or its 10-40 s hiccups, see
:func:`mark.core.workload.traces.collection_gaps`) are missing by default: the forecaster is fed
NaN and they are not scored, because they measure the collector, not the demand.

A :class:`~mark.core.workload.traces.Trace` is scored in requests per second: mean rate per
step, or with ``target="peak"`` the per-second peak within each step (this needs a
per-second trace); a :class:`~predictor.peak.PeakRateForecaster` is then fed both the mean
and the peak of each step.

:func:`backtest_rate` scores a :class:`~predictor.base.RateForecast` (a window forecast,
or any forecaster as the provisioner runs it) the same way: at each origin it is called
with the per-second counts up to the end of the origin's step and scored against the
per-second peak within each step ahead; it gives one value per step, so ``mean`` and
``upper`` are that value.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mark.core.workload.traces import Trace, collection_gaps
from predictor.base import Forecaster, RateForecast, make_forecaster
from predictor.peak import PeakRateForecaster


@dataclass
class BacktestResult:
    """Metrics of one backtest; ``to_json()`` gives the ``mark forecast --json`` document.

    ``mape`` (percent) and ``rmse`` (series unit) are keyed by horizon in steps (1-based);
    ``origins[i]`` is the index of the last step seen at origin i, and ``actual``,
    ``mean`` and ``upper`` are (origins x horizon) arrays; ``elapsed_ms`` is each origin's
    observe + forecast time, ``ms_max`` the largest (often the first, cold fit).
    """

    forecaster: str
    horizon: int
    mape: dict[int, float]
    rmse: dict[int, float]
    under_forecast_rate: float
    ms_per_forecast: float
    ms_max: float = 0.0
    n_origins: int = 0
    origins: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64), repr=False)
    actual: np.ndarray = field(default_factory=lambda: np.empty((0, 0)), repr=False)
    mean: np.ndarray = field(default_factory=lambda: np.empty((0, 0)), repr=False)
    upper: np.ndarray = field(default_factory=lambda: np.empty((0, 0)), repr=False)
    elapsed_ms: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)

    def to_json(self) -> dict[str, Any]:
        """``{"forecaster", "mape": {"1": ..}, "rmse": {"1": ..}, "under_forecast_rate",
        "ms_per_forecast"}``; a metric with no scored step is ``null``."""
        return {
            "forecaster": self.forecaster,
            "mape": {str(k): _finite(v) for k, v in self.mape.items()},
            "rmse": {str(k): _finite(v) for k, v in self.rmse.items()},
            "under_forecast_rate": _finite(self.under_forecast_rate),
            "ms_per_forecast": _finite(self.ms_per_forecast),
        }


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _series(
    data: Trace | np.ndarray | Sequence[float],
    step_s: int | None,
    target: str,
    peak_model: bool,
    mask_gaps: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(target series, mean-rate inputs for a peak model or None); gap steps are NaN."""
    if not isinstance(data, Trace):
        if target != "mean" or peak_model:
            raise ValueError("peak targets need a per-second Trace, not a bare series")
        return np.asarray(data, dtype=np.float64), None
    if target not in ("mean", "peak"):
        raise ValueError(f"target must be 'mean' or 'peak', got {target!r}")
    if peak_model and target != "peak":
        raise ValueError("a PeakRateForecaster forecasts peaks; use target='peak'")
    step = step_s or data.step_s
    means = data.resample(step, "sum").rate_per_s()
    peaks = data.resample(step, "peak").rate_per_s() if target == "peak" else means
    if mask_gaps and data.kind == "count" and data.step_s == 1:
        k = step // data.step_s
        n = means.size
        gap = collection_gaps(data)[: n * k].reshape(n, k).any(axis=1)
        means = np.where(gap, np.nan, means)
        peaks = np.where(gap, np.nan, peaks)
    return peaks, (means if peak_model else None)


def backtest(
    data: Trace | np.ndarray | Sequence[float],
    forecaster: str | Forecaster,
    horizon: int,
    *,
    step_s: int | None = None,
    target: Literal["mean", "peak"] = "mean",
    warmup: int | None = None,
    every: int = 1,
    max_origins: int | None = None,
    mask_gaps: bool = True,
    clock: Callable[[], float] = time.perf_counter,
    **forecaster_kw: Any,
) -> BacktestResult:
    """Rolling-origin backtest (see the module docstring for the metrics).

    Args:
        data: a Trace (scored in requests/s at ``step_s``) or a bare per-step series.
        forecaster: a registry name (built with ``forecaster_kw``) or a fresh forecaster.
        horizon: steps ahead to forecast at each origin.
        step_s: resample a Trace to this step first (default: the trace's own step).
        target: ``"mean"`` rate per step or per-second ``"peak"`` within each step.
        warmup: steps observed before the first origin (default: two seasons when the
            forecaster has a ``season``, else 60).
        every: steps between origins.
        max_origins: cap on the number of origins (the stride grows to fit).
        mask_gaps: for a per-second Trace, treat steps overlapping a collection gap
            (:func:`mark.core.workload.traces.collection_gaps`) as missing: fed as NaN, not scored.
        clock: seconds, for the timing (injected in tests).
    """
    if horizon < 1 or every < 1:
        raise ValueError(f"horizon and every must be >= 1, got {horizon}, {every}")
    model = make_forecaster(forecaster, **forecaster_kw) if isinstance(forecaster, str) else forecaster
    peak_model = isinstance(model, PeakRateForecaster)
    series, means = _series(data, step_s, target, peak_model, mask_gaps)
    season = getattr(model, "season", None)
    if warmup is None:
        warmup = max(60, 2 * season) if isinstance(season, int) else 60
    origins = _origins(series.size, horizon, warmup, every, max_origins)

    def feed(lo: int, hi: int) -> None:
        if means is not None:
            assert isinstance(model, PeakRateForecaster)
            model.observe_steps(means[lo:hi], series[lo:hi])
        else:
            model.observe(series[lo:hi])

    feed(0, warmup)
    mean = np.empty((origins.size, horizon))
    upper = np.empty((origins.size, horizon))
    elapsed = np.empty(origins.size)
    seen = warmup
    for i, origin in enumerate(origins):
        t0 = clock()
        if origin + 1 > seen:
            feed(seen, origin + 1)
            seen = origin + 1
        fc = model.forecast(horizon)
        elapsed[i] = clock() - t0
        mean[i], upper[i] = fc.mean, fc.upper
    actual = series[origins[:, None] + np.arange(1, horizon + 1)]
    return _score(model.name, horizon, origins, actual, mean, upper, elapsed)


def backtest_rate(
    trace: Trace,
    forecast: RateForecast,
    horizon: int,
    *,
    name: str,
    step_s: int = 60,
    warmup: int = 60,
    every: int = 1,
    max_origins: int | None = None,
    mask_gaps: bool = True,
    clock: Callable[[], float] = time.perf_counter,
) -> BacktestResult:
    """Rolling-origin backtest of a rate forecast on a per-second count trace, scored
    against the per-second peak within each step of ``step_s`` (see the module docstring;
    the arguments are :func:`backtest`'s, ``name`` labels the result)."""
    if horizon < 1 or every < 1 or step_s < 1:
        raise ValueError(f"horizon, every and step_s must be >= 1, got {horizon}, {every}, "
                         f"{step_s}")
    if trace.step_s != 1 or trace.kind != "count":
        raise ValueError("a rate forecast needs a per-second count trace")
    series, _ = _series(trace, step_s, "peak", False, mask_gaps)
    origins = _origins(series.size, horizon, warmup, every, max_origins)
    counts = np.asarray(trace.counts)
    out = np.empty((origins.size, horizon))
    elapsed = np.empty(origins.size)
    for i, origin in enumerate(origins):
        t0 = clock()
        out[i] = forecast(counts[: (origin + 1) * step_s], horizon, float(step_s))
        elapsed[i] = clock() - t0
    actual = series[origins[:, None] + np.arange(1, horizon + 1)]
    return _score(name, horizon, origins, actual, out, out, elapsed)


def _origins(n: int, horizon: int, warmup: int, every: int, max_origins: int | None
             ) -> np.ndarray:
    """Indices of the last step seen at each origin."""
    n_possible = n - horizon - warmup + 1
    if warmup < 1 or n_possible < 1:
        raise ValueError(
            f"series of {n} steps is too short for warmup {warmup} and horizon {horizon}"
        )
    if max_origins is not None and math.ceil(n_possible / every) > max_origins:
        every = math.ceil(n_possible / max_origins)
    return np.arange(warmup - 1, n - horizon, every)


def _score(
    name: str,
    horizon: int,
    origins: np.ndarray,
    actual: np.ndarray,
    mean: np.ndarray,
    upper: np.ndarray,
    elapsed: np.ndarray,
) -> BacktestResult:
    scored = np.isfinite(actual) & (actual > 0)
    safe = np.where(scored, actual, 1.0)
    ape = np.where(scored, np.abs(actual - mean) / safe, 0.0)
    sq = np.where(scored, (actual - mean) ** 2, 0.0)
    counts = scored.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mape = 100.0 * ape.sum(axis=0) / counts
        rmse = np.sqrt(sq.sum(axis=0) / counts)
    total = int(scored.sum())
    under = float((scored & (actual > upper)).sum() / total) if total else math.nan
    return BacktestResult(
        forecaster=name,
        horizon=horizon,
        mape={k + 1: float(mape[k]) for k in range(horizon)},
        rmse={k + 1: float(rmse[k]) for k in range(horizon)},
        under_forecast_rate=under,
        ms_per_forecast=float(elapsed.mean() * 1000.0),
        ms_max=float(elapsed.max() * 1000.0),
        n_origins=int(origins.size),
        origins=origins,
        actual=actual,
        mean=mean,
        upper=upper,
        elapsed_ms=elapsed * 1000.0,
    )
