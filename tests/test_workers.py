"""Several front-end processes on one port, following the control plane's fleet."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from frontend.app import FrontEnd
from frontend.fleet import Fleet
from frontend.upstream import Upstream
from frontend.worker import follow
from mark.cluster import ClusterThread
from mark.core.config import ControlConfig, FleetConfig, FrontendConfig, MarkConfig, ModelConfig
from mark.core.instances import Instance, InstanceState, Market

BODY = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                               "data": [1.0] * 16}]}).encode()


def _inst(iid: str, state: InstanceState = InstanceState.READY) -> Instance:
    return Instance(id=iid, url=f"http://127.0.0.1:1/{iid}", instance_type="t",
                    market=Market.SPOT, state=state, launched_at_s=1.0, capacity_rps=5.0,
                    models=("m",))


MODEL_M = ModelConfig(name="m", kind="identity")


def control_fleet() -> Fleet:
    """The control plane's fleet, publishing model ``m`` as the cluster does."""
    fleet = Fleet(["m"])
    fleet.model_docs["m"] = MODEL_M.model_dump(mode="json")
    return fleet


def front_of(fleet: Fleet) -> FrontEnd:
    """A worker's front end around ``fleet`` (what ``follow`` applies snapshots to)."""
    return FrontEnd(MarkConfig(models=[MODEL_M]), fleet, Upstream())


def test_auto_worker_count_leaves_instances_their_cores() -> None:
    cfg = MarkConfig(fleet=FleetConfig(instances=2))  # minilm, 2 torch threads each
    assert cfg.frontend_workers(cpu_count=2) == 1
    assert cfg.frontend_workers(cpu_count=8) == 4
    assert MarkConfig(frontend=FrontendConfig(workers=3)).frontend_workers(cpu_count=2) == 3


async def test_worker_follows_snapshot_file(tmp_path: Path) -> None:
    control, worker = control_fleet(), Fleet(["m"])
    path = tmp_path / "fleet.json"
    control.upsert(_inst("a"))
    control.write_snapshot(path)
    task = asyncio.create_task(follow(front_of(worker), path, period_s=0.01))
    await asyncio.sleep(0.05)
    assert [i.id for i in worker.ready("m")] == ["a"]
    assert worker.instances["a"].market == Market.SPOT
    control.upsert(_inst("b"))
    control.remove("a")
    control.write_snapshot(path)
    await asyncio.sleep(0.05)
    assert [i.id for i in worker.ready("m")] == ["b"]
    # a failure the worker saw itself is not undone by an unchanged snapshot
    worker.set_state("b", InstanceState.UNHEALTHY)
    control.upsert(_inst("c"))
    control.write_snapshot(path)
    await asyncio.sleep(0.05)
    assert [i.id for i in worker.ready("m")] == ["c"]
    task.cancel()


async def test_two_rewrites_within_one_mtime_tick_are_both_seen(tmp_path: Path) -> None:
    control, worker = control_fleet(), Fleet(["m"])
    path = tmp_path / "fleet.json"
    control.upsert(_inst("a"))
    assert control.write_snapshot(path) == 1
    first = os.stat(path)
    task = asyncio.create_task(follow(front_of(worker), path, period_s=0.01))
    try:
        await asyncio.sleep(0.05)
        assert [i.id for i in worker.ready("m")] == ["a"]
        control.remove("a")
        control.upsert(_inst("b"))
        assert control.write_snapshot(path) == 2
        # same size, and the same mtime as if both writes fell in one timestamp tick
        os.utime(path, ns=(first.st_atime_ns, first.st_mtime_ns))
        assert os.stat(path).st_mtime_ns == first.st_mtime_ns
        await asyncio.sleep(0.05)
        assert [i.id for i in worker.ready("m")] == ["b"]
        assert worker.snapshot_seq == 2
    finally:
        task.cancel()


def test_leaving_instances_are_reported_once(tmp_path: Path) -> None:
    control, worker = control_fleet(), Fleet(["m"])
    left: list[str] = []
    worker.on_leave.append(lambda inst: left.append(inst.id))
    control.upsert(_inst("a"))
    control.upsert(_inst("b"))
    worker.apply_snapshot(control.snapshot(1))
    control.remove("a")
    worker.apply_snapshot(control.snapshot(2))
    worker.remove("b")
    worker.remove("b")
    assert left == ["a", "b"]


def _cpu_ticks(pid: int) -> int:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterThread]:
    cfg = MarkConfig(models=[ModelConfig(name="identity", kind="identity")],
                     control=ControlConfig(enabled=False),
                     fleet=FleetConfig(instances=1),
                     frontend=FrontendConfig(port=0, workers=2),
                     runtime_dir=tmp_path_factory.mktemp("workers"))
    c = ClusterThread(cfg)
    yield c
    c.stop()


@pytest.mark.triton
def test_second_worker_serves_on_the_same_port(two_workers: ClusterThread) -> None:
    (proc,) = two_workers.cluster._worker_procs
    before = _cpu_ticks(proc.pid)

    async def many() -> list[int]:
        statuses = []
        for _ in range(400):  # a new connection each time, so the kernel spreads them
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s, \
                    s.post(f"{two_workers.url}/v2/models/identity/infer", data=BODY) as r:
                statuses.append(r.status)
        return statuses

    assert set(asyncio.run(many())) == {200}
    assert _cpu_ticks(proc.pid) - before >= 5, "the worker process served nothing"
    assert proc.returncode is None and proc.pid != os.getpid()


def test_routing_follows_the_instance_states() -> None:
    """Ready and noticed (spot reclaim pending) instances serve, as in the simulator; the
    others get no request."""
    fleet = Fleet(["m"])
    for state in InstanceState:
        fleet.upsert(_inst(state.value, state))
    assert sorted(i.id for i in fleet.ready("m")) == ["notice", "ready"]
    picks = {fleet.pick("m", 1, []).id for _ in range(20)}  # type: ignore[union-attr]
    assert picks == {"notice", "ready"}


async def test_worker_follows_registered_models(tmp_path: Path) -> None:
    """Models registered and deleted (the last one too) reach a worker with the snapshot."""
    control, worker = control_fleet(), Fleet(["m"])
    front = front_of(worker)
    path = tmp_path / "fleet.json"
    extra = ModelConfig(name="n", kind="identity", slo_latency_ms=250)
    control.model_docs["n"] = extra.model_dump(mode="json")
    control.write_snapshot(path)
    task = asyncio.create_task(follow(front, path, period_s=0.01))
    try:
        await asyncio.sleep(0.05)
        assert sorted(front.models) == ["m", "n"] and front.models["n"].slo_latency_ms == 250
        control.model_docs.clear()
        control.write_snapshot(path)
        await asyncio.sleep(0.05)
        assert front.models == {} and worker.models == []
    finally:
        task.cancel()
