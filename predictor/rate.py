"""Every registered forecaster as a :class:`~predictor.base.RateForecast` for the provisioner.

The provisioner plans for "the peak request rate in each of the next ``horizon`` steps of
``step_s``, given the per-second arrival counts so far": the one interface
:class:`predictor.base.RateForecast`. :func:`make_rate_forecast` builds one for every name
in the forecaster registry (:func:`predictor.base.available_forecasters`):

- a window forecast (:mod:`predictor.window`, ``forecaster_kind(name) == "window"``) is
  one already and is built as registered;
- a step forecaster (``"ewma"``, ``"holt-winters"``, ``"adaptive"``, ...) is run through
  :class:`StepRateForecast`, which feeds it one value per step.

Unknown names raise ``ConfigError`` listing every registered name, and unknown or bad
parameters raise it when the forecast is built, not at its first call.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mark.core.errors import ConfigError
from predictor.base import (
    Forecaster,
    RateForecast,
    build_forecaster,
    forecaster_factory,
    forecaster_kind,
    forecaster_parameters,
    make_forecaster,
)
from predictor.peak import PeakRateForecaster

_PEAK_OWN = ("ratio_window", "initial_ratio", "quantile", "max_gap_steps", "error_window")


class StepRateForecast:
    """A named step forecaster run as a :class:`RateForecast`.

    By default :class:`predictor.peak.PeakRateForecaster` around the named mean-rate
    forecaster (``inner``: "ewma", "holt-winters", "sarimax", ...), fed one (mean, peak)
    pair per ``step_s`` step; returns ``margin`` x its ``upper`` (``use="upper"``) or its
    ``mean`` (``use="mean"``). With ``target="mean"`` the named forecaster forecasts the
    mean rate per step itself (no peak/mean ratio): the plan then covers the step's mean
    rate up to the forecaster's quantile and leaves the within-step peaks to queueing and
    spill.

    A forecaster that takes a ``season`` and is given none gets a daily one
    (``86400 / step_s`` steps). A wrapper forecaster (one with ``wraps_forecaster``, such as
    ``"adaptive"``) is wrapped around the peak-rate forecaster instead, so it sees the
    peaks it is scored on; its own inner forecaster (``inner_kw["inner"]``, default
    ``"ewma"``) becomes the mean-rate forecaster, and keyword arguments it does not take go
    to that one.

    Still a function of the history: the stateful forecaster (:attr:`model`) is only a
    cache of the steps already fed. A history that is not an extension of the one seen (a
    new run) rebuilds it.
    """

    def __init__(self, inner: str = "ewma", use: str = "upper", margin: float = 1.0,
                 target: str = "peak", **inner_kw: Any) -> None:
        if use not in ("upper", "mean"):
            raise ConfigError(f"forecaster {inner!r}: use must be 'upper' or 'mean', got {use!r}")
        if target not in ("peak", "mean"):
            raise ConfigError(f"forecaster {inner!r}: target must be 'peak' or 'mean', "
                              f"got {target!r}")
        if forecaster_kind(inner) != "step":  # unknown names fail here, listing all
            raise ConfigError(f"forecaster {inner!r} is a window forecast, not a step "
                              f"forecaster; build it with make_rate_forecast")
        self.name = inner
        self.target = target
        self.inner, self.use, self.margin, self.inner_kw = inner, use, margin, inner_kw
        self.build(60)  # validates the keyword arguments now rather than at the first step
        self._fc: Forecaster | None = None
        self._seen = 0
        self._step = 0
        self._head: float = -1.0

    @property
    def model(self) -> Forecaster | None:
        """The step forecaster fed so far (None before the first call)."""
        return self._fc

    def build(self, step_s: int) -> Forecaster:
        """A fresh step forecaster as this forecast runs it at steps of ``step_s`` seconds."""
        kw = dict(self.inner_kw)
        wrapper: dict[str, Any] = {}
        mean_name = self.inner
        if getattr(forecaster_factory(self.inner), "wraps_forecaster", False):
            own = set(forecaster_parameters(self.inner)) - {"inner", "inner_kw", "max_gap_steps"}
            wrapper = {k: kw.pop(k) for k in list(kw) if k in own}
            mean_name = kw.pop("inner", "ewma")
            if not isinstance(mean_name, str):
                raise ConfigError(f"{self.inner}: inner must be a forecaster name")
            kw.update(kw.pop("inner_kw", None) or {})
            if "quantile" in wrapper:  # one level for both
                kw.setdefault("quantile", wrapper["quantile"])
        if "season" in forecaster_parameters(mean_name) and "season" not in kw:
            kw["season"] = max(2, round(86_400 / step_s))
        try:
            if self.target == "mean":
                fc: Forecaster = make_forecaster(mean_name, **kw)
            else:
                fc = PeakRateForecaster(mean_name, **kw)
        except TypeError as exc:
            accepted = sorted(set(forecaster_parameters(mean_name)) | set(_PEAK_OWN))
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
        fc = self._fc
        if fc is None or n < self._seen or step != self._step or head != self._head:
            fc = self._fc = self.build(step)
            self._seen, self._step, self._head = 0, step, head
        if n > self._seen:
            blk = counts[self._seen * step : n * step].reshape(-1, step).astype(np.float64)
            if self.target == "mean":
                fc.observe(blk.mean(axis=1))
            else:
                fc.observe(np.column_stack((blk.mean(axis=1), blk.max(axis=1))))
            self._seen = n
        if self._seen == 0:
            return np.full(horizon, float(counts.max()) if counts.size else 0.0)
        f = fc.forecast(horizon)
        return self.margin * np.maximum(np.asarray(getattr(f, self.use), dtype=np.float64), 0.0)


def make_rate_forecast(name: str, **kw: Any) -> RateForecast:
    """The forecast the provisioner plans with, for any registered forecaster ``name``.

    A window forecast is built with ``kw`` as registered; a step forecaster becomes
    ``StepRateForecast(name, **kw)`` (``kw`` may add ``target``, ``use`` and ``margin``, see
    :class:`StepRateForecast`). Unknown names and bad parameters raise ``ConfigError``.
    """
    if forecaster_kind(name) == "step":
        return StepRateForecast(name, **kw)
    forecast: RateForecast = build_forecaster(name, **kw)
    return forecast
