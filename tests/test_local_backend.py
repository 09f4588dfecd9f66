"""The local backend: process handling (death with the parent, own session, free ports) and
the cloud it emulates (boot delay, per-launch batching settings, spot notices and reclaims)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

import mark.backends.local as local
from mark.backends.base import LaunchSpec, make_backend
from mark.backends.local import (
    LocalBackend,
    free_port,
    release_port,
    with_group_pdeathsig,
    with_pdeathsig,
)
from mark.core.catalogue import load_catalogue
from mark.core.config import FleetConfig, MarkConfig, ModelConfig
from mark.core.errors import Conflict, NotFound
from mark.core.instances import Instance, InstanceState, Market

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


def test_the_group_wrapper_takes_the_commands_children_along_with_its_parent() -> None:
    """A command's own children (Triton's Python-backend stubs) do not get its death signal:
    under :func:`with_group_pdeathsig` the whole group dies with the parent that started it
    (under ``with_pdeathsig`` the grandchild here outlives it); signals the group gets reach
    the command, and the wrapper exits as it did."""
    code = textwrap.dedent("""
        import subprocess, sys, time
        from mark.backends.local import with_group_pdeathsig
        sh = ["sh", "-c", "sleep 60 & echo $!; exec sleep 61"]
        child = subprocess.Popen(with_group_pdeathsig(sh), start_new_session=True,
                                 stdout=subprocess.PIPE)
        print(child.pid, child.stdout.readline().decode().strip(), flush=True)
        time.sleep(60)
    """)
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE)
    assert parent.stdout is not None
    wrapper, grandchild = (int(x) for x in parent.stdout.readline().split())
    try:
        assert os.getpgid(grandchild) == wrapper and os.getsid(wrapper) == wrapper
        assert _state(grandchild) not in ("gone", "Z")
        parent.kill()  # SIGKILL: the parent gets no chance to clean up
        parent.wait()
        assert _wait_for(lambda: _state(grandchild) in ("gone", "Z"), 5.0), (
            "the command's child outlived the parent")
        assert _wait_for(lambda: _state(wrapper) in ("gone", "Z"), 5.0)
    finally:
        for pid in (grandchild, wrapper):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    # SIGTERM to the group ends the command; the wrapper re-raises how it ended
    proc = subprocess.Popen(with_group_pdeathsig(["sleep", "60"]), start_new_session=True)
    assert _wait_for(lambda: any(_comm(p) == "sleep" for p in _kids(proc.pid)))
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=10) == -signal.SIGTERM
    assert subprocess.run(with_group_pdeathsig(["sh", "-c", "exit 3"]), timeout=30,
                          start_new_session=True).returncode == 3


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _kids(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


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


async def _wait_until(pred, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(0.02)
    return False


async def _first_ready_s(url_of, timeout_s: float = 60.0) -> float:  # type: ignore[no-untyped-def]
    """When (monotonic) Triton at ``url_of()`` first answered ready, polled every 20 ms."""
    end = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as http:
        while time.monotonic() < end:
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                async with http.get(f"{url_of()}/v2/health/ready") as r:
                    if r.status == 200:
                        return time.monotonic()
            await asyncio.sleep(0.02)
    raise AssertionError("Triton never became ready")


@pytest.mark.triton
async def test_launch_spec_sets_the_boot_delay_and_the_batching(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path, [ModelConfig(name="identity", kind="identity")],
                           launch_delay_s=30.0)
    try:
        fast = await backend.launch(LaunchSpec(ready_after_s=0, max_batch_size=4,
                                               max_queue_delay_us=1500))
        slow = await backend.launch(LaunchSpec(ready_after_s=2))
        triton_fast, triton_slow, *_ = await asyncio.gather(
            _first_ready_s(lambda: fast.url), _first_ready_s(lambda: slow.url),
            backend.wait_ready(fast.id, 60), backend.wait_ready(slow.id, 60))
        assert fast.state == slow.state == InstanceState.READY
        assert fast.ready_at_s is not None and slow.ready_at_s is not None
        # no emulated boot: ready as soon as Triton is (both poll; allow their periods)
        assert fast.ready_at_s - triton_fast < 0.5
        # a 2 s boot: never before launch + 2 s, and not much after it (or after Triton)
        assert slow.ready_at_s - slow.launched_at_s >= 2.0
        assert slow.ready_at_s < max(slow.launched_at_s + 2.0, triton_slow) + 0.5
        async with aiohttp.ClientSession() as http:
            for inst, mbs, delay in ((fast, 4, 1500), (slow, 32, 0)):
                async with http.get(f"{inst.url}/v2/models/identity/config") as r:
                    cfg = await r.json()
                assert cfg["max_batch_size"] == mbs
                assert int(cfg["dynamic_batching"]["max_queue_delay_microseconds"]) == delay
        assert fast.extra["repository"] != slow.extra["repository"]
    finally:
        await backend.close()


@pytest.mark.triton
async def test_spot_notice_on_request_then_reclaim(tmp_path: Path) -> None:
    cfg = MarkConfig(models=[ModelConfig(name="identity", kind="identity")], runtime_dir=tmp_path,
                     fleet=FleetConfig(launch_delay_s=0, spot_notice_s=1.0))
    notices: list[tuple[str, float]] = []
    exits: list[tuple[str, int]] = []
    backend = make_backend("local", cfg, on_exit=lambda i, code: exits.append((i.id, code)),
                           on_notice=lambda i, at: notices.append((i.id, at)))
    assert isinstance(backend, LocalBackend)
    try:
        spot = await backend.launch(LaunchSpec("c5.large", Market.SPOT))
        ondemand = await backend.launch(LaunchSpec("c5.large", Market.ON_DEMAND))
        nomarket = await backend.launch(LaunchSpec("local", Market.SPOT))
        with pytest.raises(Conflict, match=r"is on_demand: only spot instances get"):
            await backend.notice(ondemand.id)
        with pytest.raises(Conflict, match=r"type 'local', which has no spot market in the "
                           r"catalogue \(types: \[.*'c5.large'"):
            await backend.notice(nomarket.id)
        with pytest.raises(NotFound, match=rf"no live instance 'nope'; live: \[.*'{spot.id}'"):
            await backend.notice("nope")
        await backend.terminate(ondemand.id)
        await backend.terminate(nomarket.id)
        interruption = backend._interruptions[spot.id]  # the catalogue's rate: months away
        await backend.wait_ready(spot.id, 60)
        pid = spot.extra["pid"]

        t0 = backend.clock.now()
        at = await backend.notice(spot.id)
        assert t0 + 1.0 <= at <= backend.clock.now() + 1.0
        assert spot.state == InstanceState.NOTICE and notices == [(spot.id, at)]
        assert await backend.notice(spot.id) == at and len(notices) == 1  # the same reclaim
        await asyncio.sleep(0)
        assert interruption.cancelled()  # the pending random one is off
        assert _state(pid) not in ("gone", "Z")  # still serves until the reclaim
        assert await _wait_until(lambda: bool(exits), 10.0), "no on_exit after the reclaim"
        assert backend.clock.now() >= at
        assert exits == [(spot.id, -signal.SIGKILL)] and spot.state == InstanceState.TERMINATED
        assert spot.ended_at_s is not None and spot.ended_at_s >= at
        assert await _wait_until(lambda: _state(pid) == "gone", 5.0)
        with pytest.raises(NotFound, match="no live instance"):
            await backend.notice(spot.id)
    finally:
        await backend.close()


@pytest.mark.triton
async def test_spot_notices_arrive_on_their_own_at_the_scaled_rate(tmp_path: Path) -> None:
    rate = load_catalogue().instance("c5.large").spot.interruption_rate_per_s
    cfg = MarkConfig(models=[ModelConfig(name="identity", kind="identity")], runtime_dir=tmp_path,
                     fleet=FleetConfig(launch_delay_s=0, spot_notice_s=0.5,
                                       spot_interruption_scale=2.0 / rate))  # mean 0.5 s
    notices: list[tuple[Instance, float]] = []
    exits: list[tuple[str, int]] = []
    backend = make_backend("local", cfg, on_exit=lambda i, code: exits.append((i.id, code)),
                           on_notice=lambda i, at: notices.append((i, at)))
    try:
        spot = await backend.launch(LaunchSpec("c5.large", Market.SPOT))
        assert await _wait_until(lambda: bool(notices), 10.0), "no notice came"
        inst, at = notices[0]
        assert inst is spot and inst.state == InstanceState.NOTICE
        assert at == pytest.approx(spot.extra["interruption_at_s"] + 0.5, abs=0.2)
        assert await _wait_until(lambda: bool(exits), 10.0), "no on_exit after the reclaim"
        assert exits[0][0] == spot.id and spot.state == InstanceState.TERMINATED
    finally:
        await backend.close()


async def test_close_cancels_pending_notices_and_reclaims(tmp_path: Path) -> None:
    # no process needed: timers are the backend's own tasks; a fake Instance stands in
    backend = LocalBackend(tmp_path, [ModelConfig(name="identity", kind="identity")])
    inst = Instance("x", "c5.large", Market.SPOT, InstanceState.READY, backend.clock.now())
    backend._instances["x"] = inst
    backend._schedule_interruption(inst)
    pending = backend._interruptions["x"]
    await backend.close()
    assert pending.cancelled()
