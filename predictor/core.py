"""Machinery shared by the built-in forecasters.

- :class:`History`: the observed series with collection gaps masked.
- :class:`ResidualQuantiles`: empirical upper quantiles from a forecaster's own past errors.
- :class:`BaseForecaster`: implements the :class:`predictor.base.Forecaster` contract on top
  of one method, ``_point_forecast(h)``.

How gaps and bursts are treated (the Twitter week has a ~29-minute run of zeros every day
at 23:31, a collection gap, and several 4-5x jumps a day that hold for 7-10 minutes):

- A run of exact zeros of at most ``max_gap_steps`` steps is *missing*, not load. Models
  see it filled with the last valid value (SARIMAX sees NaN, which its Kalman filter
  skips), and no forecast error is scored against it. A longer run is accepted as real
  idleness: the whole run becomes valid data. ``max_gap_steps=0`` makes zeros plain data.
  Backtests of per-second traces go further and also mark steps that overlap an improbable
  run of zero seconds (the partial minutes at a gap's edges, 10-40 s collection hiccups)
  as missing; see :mod:`predictor.backtest`.
- Bursts are real load and are never clipped or down-weighted: missing one is what costs
  SLO. They enter the error windows, so the upper quantiles widen after bursty periods.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np

from predictor.base import Forecast


class History:
    """The last ``capacity`` observations, one per step, with a validity mask.

    ``n`` counts every observation ever made; the global index of an observation is its
    position in that count (0-based). Zero runs of at most ``max_gap_steps`` are invalid
    (missing); see the module docstring.
    """

    def __init__(self, *, max_gap_steps: int = 60, capacity: int = 20_000) -> None:
        if max_gap_steps < 0 or capacity < 1:
            raise ValueError("max_gap_steps must be >= 0 and capacity >= 1")
        self.max_gap_steps = max_gap_steps
        self.capacity = capacity
        self.n = 0
        self._raw = np.empty(0, dtype=np.float64)
        self._valid = np.empty(0, dtype=bool)
        self._zero_run = 0  # length of the zero run at the end so far

    def extend(self, values: np.ndarray) -> np.ndarray:
        """Append raw values (NaN = missing); returns their validity flags."""
        v = np.asarray(values, dtype=np.float64)
        valid = np.isfinite(v)
        if self.max_gap_steps > 0 and v.size:
            z = v == 0
            if z.any():
                edges = np.diff(np.concatenate(([0], z.astype(np.int8), [0])))
                starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
                lengths = ends - starts
                carried = self._zero_run if starts[0] == 0 else 0
                lengths[0] += carried
                real = lengths > self.max_gap_steps
                valid[z] = np.repeat(real, ends - starts)
                if carried and real[0]:
                    # the run that began in an earlier call turned out to be real idleness
                    self._valid[-min(carried, self._valid.size) :] = True
                self._zero_run = int(lengths[-1]) if z[-1] else 0
            else:
                self._zero_run = 0
        self._raw = np.concatenate((self._raw, v))[-self.capacity :]
        self._valid = np.concatenate((self._valid, valid))[-self.capacity :]
        self.n += v.size
        return valid

    def raw(self, k: int | None = None) -> np.ndarray:
        """The last ``k`` (default: all kept) values with NaN where missing."""
        out = np.where(self._valid, self._raw, np.nan)
        return out if k is None else out[-k:]

    def filled(self, k: int | None = None) -> np.ndarray:
        """The last ``k`` values with missing steps carried forward from the last valid one
        (zeros before the first valid value)."""
        idx = np.where(self._valid, np.arange(self._valid.size), -1)
        np.maximum.accumulate(idx, out=idx)
        out = np.where(idx >= 0, self._raw[np.maximum(idx, 0)], 0.0)
        return out if k is None else out[-k:]

    def last(self) -> float:
        """The last valid value carried forward (0 before any)."""
        valid = np.flatnonzero(self._valid)
        return float(self._raw[valid[-1]]) if valid.size else 0.0


class ResidualQuantiles:
    """Per-horizon empirical quantiles of ``actual - forecast`` over a sliding window.

    Forecasts are recorded with their origin (the global index of the last observation
    they saw); each later valid actual scores every pending forecast that covers it.
    """

    def __init__(self, quantile: float, *, window: int = 1440, min_count: int = 30) -> None:
        self.quantile = quantile
        self.window = window
        self.min_count = min_count
        self._pending: dict[int, np.ndarray] = {}
        self._errors = np.full((window, 0), np.nan)
        self._count = np.zeros(0, dtype=np.int64)

    def record(self, origin: int, mean: np.ndarray) -> None:
        """Remember a forecast made after observation ``origin`` (keeps the longest)."""
        old = self._pending.get(origin)
        if old is None or old.size < mean.size:
            self._pending[origin] = np.array(mean, dtype=np.float64)

    def update(self, start: int, values: np.ndarray, valid: np.ndarray) -> None:
        """Score pending forecasts against actuals at global indices ``start, start+1, ...``."""
        end = start + values.size
        for origin, mean in list(self._pending.items()):
            lo, hi = max(origin + 1, start), min(origin + mean.size, end - 1)
            if lo <= hi:
                idx = np.arange(lo, hi + 1)
                ok = valid[idx - start]
                errors = values[idx - start] - mean[idx - origin - 1]
                for k, err in zip(idx[ok] - origin, errors[ok], strict=True):
                    self._push(int(k), float(err))
            if origin + mean.size <= end - 1:
                del self._pending[origin]

    def _push(self, k: int, err: float) -> None:
        if k > self._count.size:
            grow = k - self._count.size
            self._errors = np.hstack((self._errors, np.full((self.window, grow), np.nan)))
            self._count = np.concatenate((self._count, np.zeros(grow, dtype=np.int64)))
        self._errors[self._count[k - 1] % self.window, k - 1] = err
        self._count[k - 1] += 1

    def margins(self, h: int) -> np.ndarray:
        """Upper-quantile error for horizons 1..h; NaN where too few errors are known.

        A horizon without enough errors borrows the nearest shorter one scaled by
        sqrt(k / k0) (random-walk growth).
        """
        counts = np.zeros(h, dtype=np.int64)
        known = min(h, self._count.size)
        counts[:known] = self._count[:known]
        out = np.full(h, np.nan)
        full = np.flatnonzero(counts >= self.window)
        if full.size:  # one vectorised call for every horizon with a full window
            out[full] = np.quantile(self._errors[:, full], self.quantile, axis=0)
        for k in np.flatnonzero((counts >= self.min_count) & (counts < self.window)):
            out[k] = np.quantile(self._errors[: counts[k], k], self.quantile)
        for k in range(1, h):
            if np.isnan(out[k]) and not np.isnan(out[k - 1]):
                out[k] = out[k - 1] * np.sqrt((k + 1) / k)
        return out


class BaseForecaster(ABC):
    """Observation bookkeeping, gap masking and empirical upper quantiles.

    Subclasses implement ``_point_forecast(h)`` from ``self.history``; ``upper`` is
    ``mean`` plus the ``quantile`` of the forecaster's own recent errors at each horizon
    (a sliding-window conformal bound). Until ``min_count`` errors exist at a horizon, the
    margin is ``z_q * std(one-step differences of the last 60 values) * sqrt(k)``.

    Keyword arguments common to all built-in forecasters:
        quantile: probability level of ``Forecast.upper`` (0.5 <= q < 1).
        max_gap_steps: longest zero run treated as missing (0: zeros are data).
        error_window: how many past errors per horizon the quantiles use.
    """

    name: str = "base"

    def __init__(
        self,
        *,
        quantile: float = 0.95,
        max_gap_steps: int = 60,
        error_window: int = 1440,
        history_steps: int = 20_000,
    ) -> None:
        if not 0.5 <= quantile < 1.0:
            raise ValueError(f"quantile must be in [0.5, 1), got {quantile}")
        self.quantile = quantile
        self.history = History(max_gap_steps=max_gap_steps, capacity=history_steps)
        self._residuals = ResidualQuantiles(quantile, window=error_window)

    def observe(self, values: Sequence[float] | np.ndarray | float) -> None:
        """Append observations (one per step, oldest first; NaN = missing)."""
        v = np.atleast_1d(np.asarray(values, dtype=np.float64))
        if v.ndim != 1:
            raise ValueError(f"observe takes a 1-D series, got shape {v.shape}")
        if np.isinf(v).any() or (v < 0).any():
            raise ValueError("observations must be non-negative and finite (NaN = missing)")
        start = self.history.n
        valid = self.history.extend(v)
        self._residuals.update(start, v, valid)

    def forecast(self, h: int) -> Forecast:
        """Expected value and upper quantile for each of the next ``h`` steps."""
        if h < 1:
            raise ValueError(f"horizon must be at least 1 step, got {h}")
        if self.history.n == 0:
            zeros = np.zeros(h)
            return Forecast(zeros, zeros.copy(), self.quantile)
        mean = np.asarray(self._point_forecast(h), dtype=np.float64)
        mean = np.where(np.isfinite(mean), mean, self.history.last())
        mean = np.maximum(mean, 0.0)
        margin = self._residuals.margins(h)
        missing = np.isnan(margin)
        if missing.any():
            margin[missing] = self._fallback_margin(h)[missing]
        upper = mean + np.maximum(margin, 0.0)
        self._residuals.record(self.history.n - 1, mean)
        return Forecast(mean, upper, self.quantile)

    def _fallback_margin(self, h: int) -> np.ndarray:
        recent = self.history.filled(60)
        spread = float(np.std(np.diff(recent))) if recent.size >= 3 else 0.0
        z = NormalDist().inv_cdf(self.quantile)
        return z * spread * np.sqrt(np.arange(1, h + 1))

    @abstractmethod
    def _point_forecast(self, h: int) -> np.ndarray:
        """Expected values for the next ``h`` steps (NaN entries fall back to the last value)."""
