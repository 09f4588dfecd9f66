"""Peak-rate forecasts for MArk's provisioner from a mean-rate forecaster.

MArk provisions for the *maximum* request rate within each step. Per-second peaks are
noisy (Poisson noise alone puts a one-minute peak well above the mean at low rates), so
rather than forecasting the peak series directly, :class:`PeakRateForecaster` forecasts
the smoother mean rate with any inner forecaster and multiplies by the ratio of per-second
peak to mean rate learned from recent steps:

    mean_peak[k] = inner.mean[k] * ratio,   ratio = mean of peak/mean over the last
                                            ``ratio_window`` valid steps

The upper quantile is calibrated on the wrapper's own errors against observed peaks (as in
:class:`predictor.core.BaseForecaster`); until enough exist it is
``inner.upper[k] * ratio``. Feed it ``observe_step(mean_rate, peak_rate)`` once per step
(both in requests per second). The ratio falls as load grows (relative Poisson noise
shrinks), so it adapts to scaled traces by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from predictor.base import Forecast, Forecaster, make_forecaster
from predictor.core import History, ResidualQuantiles


class PeakRateForecaster:
    """Wraps a mean-rate forecaster into a per-step peak-rate forecaster.

    Args:
        inner: a forecaster of mean rates, or a registry name (built with ``inner_kw``).
        ratio_window: steps of peak/mean ratios averaged.
        initial_ratio: ratio used before any step with both values was observed.
        quantile: level of ``Forecast.upper`` (also passed to a named inner forecaster).
        max_gap_steps: zero peak runs up to this long are gaps (see predictor.core).
        error_window: past errors per horizon used for the upper quantile.
    """

    def __init__(
        self,
        inner: Forecaster | str = "ewma",
        *,
        ratio_window: int = 60,
        initial_ratio: float = 1.0,
        quantile: float = 0.95,
        max_gap_steps: int = 60,
        error_window: int = 1440,
        **inner_kw: Any,
    ) -> None:
        if ratio_window < 1 or initial_ratio < 1:
            raise ValueError("ratio_window must be >= 1 and initial_ratio >= 1")
        if isinstance(inner, str):
            inner = make_forecaster(inner, quantile=quantile, max_gap_steps=max_gap_steps, **inner_kw)
        self.inner = inner
        self.name = f"peak({inner.name})"
        self.quantile = quantile
        self.season = getattr(inner, "season", None)
        self.ratio_window = ratio_window
        self._ratios = np.full(ratio_window, np.nan)
        self._n_ratios = 0
        self._initial_ratio = initial_ratio
        self._peaks = History(max_gap_steps=max_gap_steps, capacity=1)
        self._residuals = ResidualQuantiles(quantile, window=error_window)

    @property
    def ratio(self) -> float:
        """Current peak/mean ratio estimate (>= 1)."""
        if self._n_ratios == 0:
            return self._initial_ratio
        return max(1.0, float(np.nanmean(self._ratios)))

    def observe_step(self, mean_rate: float, peak_rate: float) -> None:
        """One step: its mean rate and the largest per-second rate within it (requests/s)."""
        self.observe_steps([mean_rate], [peak_rate])

    def observe_steps(
        self, mean_rates: Sequence[float] | np.ndarray, peak_rates: Sequence[float] | np.ndarray
    ) -> None:
        """Several steps at once, oldest first; NaN marks a missing value."""
        means = np.atleast_1d(np.asarray(mean_rates, dtype=np.float64))
        peaks = np.atleast_1d(np.asarray(peak_rates, dtype=np.float64))
        if means.shape != peaks.shape or means.ndim != 1:
            raise ValueError(f"mean and peak series must match, got {means.shape}, {peaks.shape}")
        if (peaks < 0).any() or np.isinf(peaks).any():
            raise ValueError("peak rates must be non-negative and finite (NaN = missing)")
        self.inner.observe(means)
        start = self._peaks.n
        valid = self._peaks.extend(peaks)
        self._residuals.update(start, peaks, valid)
        ok = valid & np.isfinite(means) & (means > 0)
        ratios = peaks[ok] / means[ok]
        if ratios.size:
            ratios = ratios[-self.ratio_window :]
            idx = (self._n_ratios + np.arange(ratios.size)) % self.ratio_window
            self._ratios[idx] = ratios
            self._n_ratios += ratios.size

    def observe(self, values: Sequence[float] | np.ndarray) -> None:
        """Protocol entry: an (n, 2) array of (mean_rate, peak_rate) rows, or a 1-D series
        of mean rates whose peaks are unknown (the ratio and error windows then stay as
        they are)."""
        v = np.asarray(values, dtype=np.float64)
        if v.ndim == 2 and v.shape[1] == 2:
            self.observe_steps(v[:, 0], v[:, 1])
        else:
            v = np.atleast_1d(v)
            self.observe_steps(v, np.full(v.shape, np.nan))

    def forecast(self, h: int) -> Forecast:
        """Expected and upper-quantile peak rate for each of the next ``h`` steps."""
        inner = self.inner.forecast(h)
        ratio = self.ratio
        mean = np.asarray(inner.mean, dtype=np.float64) * ratio
        margin = self._residuals.margins(h)
        fallback = np.asarray(inner.upper, dtype=np.float64) * ratio - mean
        margin = np.where(np.isnan(margin), fallback, margin)
        upper = mean + np.maximum(margin, 0.0)
        if self._peaks.n:
            self._residuals.record(self._peaks.n - 1, mean)
        return Forecast(mean, upper, self.quantile)
