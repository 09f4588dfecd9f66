"""The local backend's process handling: death with the parent, own session, free ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import mark.backends.local as local
from mark.backends.base import LaunchSpec
from mark.backends.local import LocalBackend, free_port, release_port, with_pdeathsig
from mark.core.config import ModelConfig
from mark.core.instances import InstanceState

REPO = Path(__file__).resolve().parents[1]


def _state(pid: int) -> str:
    """The process state letter; "gone" once it was reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def _read(path: str) -> str:
    return Path(path).read_text()


def _wait_for(pred, timeout_s: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def parent_with_child() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    code = textwrap.dedent("""
        import subprocess, sys, time
        from mark.backends.local import with_pdeathsig
        child = subprocess.Popen(with_pdeathsig(["sleep", "60"]), start_new_session=True)
        print(child.pid, flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    yield parent, child
    parent.kill()
    parent.wait()
    if _state(child) not in ("gone", "Z"):
        os.kill(child, signal.SIGKILL)


def test_child_has_its_own_session_and_dies_with_its_parent(
    parent_with_child: tuple[subprocess.Popen[bytes], int],
) -> None:
    parent, child = parent_with_child
    assert _wait_for(lambda: Path(f"/proc/{child}/comm").read_text().strip() == "sleep")
    assert os.getsid(child) == child  # a session of its own: a terminal's Ctrl-C misses it
    assert os.getpgid(child) == child
    parent.kill()  # SIGKILL: the parent gets no chance to clean up
    parent.wait()
    assert _wait_for(lambda: _state(child) in ("gone", "Z"), 5.0), "the child outlived its parent"


def test_wrapper_runs_nothing_when_the_parent_is_already_gone(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    argv = with_pdeathsig(["touch", str(marker)])
    argv[argv.index(str(os.getpid()))] = "1"  # as if the parent died before prctl
    assert subprocess.run(argv, timeout=30).returncode == 1
    assert not marker.exists()
    argv = with_pdeathsig(["touch", str(marker)])
    assert subprocess.run(argv, timeout=30).returncode == 0 and marker.exists()


def test_free_port_never_hands_out_a_port_twice() -> None:
    ports = [free_port() for _ in range(1000)]
    try:
        assert len(set(ports)) == len(ports)
    finally:
        for p in ports:
            release_port(p)


@pytest.mark.triton
async def test_launch_moves_to_another_port_when_its_port_was_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    taken_port = taken.getsockname()[1]
    handed: list[int] = []

    def first_taken(host: str = "127.0.0.1") -> int:
        # the first launch gets a port someone else bound after it was picked
        port = taken_port if not handed else free_port(host)
        handed.append(port)
        return port

    monkeypatch.setattr(local, "free_port", first_taken)
    backend = LocalBackend(tmp_path, [ModelConfig(name="identity", kind="identity")])
    try:
        inst = await backend.launch(LaunchSpec())
        ready = await backend.wait_ready(inst.id, 60)
        assert ready.state == InstanceState.READY
        assert handed[0] == taken_port and len(handed) == 2
        assert ready.url == f"http://127.0.0.1:{handed[1]}"
        assert "already in use" in _read(inst.extra["log"])
    finally:
        await backend.close()
        taken.close()
