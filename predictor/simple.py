"""Cheap baselines: last value, moving maximum, EWMA and seasonal naive.

Each reads the gap-filled history (see :mod:`predictor.core`) at forecast time; none keeps
model state, so a forecast costs O(window) and never refits.
"""

from __future__ import annotations

import math

import numpy as np

from predictor.base import register_forecaster
from predictor.core import BaseForecaster


@register_forecaster("last")
class LastValue(BaseForecaster):
    """Every future step equals the last valid observation (the random-walk forecast)."""

    def _point_forecast(self, h: int) -> np.ndarray:
        return np.full(h, self.history.last())


@register_forecaster("moving-max")
class MovingMax(BaseForecaster):
    """Every future step equals ``factor`` times the maximum of the last ``window`` steps.

    MArk-style conservative provisioning uses it on per-step peak rates (e.g. window=10
    one-minute steps, factor=1.1). ``mean`` is then this conservative level, not an
    expectation.
    """

    def __init__(
        self,
        *,
        window: int = 10,
        factor: float = 1.0,
        quantile: float = 0.95,
        max_gap_steps: int = 60,
        error_window: int = 1440,
    ) -> None:
        super().__init__(quantile=quantile, max_gap_steps=max_gap_steps, error_window=error_window)
        if window < 1 or factor <= 0:
            raise ValueError(f"window must be >= 1 and factor > 0, got {window}, {factor}")
        self.window = window
        self.factor = factor

    def _point_forecast(self, h: int) -> np.ndarray:
        return np.full(h, self.factor * float(self.history.filled(self.window).max()))


@register_forecaster("ewma")
class Ewma(BaseForecaster):
    """Exponentially weighted moving average, weight ``alpha`` on the newest step; flat.

    Computed from the last ``ceil(log(1e-9) / log(1 - alpha))`` values with normalised
    weights, so a short history is not biased towards zero.
    """

    def __init__(
        self,
        *,
        alpha: float = 0.5,
        quantile: float = 0.95,
        max_gap_steps: int = 60,
        error_window: int = 1440,
    ) -> None:
        super().__init__(quantile=quantile, max_gap_steps=max_gap_steps, error_window=error_window)
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        span = 1 if alpha == 1 else math.ceil(math.log(1e-9) / math.log(1 - alpha))
        self._weights = (1 - alpha) ** np.arange(span)[::-1]

    def _point_forecast(self, h: int) -> np.ndarray:
        y = self.history.filled(self._weights.size)
        w = self._weights[-y.size :]
        return np.full(h, float(w @ y / w.sum()))


@register_forecaster("seasonal-naive")
class SeasonalNaive(BaseForecaster):
    """Step t+k repeats the value one season earlier (the last value until a season is seen).

    Args:
        season: season length in steps (1440 for a daily cycle at one-minute steps).
    """

    def __init__(
        self,
        *,
        season: int | None = None,
        quantile: float = 0.95,
        max_gap_steps: int = 60,
        error_window: int = 1440,
    ) -> None:
        if season is None or season < 1:
            raise ValueError(f"seasonal-naive needs season >= 1 (steps), got {season}")
        super().__init__(
            quantile=quantile,
            max_gap_steps=max_gap_steps,
            error_window=error_window,
            history_steps=max(20_000, season + 1),
        )
        self.season = season

    def _point_forecast(self, h: int) -> np.ndarray:
        m = self.season
        if self.history.n < m:
            return np.full(h, self.history.last())
        y = self.history.filled(m)
        k = np.arange(1, h + 1)
        # value at t+k comes from t+k-m*ceil(k/m), i.e. position (k-1) % m of the last season
        return y[(k - 1) % m]
