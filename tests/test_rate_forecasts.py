"""One forecaster plug point for the provisioner: every registered name is a RateForecast.

The registry of :mod:`predictor` is the only one; every name in it builds a rate forecast
(window forecasts directly, step forecasters through ``StepRateForecast``), the mark policy
and ``mark simulate`` accept exactly those names, and bad names or parameters fail at build
time with ``ConfigError``.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import predictor
import provisioner
from mark.cli import main
from mark.core.catalogue import load_catalogue
from mark.core.errors import ConfigError
from mark.core.profiles import load_profile
from mark.core.registry import Registry
from mark.core.workload.traces import load_trace
from predictor import (
    AutoQuantile,
    RateForecast,
    RecentQuantile,
    StepRateForecast,
    available_forecasters,
    backtest_rate,
    forecaster_factory,
    forecaster_kind,
    make_forecaster,
    make_rate_forecast,
)
from provisioner import DEFAULT_FORECAST, PolicyContext, Slo, Snapshot, make_policy
from provisioner.greedy import MArkGreedy

WINDOW = {"auto-quantile", "recent-peak", "recent-quantile", "trend-peak"}
STEP = {"adaptive", "ewma", "holt-winters", "last", "moving-max", "sarimax", "seasonal-naive"}


@pytest.fixture(scope="module")
def twitter_counts() -> np.ndarray:
    """Four hours of the shared Twitter week, per second."""
    trace = load_trace("twitter-2021-08-week1").slice(0, 4 * 3600)
    return np.asarray(trace.counts)


@pytest.fixture(scope="module")
def ctx() -> PolicyContext:
    return PolicyContext(load_catalogue(), load_profile("minilm"), Slo(200, 98),
                         types=("c5.large", "c5.xlarge"))


def test_the_registry_holds_every_forecast_with_its_kind() -> None:
    names = available_forecasters()
    assert set(names) == WINDOW | STEP
    assert {n for n in names if forecaster_kind(n) == "window"} == WINDOW
    assert DEFAULT_FORECAST in names


@pytest.mark.parametrize("name", sorted(WINDOW | STEP))
def test_every_name_forecasts_the_twitter_week(twitter_counts: np.ndarray, name: str) -> None:
    f = make_rate_forecast(name)
    assert isinstance(f, RateForecast)
    for seconds in (1800, 3 * 3600, 4 * 3600):  # the history grows, as in a run
        out = f(twitter_counts[:seconds], 10, 60.0)
        assert isinstance(out, np.ndarray) and out.shape == (10,)
        assert np.all(np.isfinite(out)) and np.all(out >= 0)
    level = twitter_counts[-600:].mean()
    assert 0.3 * level < out[0] < 5 * level  # a rate of the trace's order, in requests/s


def test_empty_history_forecasts_zero() -> None:
    for name in available_forecasters():
        out = make_rate_forecast(name)(np.zeros(0, dtype=np.int64), 3, 60.0)
        assert out.shape == (3,) and np.all(out == 0), name


def test_unknown_name_lists_every_accepted_one() -> None:
    for build in (make_rate_forecast, make_forecaster, StepRateForecast):
        with pytest.raises(ConfigError) as err:
            build("prophet")
        assert "unknown forecaster 'prophet'" in err.value.message
        for name in available_forecasters():
            assert name in err.value.message


@pytest.mark.parametrize("name", sorted(WINDOW | STEP))
def test_unknown_parameter_fails_at_build_time(name: str) -> None:
    with pytest.raises(ConfigError, match="colour"):
        make_rate_forecast(name, colour="red")


@pytest.mark.parametrize(("name", "kw", "match"), [
    ("recent-peak", {"window_s": 0}, "window_s"),
    ("recent-peak", {"smooth_s": 2.5}, "smooth_s"),
    ("trend-peak", {"trend_s": -1}, "trend_s"),
    ("recent-quantile", {"q": 1.5}, "q must be"),
    ("auto-quantile", {"margin": 0}, "margin"),
    ("ewma", {"alpha": 2.0}, "alpha"),
    ("ewma", {"use": "both"}, "use"),
    ("holt-winters", {"target": "max"}, "target"),
    ("seasonal-naive", {"season": 0}, "season"),
    ("adaptive", {"up": 0.5}, "up > 1"),
])
def test_bad_parameter_value_fails_at_build_time(name: str, kw: dict[str, Any],
                                                 match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_rate_forecast(name, **kw)


def test_kinds_are_not_mixed_up() -> None:
    with pytest.raises(ConfigError, match="make_rate_forecast"):
        make_forecaster("recent-peak")
    with pytest.raises(ConfigError, match="window forecast"):
        StepRateForecast("trend-peak")
    assert isinstance(make_rate_forecast("ewma"), StepRateForecast)
    assert isinstance(make_rate_forecast("recent-peak"), forecaster_factory("recent-peak"))


def test_auto_quantile_is_a_two_minute_quantile_reparameterised_by_the_planner(
        ctx: PolicyContext) -> None:
    f = make_rate_forecast("auto-quantile")
    assert f == AutoQuantile(window_s=120, smooth_s=5, q=0.9, margin=1.0)
    assert isinstance(f, RecentQuantile)
    counts = np.arange(600, dtype=np.int64)
    smoothed = np.convolve(counts[-120:].astype(float), np.ones(5) / 5, mode="valid")
    for q in (0.2, 0.9):
        np.testing.assert_allclose(replace(f, q=q)(counts, 4, 60.0),
                                   np.full(4, np.quantile(smoothed, q)))
    pol = make_policy("mark", ctx)
    assert isinstance(pol, MArkGreedy) and pol.auto_q
    assert pol.forecast == AutoQuantile(q=pol.spill_quantile())
    fixed = make_policy("mark", ctx, forecast_kw={"q": 0.5})
    assert isinstance(fixed, MArkGreedy) and not fixed.auto_q
    assert fixed.forecast == AutoQuantile(q=0.5)


def test_the_mark_policy_accepts_exactly_the_registered_names(ctx: PolicyContext) -> None:
    snap = Snapshot(900.0, np.full(900, 40), (), Slo(200, 98))
    for name in available_forecasters():
        pol = make_policy("mark", ctx, forecast=name)
        dec, _ = pol.decide(snap, pol.initial_state())
        assert dec.info["forecast_rps"] >= 0, name
    with pytest.raises(ConfigError, match="unknown forecaster 'predictor'"):
        make_policy("mark", ctx, forecast="predictor")  # the old adapter's own name is gone


@pytest.mark.parametrize("name", ["trend-peak", "moving-max"])
def test_mark_simulate_runs_a_registered_name(tmp_path: Path, name: str) -> None:
    out = tmp_path / "r.json"
    argv = ["simulate", "--trace", "twitter-2021-08-week1", "--duration-s", "1800",
            "--forecaster", name, "--no-progress", "--json", str(out)]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["forecaster"] == {"name": name, "params": {}}
    assert doc["requests"] > 0 and doc["cost_usd"]["total"] > 0


def test_mark_simulate_help_lists_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ", ".join(available_forecasters()) in text


def _modules(package: Any) -> list[Any]:
    return [importlib.import_module(f"{package.__name__}.{m.name}")
            for m in pkgutil.iter_modules(package.__path__)]


def test_there_is_one_registry_of_forecasts() -> None:
    factories = {forecaster_factory(n) for n in available_forecasters()} | {StepRateForecast}
    holders = []
    for mod in [predictor, provisioner, *_modules(predictor), *_modules(provisioner)]:
        for attr, value in vars(mod).items():
            forecasts = isinstance(value, Registry) and value.kind == "forecaster"
            if forecasts or (isinstance(value, dict) and any(
                    isinstance(v, type) and v in factories for v in value.values())):
                holders.append(f"{mod.__name__}.{attr}")
    assert holders == ["predictor.base._REGISTRY"]
    assert importlib.util.find_spec("provisioner.forecast") is None


def test_backtest_rate_scores_a_window_forecast_on_peaks() -> None:
    trace = load_trace("twitter-2021-08-week1").slice(0, 6 * 3600)
    r = backtest_rate(trace, make_rate_forecast("recent-peak"), 5, name="recent-peak",
                      max_origins=100)
    assert r.forecaster == "recent-peak" and 90 <= r.n_origins <= 100
    np.testing.assert_array_equal(r.mean, r.upper)
    assert 0 < r.mape[1] < 100 and 0 <= r.under_forecast_rate < 0.5
    with pytest.raises(ValueError, match="per-second"):
        backtest_rate(trace.resample(60), make_rate_forecast("recent-peak"), 5, name="x")
