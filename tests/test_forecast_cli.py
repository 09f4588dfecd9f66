"""``mark forecast``: the sub-command on a parser of its own (other commands may not exist)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from mark.cli import forecast
from mark.core.errors import ConfigError
from mark.core.workload.traces import shipped_trace

MARK_CSV = shipped_trace("mark-tweet-load-per-minute")
TWITTER = shipped_trace("twitter-2021-08-week1")


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mark")
    forecast.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["forecast", *argv])
    code: int = args.func(args)
    return code


def test_json_has_exactly_the_documented_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    argv = ["--trace", str(MARK_CSV), "--forecaster", "ewma", "--horizon", "5", "--json", str(out)]
    assert run(argv) == 0
    doc = json.loads(out.read_text())
    assert set(doc) == {"forecaster", "mape", "rmse", "under_forecast_rate", "ms_per_forecast"}
    assert doc["forecaster"] == "ewma"
    assert list(doc["mape"]) == ["1", "2", "3", "4", "5"] == list(doc["rmse"])
    assert all(isinstance(v, float) and v > 0 for v in doc["mape"].values())
    assert 0 <= doc["under_forecast_rate"] <= 1 and doc["ms_per_forecast"] > 0
    text = capsys.readouterr().out
    assert "MAPE" in text and "under-forecast rate" in text and "ms per forecast" in text


def test_unknown_forecaster_lists_registered(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        run(["--trace", str(MARK_CSV), "--forecaster", "lstm"])
    assert "unknown forecaster 'lstm'" in err.value.message
    for name in ("last", "ewma", "holt-winters", "sarimax", "seasonal-naive", "moving-max"):
        assert name in err.value.message


def test_bad_step_and_peak_target_on_a_minute_trace() -> None:
    with pytest.raises(ConfigError, match="multiple of 60"):
        run(["--trace", str(MARK_CSV), "--forecaster", "last", "--step", "90"])
    with pytest.raises(ConfigError, match="per-second trace"):
        run(["--trace", str(MARK_CSV), "--forecaster", "last", "--target", "peak"])


def test_params_and_plot(tmp_path: Path) -> None:
    png = tmp_path / "f.png"
    argv = ["--trace", str(MARK_CSV), "--forecaster", "moving-max", "--param", "window=5"]
    assert run([*argv, "--param", "factor=1.1", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="accepts"):
        run([*argv, "--param", "colour=red"])


def test_peak_target_on_the_twitter_week(tmp_path: Path) -> None:
    out = tmp_path / "peak.json"
    argv = ["--trace", str(TWITTER), "--forecaster", "holt-winters", "--target", "peak"]
    assert run([*argv, "--max-origins", "100", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["forecaster"] == "peak(holt-winters)"
    assert len(doc["mape"]) == 10 and doc["ms_per_forecast"] < 100


def test_window_forecast_is_backtested_on_peaks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A name `mark simulate --forecaster` takes is backtested too: a window forecast from
    the per-second counts, scored against each minute's per-second peak."""
    out = tmp_path / "window.json"
    argv = ["--trace", str(TWITTER), "--forecaster", "auto-quantile", "--param", "q=0.5"]
    assert run([*argv, "--horizon", "3", "--max-origins", "50", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["forecaster"] == "auto-quantile" and list(doc["mape"]) == ["1", "2", "3"]
    assert "target peak" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="--target peak only"):
        run([*argv, "--target", "mean"])
    with pytest.raises(ConfigError, match="per-second trace"):
        run(["--trace", str(MARK_CSV), "--forecaster", "recent-peak"])
    with pytest.raises(ConfigError, match="q must be"):
        run(["--trace", str(TWITTER), "--forecaster", "recent-quantile", "--param", "q=2"])


def test_through_the_mark_entry_point(tmp_path: Path) -> None:
    from mark.cli import main

    assert main(["forecast", "--trace", str(MARK_CSV), "--forecaster", "last"]) == 0
    assert main(["forecast", "--trace", str(MARK_CSV), "--forecaster", "nope"]) == 2
