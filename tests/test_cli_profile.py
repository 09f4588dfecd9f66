"""`mark profile` measures a live Triton instance and writes a loadable profile."""

from __future__ import annotations

from pathlib import Path

import pytest

from mark.cli import main
from mark.core.profiles import load_profile

pytestmark = pytest.mark.triton


def test_profile_measures_a_live_instance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "mark.yaml"
    cfg.write_text("models:\n  - {name: identity, kind: identity}\n"
                   f"runtime_dir: {tmp_path / 'rt'}\n")
    out = tmp_path / "identity.json"
    code = main(["profile", "--model", "identity", "--config", str(cfg), "--batches", "1,8",
                 "--repeats", "5", "--instance-type", "c5.large", "--json", str(out)])
    assert code == 0
    prof = load_profile(out)
    t1, t8 = prof.service_s("c5.large", 1), prof.service_s("c5.large", 8)
    assert 0 < t1 < 0.05 and 0 < t8 < 0.05  # a trivial model: well under 50 ms per batch
    assert "ms/request" in capsys.readouterr().out


def test_profile_refuses_unknown_model_and_bad_batches(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "--model", "nope"]) == 2
    assert "unknown model 'nope'; configured: ['minilm']" in capsys.readouterr().err
    assert main(["profile", "--model", "minilm", "--batches", "1,64"]) == 2
    assert "outside 1..32" in capsys.readouterr().err
