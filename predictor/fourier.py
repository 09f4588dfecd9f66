"""Smooth seasonal profiles: least-squares fits of a constant plus Fourier terms.

Both statsmodels-based forecasters take their daily shape from here, because per-step
seasonal estimates on a 1440-step season copy every burst of the fit window into the
season (a 5x jump on Monday at 14:02 would be "expected" on Tuesday at 14:02).
"""

from __future__ import annotations

import numpy as np


def fourier_terms(index: np.ndarray, season: int, k: int) -> np.ndarray:
    """``[sin(2 pi j t / season)..., cos(2 pi j t / season)...]`` for j = 1..k, one row per t."""
    angle = 2.0 * np.pi * np.outer(index, np.arange(1, k + 1)) / season
    return np.hstack((np.sin(angle), np.cos(angle)))


def design(start: int, stop: int, season: int | None, k: int) -> np.ndarray:
    """Regressors for global steps ``start..stop-1``: a constant, then k Fourier pairs."""
    idx = np.arange(start, stop)
    if not (k and season):
        return np.ones((idx.size, 1))
    return np.column_stack((np.ones(idx.size), fourier_terms(idx, season, k)))


def fit_profile(values: np.ndarray, start: int, season: int | None, k: int) -> np.ndarray:
    """Coefficients of the profile fitted to ``values`` (global steps from ``start``;
    NaN entries are ignored)."""
    x = design(start, start + values.size, season, k)
    ok = np.isfinite(values)
    if not ok.any():
        return np.zeros(x.shape[1])
    coef: np.ndarray = np.linalg.lstsq(x[ok], values[ok], rcond=None)[0]
    return coef
