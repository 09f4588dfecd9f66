"""Forecasters chosen by cost: any registered forecaster behind the mark policy.

`mark simulate --forecaster`, the name list and its errors, the adaptive forecaster, and
the Holt-Winters warm-start regression seen through the provisioner's adapter.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mark.cli import main
from mark.core.errors import ConfigError
from predictor import (
    Adaptive,
    PeakRateForecaster,
    StepRateForecast,
    available_forecasters,
    make_forecaster,
    make_rate_forecast,
)
from provisioner import DEFAULT_FORECAST

WINDOW_FORECASTS = ("auto-quantile", "recent-peak", "recent-quantile", "trend-peak")


@pytest.fixture()
def trace_file(tmp_path):
    rng = np.random.default_rng(0)
    counts = rng.poisson(150, size=1800)
    counts[900:1200] *= 3
    p = tmp_path / "t.txt"
    p.write_text("\n".join(map(str, counts)) + "\n")
    return p


def test_every_forecaster_is_listed_together() -> None:
    names = available_forecasters()
    assert set(WINDOW_FORECASTS) <= set(names)
    assert "adaptive" in names and "holt-winters" in names and DEFAULT_FORECAST in names
    assert len(names) == len(set(names))


def test_unknown_forecaster_lists_every_accepted_name() -> None:
    with pytest.raises(ConfigError) as exc:
        make_rate_forecast("nope")
    for name in available_forecasters():
        assert name in str(exc.value)


@pytest.mark.parametrize("name", ["holt-winters", "adaptive", "recent-peak", "sarimax"])
def test_cli_runs_mark_with_a_named_forecaster(trace_file, tmp_path, capsys, name) -> None:
    out = tmp_path / "r.json"
    assert main(["simulate", "--trace", str(trace_file), "--policy", "mark", "--forecaster",
                 name, "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["policy"] == "mark"
    assert doc["forecaster"] == {"name": name, "params": {}}
    assert doc["requests"] > 150 * 1800 * 0.9 and doc["cost_usd"]["total"] > 0
    assert f"[{name}]" in capsys.readouterr().out


def test_cli_forecaster_params_and_default(trace_file, tmp_path) -> None:
    out = tmp_path / "r.json"
    assert main(["simulate", "--trace", str(trace_file), "--forecaster", "ewma",
                 "--forecaster-param", "alpha=0.3", "--forecaster-param", "quantile=0.9",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["forecaster"] == {
        "name": "ewma", "params": {"alpha": 0.3, "quantile": 0.9}}
    assert main(["simulate", "--trace", str(trace_file), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["forecaster"]["name"] == DEFAULT_FORECAST


def test_cli_forecaster_errors(trace_file, capsys) -> None:
    assert main(["simulate", "--trace", str(trace_file), "--forecaster", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown forecaster 'nope'" in err
    for name in available_forecasters():
        assert name in err
    assert main(["simulate", "--trace", str(trace_file), "--policy", "sagemaker",
                 "--forecaster", "ewma"]) == 2
    assert "not 'sagemaker'" in capsys.readouterr().err
    assert main(["simulate", "--trace", str(trace_file), "--forecaster", "ewma",
                 "--forecaster-param", "alpah=1"]) == 2
    assert "alpha" in capsys.readouterr().err
    assert main(["simulate", "--trace", str(trace_file), "--forecaster", "ewma",
                 "--forecaster-param", "alpha"]) == 2
    assert "K=V" in capsys.readouterr().err


def _bursty(seed: int, n: int = 3000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lam = np.full(n, 100.0)
    for start in rng.choice(np.arange(200, n - 20), 25, replace=False):
        lam[start : start + 8] *= 4  # 4x jumps that hold 8 steps, as in the Twitter week
    return rng.poisson(lam).astype(np.float64)


def _one_step(f, y: np.ndarray, warm: int = 200) -> tuple[float, float]:
    """(under-forecast rate of the one-step upper, mean headroom (upper - actual) / actual)."""
    f.observe(y[:warm])
    miss, head = [], []
    for t in range(warm, y.size):
        upper = float(f.forecast(1).upper[0])
        miss.append(y[t] > upper)
        head.append((upper - y[t]) / y[t])
        f.observe(y[t : t + 1])
    return float(np.mean(miss)), float(np.mean(head))


@pytest.mark.parametrize("inner", ["ewma", "last"])
def test_adaptive_under_forecasts_less_at_bounded_headroom(inner: str) -> None:
    for seed in (0, 1):
        y = _bursty(seed)
        base_miss, base_head = _one_step(make_forecaster(inner), y)
        f = make_forecaster("adaptive", inner=inner)
        assert isinstance(f, Adaptive)
        miss, head = _one_step(f, y)
        assert miss < 0.7 * base_miss
        assert head < base_head + 0.4  # bounded extra headroom
        assert f.misses > 0 and f.min_scale <= f.scale <= f.max_scale


def test_adaptive_widens_after_a_miss_and_relaxes_after_good_steps() -> None:
    f = Adaptive(inner="last", up=2.0, decay=0.5, patience=3, min_scale=0.25)
    f.observe(np.full(100, 10.0) + np.tile([0.0, 1.0], 50))
    f.forecast(1)
    f.observe([1000.0])  # a burst: far above the upper
    assert f.scale == 2.0 and f.misses == 1
    for _ in range(3):
        f.forecast(1)
        f.observe([0.5])  # well below any upper
    assert f.scale == 1.0
    fc = f.forecast(3)
    assert np.all(fc.upper >= fc.mean)


def test_adaptive_in_the_provisioner_adapts_on_peaks() -> None:
    rng = np.random.default_rng(3)
    counts = rng.poisson(100, 60 * 240)
    counts[60 * 120 : 60 * 128] *= 4
    fc = make_rate_forecast("adaptive", up=2.0)
    assert isinstance(fc, StepRateForecast)
    before = fc(counts[: 60 * 120], 10, 60.0)
    during = fc(counts[: 60 * 122], 10, 60.0)
    assert during[0] > 2 * before[0]
    assert isinstance(fc.model, Adaptive)
    assert fc.model.misses >= 1 and fc.model.scale > 1.0


@pytest.mark.parametrize("kw", [{}, {"season": 1440}, {"trend": True},
                                {"season": 24, "trend": True}, {"season": 24,
                                                                "init": "heuristic"}])
def test_holt_winters_refits_warm_without_a_season(kw) -> None:
    """Regression: the second (warm-started) fit of a model with estimated initial states
    raised "start_params must have 6 values but has 1"."""
    f = make_forecaster("holt-winters", refit_every=50, **kw)
    rng = np.random.default_rng(0)
    for _ in range(260):
        f.observe(rng.poisson(100, 1).astype(float))
        fc = f.forecast(10)
    assert np.all(np.isfinite(fc.upper)) and 80 < fc.mean[0] < 120


def test_holt_winters_through_the_provisioner_adapter() -> None:
    """The provisioner's adapter at 60 s steps: the regression first showed here, at its
    360th step (the first warm refit, a quarter season in, of a not-yet-seasonal model)."""
    rng = np.random.default_rng(1)
    counts = rng.poisson(50, 60 * 450)
    fc = make_rate_forecast("holt-winters")
    assert isinstance(fc, StepRateForecast)
    for minutes in range(10, 451, 20):
        out = fc(counts[: 60 * minutes], 10, 60.0)
        assert out.shape == (10,) and np.all(np.isfinite(out)) and out[0] > 40
    assert isinstance(fc.model, PeakRateForecaster)
    assert fc.model.season == 1440  # a daily season at the provisioning step


def test_mean_rate_target_plans_below_the_peak_target() -> None:
    rng = np.random.default_rng(2)
    counts = rng.poisson(20, 60 * 120)
    peak = make_rate_forecast("ewma")
    mean = make_rate_forecast("ewma", target="mean", use="mean")
    p, m = peak(counts, 5, 60.0), mean(counts, 5, 60.0)
    assert 17 < m[0] < 23 < p[0]  # the minute's mean rate vs the upper of its peak second
    with pytest.raises(ConfigError, match="target"):
        make_rate_forecast("ewma", target="max")
