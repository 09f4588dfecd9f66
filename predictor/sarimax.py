"""SARIMAX (statsmodels state space) on a Fourier-deseasonalised series.

A 1440-step daily season is far too long for SARIMAX's seasonal polynomial (the state
would have thousands of entries). So the forecaster works in two stages:

1. the daily profile is a least-squares regression of the series on a constant and
   ``fourier_terms`` sine/cosine pairs of the global step index (period ``season``);
2. the residual follows an ARIMA(p, d, q), a statsmodels ``SARIMAX`` whose Kalman filter
   skips missing steps (gaps enter as NaN, see :mod:`predictor.core`).

The forecast is the profile plus the ARIMA forecast of the residual.

Bounded cost: every ``refit_every`` steps both stages are re-estimated on the last
``window`` steps. By default the ARMA parameters come from statsmodels' Hannan-Rissanen
estimator (two least-squares regressions, milliseconds) rather than maximum likelihood,
which takes about a second per fit on two days of one-minute steps and would stall that
provisioning step; ``estimator="mle"`` restores it (warm-started). Between refits new
steps are folded in by ``results.extend``, which filters only the new steps.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np

from predictor.base import register_forecaster
from predictor.core import BaseForecaster
from predictor.fourier import design, fit_profile

_FILTER_STEPS = 240  # residual steps filtered after a refit to set the state


@register_forecaster("sarimax")
class Sarimax(BaseForecaster):
    """Fourier daily profile plus ARIMA(p, d, q) residual dynamics.

    Args:
        order: (p, d, q) of the residual.
        season: season length in steps (None: the profile is a constant).
        fourier_terms: sine/cosine pairs for the profile (at most season // 2).
        window: steps per refit (default: 1.25 seasons but at least 500, or 1000).
        refit_every: steps between refits (default: a quarter season but at least 50, or 200).
        estimator: ``"hannan-rissanen"`` (fast, default) or ``"mle"``.
        quantile, max_gap_steps, error_window: see :class:`predictor.core.BaseForecaster`.
    """

    def __init__(
        self,
        *,
        order: tuple[int, int, int] = (1, 0, 1),
        season: int | None = None,
        fourier_terms: int = 4,
        window: int | None = None,
        refit_every: int | None = None,
        estimator: Literal["hannan-rissanen", "mle"] = "hannan-rissanen",
        quantile: float = 0.95,
        max_gap_steps: int = 60,
        error_window: int = 1440,
    ) -> None:
        if season is not None and season < 2:
            raise ValueError(f"season must be >= 2 steps or None, got {season}")
        if len(order) != 3 or min(order) < 0 or order[1] > 2:
            raise ValueError(f"order must be (p, d, q) with d <= 2, got {order}")
        if estimator not in ("hannan-rissanen", "mle"):
            raise ValueError(f"estimator must be 'hannan-rissanen' or 'mle', got {estimator!r}")
        self.order = (int(order[0]), int(order[1]), int(order[2]))
        self.season = season
        self.fourier_k = min(fourier_terms, season // 2) if season else 0
        self.window = window or (max(season + season // 4, 500) if season else 1000)
        self.refit_every = refit_every or (max(season // 4, 50) if season else 200)
        self.estimator = estimator
        super().__init__(
            quantile=quantile,
            max_gap_steps=max_gap_steps,
            error_window=error_window,
            history_steps=max(20_000, self.window),
        )
        self._min_fit = max(30, 10 * (self.order[0] + self.order[2] + 1))
        self._res: Any = None  # statsmodels results, extended step by step
        self._beta = np.zeros(1)  # profile coefficients
        self._k_used = 0  # Fourier pairs in the current profile
        self._params: np.ndarray | None = None
        self._fitted_at = -1
        self._applied = 0

    def _estimate(self, resid: np.ndarray) -> np.ndarray | None:
        """ARMA parameters [ar..., ma..., sigma2] by Hannan-Rissanen; None if unusable."""
        from statsmodels.tsa.arima.estimators.hannan_rissanen import hannan_rissanen

        x = resid.copy()
        ok = np.isfinite(x)
        idx = np.maximum.accumulate(np.where(ok, np.arange(x.size), 0))
        x = np.where(ok[idx], x[idx], 0.0)  # estimation only: carry gaps forward
        x = np.diff(x, n=self.order[1]) if self.order[1] else x
        p, q = self.order[0], self.order[2]
        try:
            est, _ = hannan_rissanen(x, ar_order=p, ma_order=q, demean=self.order[1] > 0)
        except (ValueError, np.linalg.LinAlgError):
            return None
        if not (est.is_stationary and est.is_invertible) or not est.sigma2 > 0:
            return None
        return np.concatenate((est.ar_params, est.ma_params, [est.sigma2]))

    def _fit(self) -> None:
        from statsmodels.tsa.statespace.sarimax import SARIMAX

        n = self.history.n
        y = self.history.raw(min(self.window, n))
        self._k_used = self.fourier_k if self.season and n >= self.season else 0
        self._beta = fit_profile(y, n - y.size, self.season, self._k_used)
        resid = y - design(n - y.size, n, self.season, self._k_used) @ self._beta
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params = self._estimate(resid) if self.estimator == "hannan-rissanen" else None
            if params is None and self.estimator == "hannan-rissanen" and self._params is not None:
                params = self._params  # keep the last good estimate
            if params is None:
                model = SARIMAX(resid, order=self.order, trend="n")
                self._res = model.fit(start_params=self._params, disp=False, maxiter=50)
                params = np.asarray(self._res.params)
            else:
                tail = resid[-_FILTER_STEPS:]
                self._res = SARIMAX(tail, order=self.order, trend="n").filter(
                    params, cov_type="none"
                )
        self._params = params
        self._fitted_at = self._applied = n

    def _advance(self) -> None:
        n = self.history.n
        if self._applied >= n:
            return
        if n - self._applied > self.history.capacity:
            self._fit()
            return
        new = self.history.raw(n - self._applied)
        resid = new - design(self._applied, n, self.season, self._k_used) @ self._beta
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._res = self._res.extend(resid)  # cov_type "none" carries over
        self._applied = n

    def _point_forecast(self, h: int) -> np.ndarray:
        n = self.history.n
        if np.isfinite(self.history.raw(self.window)).sum() < self._min_fit:
            return np.full(h, self.history.last())  # too little data in the window
        stale = self._fitted_at < 0 or n - self._fitted_at >= self.refit_every
        if stale or (self.fourier_k and self._k_used == 0 and self.season and n >= self.season):
            self._fit()
        else:
            self._advance()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            resid = np.asarray(self._res.forecast(h), dtype=np.float64)
        return design(n, n + h, self.season, self._k_used) @ self._beta + resid
