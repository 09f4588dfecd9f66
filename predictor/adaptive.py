"""An adaptive margin around any forecaster, driven by realised under-forecasts.

The upper quantile of a forecaster is calibrated on a long error window (a day of steps by
default), so it is too narrow right after a burst begins and too wide long after the last
one. :class:`Adaptive` keeps the inner forecaster's ``mean`` and rescales its margin::

    upper = mean + scale * (inner.upper - mean)

and moves ``scale`` with what it sees, one step at a time:

- an *under-forecast* (the step's actual exceeds the one-step ``upper`` given for it)
  multiplies ``scale`` by ``up`` (up to ``max_scale``) and restarts the count of good steps;
- after ``patience`` good steps in a row, ``scale`` is multiplied by ``decay`` (down to
  ``min_scale``), and the count restarts.

So the margin widens within a step of a burst's onset and stays wide while misses recur
(the Twitter week's 4-5x jumps hold 7-10 minutes), then relaxes geometrically. In
equilibrium it misses about once per ``patience * log(up) / log(1 / decay)`` steps.

Observations may be a 1-D series (the value is the actual) or ``(n, 2)`` rows of
(mean rate, peak rate), as :class:`predictor.peak.PeakRateForecaster` takes them; the peak
is then the actual, so ``Adaptive(PeakRateForecaster("ewma"))`` adapts a peak-rate margin
(that is how the provisioner's ``"adaptive"`` forecast is built).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from predictor.base import Forecast, Forecaster, make_forecaster, register_forecaster


@register_forecaster("adaptive")
class Adaptive:
    """Rescales an inner forecaster's margin after realised under-forecasts.

    Args:
        inner: a forecaster, or a registry name built with ``quantile``, ``max_gap_steps``
            and ``inner_kw``.
        up: factor applied to the scale after an under-forecast (> 1).
        decay: factor applied after ``patience`` good steps in a row (in (0, 1)).
        patience: good steps in a row before the scale relaxes.
        min_scale, max_scale: bounds of the scale (the extra headroom is bounded by
            ``max_scale`` times the inner margin).
        initial_scale: scale before any step was scored.
        quantile, max_gap_steps: passed to a named inner forecaster.
        inner_kw: more keyword arguments for a named inner forecaster.
    """

    name = "adaptive"
    wraps_forecaster = True  # the provisioner wraps it around a peak-rate forecaster

    def __init__(
        self,
        *,
        inner: Forecaster | str = "ewma",
        up: float = 1.5,
        decay: float = 0.9,
        patience: int = 10,
        min_scale: float = 0.5,
        max_scale: float = 4.0,
        initial_scale: float = 1.0,
        quantile: float = 0.95,
        max_gap_steps: int = 60,
        inner_kw: dict[str, Any] | None = None,
    ) -> None:
        if up <= 1 or not 0 < decay < 1 or patience < 1:
            raise ValueError(f"need up > 1, 0 < decay < 1, patience >= 1; got {up}, {decay}, "
                             f"{patience}")
        if not 0 <= min_scale <= initial_scale <= max_scale:
            raise ValueError("need 0 <= min_scale <= initial_scale <= max_scale")
        if isinstance(inner, str):
            inner = make_forecaster(inner, quantile=quantile, max_gap_steps=max_gap_steps,
                                    **(inner_kw or {}))
        self.inner = inner
        self.quantile = quantile
        self.season = getattr(inner, "season", None)
        self.up, self.decay, self.patience = up, decay, patience
        self.min_scale, self.max_scale = min_scale, max_scale
        self.scale = initial_scale
        self.misses = 0  # under-forecasts seen
        self.scored = 0  # steps scored
        self._good = 0
        self._n = 0  # steps observed
        self._pending: tuple[int, float] | None = None  # (step it covers, one-step upper)

    def observe(self, values: Sequence[float] | np.ndarray) -> None:
        """Append observations: a 1-D series, or (n, 2) rows of (mean, peak)."""
        v = np.asarray(values, dtype=np.float64)
        self.inner.observe(v)
        actual = v[:, 1] if v.ndim == 2 and v.shape[1] == 2 else np.atleast_1d(v)
        if self._pending is not None:
            at, upper = self._pending
            i = at - self._n
            if 0 <= i < actual.size and np.isfinite(actual[i]):
                self._score(float(actual[i]) > upper + 1e-9)
            self._pending = None
        self._n += actual.size

    def _score(self, miss: bool) -> None:
        self.scored += 1
        if miss:
            self.misses += 1
            self.scale = min(max(self.scale, 1e-3) * self.up, self.max_scale)
            self._good = 0
            return
        self._good += 1
        if self._good >= self.patience:
            self.scale = max(self.scale * self.decay, self.min_scale)
            self._good = 0

    def forecast(self, h: int) -> Forecast:
        """The inner mean, and the inner margin times the current scale."""
        f = self.inner.forecast(h)
        mean = np.asarray(f.mean, dtype=np.float64)
        margin = np.maximum(np.asarray(f.upper, dtype=np.float64) - mean, 0.0)
        upper = mean + self.scale * margin
        if self._n:
            self._pending = (self._n, float(upper[0]))
        return Forecast(mean, upper, self.quantile)
