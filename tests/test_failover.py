"""Killing an instance under load loses no request."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest

from mark.cluster import ClusterThread
from mark.core.config import ControlConfig, FleetConfig, FrontendConfig, MarkConfig, ModelConfig
from mark.loadgen import LoadClient

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def two_instances(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterThread]:
    cfg = MarkConfig(
        models=[ModelConfig(name="identity", kind="identity")],
        control=ControlConfig(enabled=False),
        fleet=FleetConfig(instances=2, health_interval_s=0.5),
        frontend=FrontendConfig(port=0),
        runtime_dir=tmp_path_factory.mktemp("failover"),
    )
    c = ClusterThread(cfg)
    yield c
    c.stop()


def test_killing_an_instance_during_load_loses_no_request(two_instances: ClusterThread) -> None:
    victim = next(iter(two_instances.cluster.fleet.instances.values()))
    pid = victim.extra["pid"]

    async def drive() -> tuple[int, int, int, int]:
        async with LoadClient(two_instances.url, "identity", timeout_s=10) as client:
            load = asyncio.create_task(client.closed_loop(concurrency=16, duration_s=3.0,
                                                          warmup_s=0.2))
            await asyncio.sleep(1.2)
            # Freeze the instance (its process group: the wrapper, Triton, the stubs) until
            # the front end has a request in flight on it, then kill it: the kill always hits
            # a request (the identity model answers in a millisecond, and the front end
            # forgets an instance the moment its process exits, so an unfrozen kill on a
            # loaded host could hit nothing, and the retry path would go untested).
            os.killpg(pid, signal.SIGSTOP)
            try:
                for _ in range(2000):
                    if two_instances.cluster.front.inflight.get(victim.id, 0) > 0:
                        break
                    await asyncio.sleep(0.001)
            finally:
                os.killpg(pid, signal.SIGKILL)
            res = await load
        return res.sent, res.ok, sum(res.errors.values()), res.lost

    sent, ok, errors, lost = asyncio.run(drive())
    assert sent > 200
    assert (ok, errors, lost) == (sent, 0, 0)
    retried = [t for t in two_instances.cluster.front.timings.records if t.attempts > 1]
    assert retried, "the kill hit no request in flight; the test proved nothing"
    assert all(t.instance != victim.id for t in retried)
    assert victim.id not in two_instances.cluster.fleet.instances
    assert len(two_instances.cluster.fleet.ready("identity")) == 1
