"""The forecaster plug point and its registry.

A forecaster sees a load series one step at a time and forecasts the next steps::

    f = make_forecaster("holt-winters", season=1440)
    f.observe(rates[:2880])        # history, one value per step, oldest first
    fc = f.forecast(10)            # fc.mean[k-1], fc.upper[k-1]: k steps after the last value
    f.observe([next_rate])         # then one value per step as time moves on

Contract of :class:`Forecaster`:

- ``observe(values)`` appends observations, one per step, in the unit the caller chooses
  (requests per second in mark). ``NaN`` marks a missing step. Short runs of exact zeros
  are treated as missing too (collection gaps; see :class:`predictor.core.History`).
- ``forecast(h)`` returns :class:`Forecast` arrays of length ``h`` in the same unit:
  the expected value and an upper quantile (``quantile``, 0.95 by default) per step, with
  ``0 <= mean <= upper``. It never changes what was observed; before any observation it
  forecasts zeros.
- Cost: one ``observe`` of one value plus one ``forecast`` stays under 100 ms (model refits
  are periodic and on a bounded window).
- ``name`` is the registry name.

The same registry also holds the *window forecasts* (:mod:`predictor.window`): factories
marked ``rate_forecast = True`` whose products are :class:`RateForecast` callables over
per-second counts rather than step-wise forecasters. :class:`RateForecast` is the one
interface the provisioner plans against; :func:`predictor.rate.make_rate_forecast` builds one
for every registered name (a step forecaster through
:class:`predictor.rate.StepRateForecast`). :func:`forecaster_kind` tells the two kinds
apart; :func:`make_forecaster` builds step forecasters only.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np

from mark.core.errors import ConfigError
from mark.core.registry import Registry

_BUILTIN_MODULES = (
    "predictor.simple",
    "predictor.holt_winters",
    "predictor.sarimax",
    "predictor.adaptive",
    "predictor.window",
)


@dataclass(frozen=True)
class Forecast:
    """Per-step forecasts for steps 1..h after the last observation.

    Attributes:
        mean: expected value per step (float64, length h).
        upper: upper ``quantile`` of the value per step (float64, length h, >= mean).
        quantile: the probability level of ``upper``.
    """

    mean: np.ndarray
    upper: np.ndarray
    quantile: float = 0.95

    def __len__(self) -> int:
        return int(np.asarray(self.mean).size)


@runtime_checkable
class Forecaster(Protocol):
    """Anything that can be fed a series step by step and forecast it; see the module doc."""

    name: str

    def observe(self, values: Sequence[float] | np.ndarray) -> None:
        """Append observations, one per step, oldest first."""
        ...

    def forecast(self, h: int) -> Forecast:
        """Expected value and upper quantile for each of the next ``h`` steps."""
        ...


@runtime_checkable
class RateForecast(Protocol):
    """The provisioner's forecast: peak request rate ahead from the per-second counts so far.

    ``f(counts, horizon, step_s)`` takes the arrival counts of every second so far (oldest
    first, as the caller has them) and returns a float64 array of ``horizon`` non-negative
    values: the forecast peak rate (requests/s) in each of the next ``horizon`` steps of
    ``step_s`` seconds. It is a function of ``counts``: an implementation may cache work
    across calls (a step forecaster fed so far) but must give the same answer for the same
    history.
    """

    def __call__(self, counts: np.ndarray, horizon: int, step_s: float) -> np.ndarray: ...


FactoryT = TypeVar("FactoryT", bound=Callable[..., Any])
_REGISTRY: Registry[Callable[..., Any]] = Registry("forecaster")


def register_forecaster(name: str) -> Callable[[FactoryT], FactoryT]:
    """Class decorator (or factory decorator) adding a forecaster under ``name``.

    A decorated class gets ``name`` as its class attribute. Registering a name twice with
    different factories is an error.
    """

    def decorate(factory: FactoryT) -> FactoryT:
        _REGISTRY.register(name)(factory)
        if isinstance(factory, type):
            factory.name = name  # type: ignore[attr-defined]
        return factory

    return decorate


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def available_forecasters() -> list[str]:
    """Registered forecaster names, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def forecaster_factory(name: str) -> Callable[..., Any]:
    """The factory registered as ``name``; ``ConfigError`` listing every name if none is."""
    _load_builtins()
    return _REGISTRY.lookup(name)


def forecaster_kind(name: str) -> Literal["step", "window"]:
    """``"window"`` for a window forecast (its factory builds a :class:`RateForecast` of
    per-second counts, marked ``rate_forecast = True``), else ``"step"`` (a
    :class:`Forecaster`)."""
    return "window" if getattr(forecaster_factory(name), "rate_forecast", False) else "step"


def forecaster_parameters(name: str) -> tuple[str, ...]:
    """Keyword arguments the named forecaster's constructor accepts."""
    params = inspect.signature(forecaster_factory(name)).parameters.values()
    return tuple(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))


def make_forecaster(name: str, **kwargs: Any) -> Forecaster:
    """A new step forecaster by registry name; unknown names and arguments, and window
    forecasts (see :func:`predictor.rate.make_rate_forecast`), raise ``ConfigError``."""
    if forecaster_kind(name) == "window":
        raise ConfigError(f"forecaster {name!r} is a window forecast of per-second counts, "
                          f"not a step forecaster; build it with make_rate_forecast")
    forecaster: Forecaster = build_forecaster(name, **kwargs)
    return forecaster


def build_forecaster(name: str, **kwargs: Any) -> Any:
    """What the factory registered as ``name`` builds (a :class:`Forecaster` or, for a
    window forecast, a :class:`RateForecast`); unknown names and bad arguments raise
    ``ConfigError`` (the message lists the arguments it accepts)."""
    factory = forecaster_factory(name)
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        accepted = ", ".join(forecaster_parameters(name))
        raise ConfigError(f"forecaster {name!r}: {exc}; it accepts: {accepted}") from None
    try:
        return factory(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"forecaster {name!r}: {exc}") from exc
