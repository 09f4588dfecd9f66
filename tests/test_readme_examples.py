"""The README's example commands run as written, on the data the project ships.

The commands are read from the README itself, so an example that drifts from the code fails
here. They run in an empty folder (so nothing beside the repository can be found by
accident); ``mark load`` examples go to the session's running cluster instead of the
README's port 8080. ``mark up`` and ``mark profile`` start instances of their own and are
covered by ``test_cli_up.py`` and ``test_cli_profile.py``.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mark.cluster import ClusterThread

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
EXAMPLES = re.findall(r"^ {4}\.venv/bin/mark (.+)$", README, flags=re.MULTILINE)
OFFLINE = [e for e in EXAMPLES if e.split()[0] in ("forecast", "simulate")]
LOAD = [e for e in EXAMPLES if e.split()[0] == "load"]


def run(example: str, cwd: Path, **replace: str) -> subprocess.CompletedProcess[str]:
    argv = shlex.split(example)
    argv = [replace.get(a, a) for a in argv]
    return subprocess.run([sys.executable, "-m", "mark", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def json_out(example: str, cwd: Path) -> dict:
    argv = shlex.split(example)
    return json.loads((cwd / argv[argv.index("--json") + 1]).read_text())


def test_the_readme_has_the_examples() -> None:
    assert {e.split()[0] for e in EXAMPLES} == {"up", "load", "profile", "forecast", "simulate",
                                              "deploy", "teardown"}
    assert any("--trace twitter-2021-08-week1" in e for e in OFFLINE + LOAD)
    assert not re.search(r"\.\./shared", README)  # nothing outside the repository


@pytest.mark.slow
@pytest.mark.parametrize("example", OFFLINE, ids=[e.split()[0] for e in OFFLINE])
def test_offline_example_runs_on_shipped_data(example: str, tmp_path: Path) -> None:
    out = run(example, tmp_path)
    assert out.returncode == 0, out.stderr
    doc = json_out(example, tmp_path)
    if example.startswith("simulate"):
        assert doc["requests"] > 38_000_000  # the whole shipped week
        assert doc["slo_attainment"] >= 0.98
        assert (tmp_path / "sim.png").stat().st_size > 0
    else:
        assert len(doc["mape"]) == 10


@pytest.mark.triton
@pytest.mark.parametrize("example", LOAD, ids=[f"load-{i}" for i in range(len(LOAD))])
def test_load_example_runs_against_the_cluster(example: str, main_cluster: ClusterThread,
                                               tmp_path: Path) -> None:
    out = run(example, tmp_path, **{"http://127.0.0.1:8080": main_cluster.url})
    assert out.returncode == 0, out.stderr
    doc = json_out(example, tmp_path)
    assert doc["requests"] > 100 and doc["errors"] == 0 and doc["lost"] == 0
