"""`mark up` as a user runs it: it serves, and no instance outlives it however it ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mark.backends.local import free_port

pytestmark = pytest.mark.triton


def _children(pid: int) -> set[int]:
    """All live descendants of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(d.name)] = int(fields[1])
    out: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _argv0(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except OSError:
        return ""


def _start(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cfg = tmp_path / "mark.yaml"
    cfg.write_text(
        "models:\n  - {name: identity, kind: identity}\ncontrol: {enabled: false}\n"
        f"fleet: {{instances: 2}}\nruntime_dir: {tmp_path / 'rt'}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "mark", "up", "--config", str(cfg), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read().decode() if proc.stdout else "exited")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("mark up did not become ready")


def _infer(url: str) -> dict[str, object]:
    body = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                                   "data": [1.0] * 16}]}).encode()
    req = urllib.request.Request(f"{url}/v2/models/identity/infer", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_no_orphan_instance_survives_mark_up(tmp_path: Path, how: signal.Signals) -> None:
    proc, url = _start(tmp_path)
    assert _infer(url)["outputs"]
    kids = _children(proc.pid)
    tritons = [k for k in kids if _argv0(k).endswith("tritonserver")]
    assert len(tritons) == 2
    # with their Python-backend stubs (Triton's children, not told when Triton dies)
    assert len([k for k in kids if _argv0(k).endswith("triton_python_backend_stub")]) == 2
    os.kill(proc.pid, how)
    proc.wait(timeout=30)
    if how != signal.SIGKILL:
        assert proc.returncode == 0, proc.stdout.read().decode() if proc.stdout else ""
    deadline = time.time() + 15
    while time.time() < deadline and any(_alive(k) for k in kids):
        time.sleep(0.1)
    left = [k for k in kids if _alive(k)]
    assert not left, ("orphaned processes survived mark up",
                      {k: Path(f"/proc/{k}/cmdline").read_bytes()[:200] for k in left})
