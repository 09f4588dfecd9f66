"""`mark load` against the running cluster writes the documented JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mark.cli import main
from mark.cluster import ClusterThread

pytestmark = pytest.mark.triton


def test_mark_load_rate_writes_json(main_cluster: ClusterThread, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "load.json"
    code = main(["load", "--url", main_cluster.url, "--model", "identity", "--rate", "100",
                 "--duration", "2", "--json", str(out)])
    assert code == 0
    doc = json.loads(out.read_text())
    assert set(doc) >= {"requests", "ok", "errors", "lost", "throughput_rps", "latency_ms"}
    assert set(doc["latency_ms"]) == {"p50", "p90", "p98", "p99"}
    assert 120 <= doc["requests"] <= 280  # Poisson(200)
    assert doc["ok"] == doc["requests"] and doc["errors"] == 0 and doc["lost"] == 0
    assert 0 < doc["latency_ms"]["p50"] <= doc["latency_ms"]["p99"]
    assert "p98" in capsys.readouterr().out


def test_mark_load_unknown_model_is_a_clear_error(main_cluster: ClusterThread, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["load", "--url", main_cluster.url, "--model", "nope", "--rate", "10",
                 "--duration", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "HTTP 404" in err and "known models" in err


def test_mark_load_replays_a_trace_faster(main_cluster: ClusterThread, tmp_path: Path) -> None:
    trace = tmp_path / "trace.txt"
    trace.write_text("\n".join(["30"] * 10 + ["0"] * 10) + "\n")
    out = tmp_path / "load.json"
    # 2 s at x4 replays the trace's first 8 s: 240 requests
    assert main(["load", "--url", main_cluster.url, "--model", "identity", "--trace", str(trace),
                 "--duration", "2", "--speedup", "4", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["requests"] == 240 and doc["ok"] == 240
