"""``mark simulate`` end to end: JSON shape, plot, errors that say what is accepted."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mark.cli import main


@pytest.fixture()
def trace_file(tmp_path):
    rng = np.random.default_rng(0)
    counts = rng.poisson(150, size=1800)
    counts[900:1200] *= 3  # a burst
    p = tmp_path / "t.txt"
    p.write_text("\n".join(map(str, counts)) + "\n")
    return p


def test_simulate_writes_the_documented_json_and_plot(trace_file, tmp_path, capsys) -> None:
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    code = main(["simulate", "--trace", str(trace_file), "--policy", "mark", "--slo-ms", "250",
                 "--scale", "2", "--json", str(out), "--plot", str(png)])
    assert code == 0
    doc = json.loads(out.read_text())
    for key in ("policy", "requests", "slo_attainment", "latency_ms", "cost_usd",
                "cost_per_million_usd", "spill_share", "wall_seconds"):
        assert key in doc
    assert set(doc["latency_ms"]) >= {"p50", "p98", "p99"}
    assert set(doc["cost_usd"]) >= {"total", "on_demand", "spot", "faas"}
    assert doc["policy"] == "mark" and doc["requests"] > 2 * 150 * 1800 * 0.9
    assert doc["slo_ms"] == 250
    assert png.stat().st_size > 10_000
    assert "SLO attainment" in capsys.readouterr().out


@pytest.mark.parametrize("policy", ["sagemaker", "lambda", "batch", "mark-released", "hindsight",
                                    "oracle"])
def test_every_policy_runs_from_the_cli(trace_file, tmp_path, policy: str) -> None:
    out = tmp_path / f"{policy}.json"
    assert main(["simulate", "--trace", str(trace_file), "--policy", policy, "--spot",
                 "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["policy"] == ("hindsight" if policy == "oracle" else policy)  # oracle: an alias
    assert 0 < doc["lower_bound_usd"] <= doc["cost_usd"]["total"]


def test_bad_input_is_reported(trace_file, capsys) -> None:
    assert main(["simulate", "--trace", str(trace_file), "--policy", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown policy 'nope'" in err and "sagemaker" in err and "oracle" in err
    assert main(["simulate", "--trace", "/no/such/file", "--policy", "mark"]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["simulate", "--trace", str(trace_file), "--profile", "bogus"]) == 2
    assert "shipped" in capsys.readouterr().err
