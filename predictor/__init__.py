"""Forecasters of the arrival-rate series that MArk's provisioner plans against.

Public face: the :class:`Forecaster` protocol and :class:`Forecast` result
(:mod:`predictor.base`), the registry (``make_forecaster``, ``available_forecasters``,
``register_forecaster``), the built-in forecasters, :class:`PeakRateForecaster`
(:mod:`predictor.peak`) and the rolling-origin :func:`backtest` (:mod:`predictor.backtest`).

Registered names: ``last``, ``moving-max``, ``ewma``, ``seasonal-naive``,
``holt-winters``, ``sarimax``, ``adaptive`` (a margin that widens after realised
under-forecasts, :mod:`predictor.adaptive`). statsmodels is imported only when a model first fits.
"""

from predictor.adaptive import Adaptive
from predictor.backtest import BacktestResult, backtest
from predictor.base import (
    Forecast,
    Forecaster,
    available_forecasters,
    forecaster_parameters,
    make_forecaster,
    register_forecaster,
)
from predictor.core import BaseForecaster, History, ResidualQuantiles
from predictor.holt_winters import HoltWinters
from predictor.peak import PeakRateForecaster
from predictor.sarimax import Sarimax
from predictor.simple import Ewma, LastValue, MovingMax, SeasonalNaive

__all__ = [
    "Adaptive",
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
    "ResidualQuantiles",
    "Sarimax",
    "SeasonalNaive",
    "available_forecasters",
    "backtest",
    "forecaster_parameters",
    "make_forecaster",
    "register_forecaster",
]
