"""The backend plug point: one registry, the contract, the in-memory fake."""

from __future__ import annotations

import asyncio

import pytest

from mark.backends import BACKENDS, Backend, FakeBackend, LaunchSpec, LocalBackend, make_backend
from mark.cluster import LocalCluster
from mark.core.clock import VirtualClock
from mark.core.config import ControlConfig, FleetConfig, FrontendConfig, MarkConfig, ModelConfig
from mark.core.errors import ConfigError, ServiceUnavailable
from mark.core.instances import Instance, InstanceState, Market


def test_registry_builds_each_backend_and_names_them_on_a_miss(tmp_path) -> None:
    assert {"fake", "local"} <= set(BACKENDS)
    cfg = MarkConfig(runtime_dir=tmp_path, models=[ModelConfig(name="identity", kind="identity")],
                     control=ControlConfig(enabled=False))
    fake = make_backend("fake", cfg)
    assert isinstance(fake, FakeBackend) and isinstance(fake, Backend)
    assert isinstance(make_backend("local", cfg), LocalBackend)
    with pytest.raises(ConfigError, match=r"unknown backend .ec3.; registered: .*fake.*local"):
        make_backend("ec3", cfg)


async def test_fake_keeps_the_contract() -> None:
    clock = VirtualClock(100.0)
    exits: list[tuple[str, int]] = []
    b = FakeBackend(urls=["http://127.0.0.1:1"], clock=clock,
                    on_exit=lambda i, code: exits.append((i.id, code)))
    a = await b.launch(LaunchSpec("c5.large", Market.SPOT, ("m",)))
    assert (a.state, a.market, a.launched_at_s, a.url) == (
        InstanceState.PENDING, Market.SPOT, 100.0, "http://127.0.0.1:1")
    assert (await b.wait_ready(a.id, 1.0)).state == InstanceState.READY
    assert a.ready_at_s == 100.0
    await b.terminate(a.id)
    await b.terminate(a.id)  # idempotent
    await b.terminate("nope")  # unknown: a no-op
    assert a.state == InstanceState.TERMINATED and b.terminated == [a.id]
    c = await b.launch(LaunchSpec())
    b.die(c.id, 137)
    assert exits == [(c.id, 137)]
    with pytest.raises(ServiceUnavailable, match="terminated before"):
        await b.wait_ready(c.id, 1.0)


async def test_fake_readiness_follows_its_delay() -> None:
    clock = VirtualClock()
    b = FakeBackend(ready_delay_s=30.0, clock=clock)
    slow = await b.launch(LaunchSpec())
    fast = await b.launch(LaunchSpec(ready_after_s=3.0))
    waits = [asyncio.create_task(b.wait_ready(i.id, 5.0)) for i in (slow, fast)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waits)  # nothing is ready before its time
    clock.advance_to(10.0)  # a late look: ready at launch + 3 s, not when seen
    await asyncio.sleep(0)
    assert (await waits[1]).ready_at_s == 3.0
    with pytest.raises(ServiceUnavailable, match="not ready within 5 s"):
        await waits[0]
    assert slow.id in b.terminated


async def test_cluster_takes_its_backend_from_the_configuration(tmp_path) -> None:
    cfg = MarkConfig(models=[ModelConfig(name="identity", kind="identity")],
                     control=ControlConfig(enabled=False),
                     fleet=FleetConfig(backend="fake", instances=2),
                     frontend=FrontendConfig(port=0, workers=1), runtime_dir=tmp_path)
    cluster = LocalCluster(cfg)
    await cluster.start()
    try:
        assert isinstance(cluster.backend, FakeBackend)
        assert len(cluster.backend.launched) == 2
        ready: list[Instance] = cluster.fleet.ready("identity")
        assert sorted(i.id for i in ready) == ["fake-1", "fake-2"]
        cluster.backend.die("fake-1")  # the cluster hears of it and stops routing there
        assert [i.id for i in cluster.fleet.ready("identity")] == ["fake-2"]
    finally:
        await cluster.stop()
    assert cluster.backend.terminated == ["fake-2"]
