"""Forecasters of the arrival-rate series that MArk's provisioner plans against.

Public face: the :class:`Forecaster` protocol and :class:`Forecast` result
(:mod:`predictor.base`), the one registry (``register_forecaster``, ``available_forecasters``,
``make_forecaster``, ``forecaster_kind``), the built-in forecasters,
:class:`PeakRateForecaster` (:mod:`predictor.peak`) and the rolling-origin
:func:`backtest`/:func:`backtest_rate` (:mod:`predictor.backtest`).

The provisioner's plug point is :class:`RateForecast` (the peak request rate per step ahead
from the per-second counts so far); :func:`make_rate_forecast` (:mod:`predictor.rate`)
builds one for every registered name.

Registered names: step forecasters ``last``, ``moving-max``, ``ewma``, ``seasonal-naive``,
``holt-winters``, ``sarimax``, ``adaptive`` (a margin that widens after realised
under-forecasts, :mod:`predictor.adaptive`); window forecasts of per-second counts
``recent-peak``, ``trend-peak``, ``recent-quantile``, ``auto-quantile``
(:mod:`predictor.window`). statsmodels is imported only when a model first fits.
"""

from predictor.adaptive import Adaptive
from predictor.backtest import BacktestResult, backtest, backtest_rate
from predictor.base import (
    Forecast,
    Forecaster,
    RateForecast,
    available_forecasters,
    build_forecaster,
    forecaster_factory,
    forecaster_kind,
    forecaster_parameters,
    make_forecaster,
    register_forecaster,
)
from predictor.core import BaseForecaster, History, ResidualQuantiles
from predictor.holt_winters import HoltWinters
from predictor.peak import PeakRateForecaster
from predictor.rate import StepRateForecast, make_rate_forecast
from predictor.sarimax import Sarimax
from predictor.simple import Ewma, LastValue, MovingMax, SeasonalNaive
from predictor.window import AutoQuantile, RecentPeak, RecentQuantile, TrendPeak

__all__ = [
    "Adaptive",
    "AutoQuantile",
    "BacktestResult",
    "BaseForecaster",
    "Ewma",
    "Forecast",
    "Forecaster",
    "History",
    "HoltWinters",
    "LastValue",
    "MovingMax",
    "PeakRateForecaster",
    "RateForecast",
    "RecentPeak",
    "RecentQuantile",
    "ResidualQuantiles",
    "Sarimax",
    "SeasonalNaive",
    "StepRateForecast",
    "TrendPeak",
    "available_forecasters",
    "backtest",
    "backtest_rate",
    "build_forecaster",
    "forecaster_factory",
    "forecaster_kind",
    "forecaster_parameters",
    "make_forecaster",
    "make_rate_forecast",
    "register_forecaster",
]
