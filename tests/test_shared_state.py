"""Several front-end processes and the control loop sharing one truth through Redis: a
private redis-server (with its append-only file, as a deployment keeps it), a cluster with
two worker processes, and a second front end alone (``mark up --frontend-only``)."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import requests

from mark.cluster import ClusterThread
from mark.core.config import (
    ControlConfig,
    FleetConfig,
    FrontendConfig,
    FunctionsConfig,
    MarkConfig,
    ModelConfig,
    StateConfig,
)
from mark.core.errors import ConfigError, Conflict
from mark.loadgen import LoadClient, LoadResult
from tests.servers import PrivateRedis, wait_for

BODY = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                    "data": list(range(16))}]}
NEW = {"name": "shared", "kind": "profiled", "profile": "inception-v3", "max_batch_size": 16,
       "instance_types": ["c5.xlarge"]}

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None,
                                reason="redis-server is not installed (CI installs it)")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))  # fsynced: a restart keeps data
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


def config(tmp: Path, url: str, workers: int = 2) -> MarkConfig:
    return MarkConfig(
        models=[ModelConfig(name="base", kind="profiled", profile="inception-v3",
                            max_batch_size=16)],
        fleet=FleetConfig(instances=1, health_interval_s=0.5, launch_delay_s=0.0),
        control=ControlConfig(interval_s=3600.0, types=["c5.xlarge"], min_instances=1),
        faas=FunctionsConfig(port=0, concurrency=32, keep_alive_s=600.0),
        frontend=FrontendConfig(port=0, workers=workers),
        state=StateConfig(backend="redis", url=url, prefix=f"test-{tmp.name}:",
                          timeout_s=0.5),
        runtime_dir=tmp,
    )


@pytest.fixture(scope="module")
def pair(redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory,
         ) -> Iterator[tuple[ClusterThread, ClusterThread]]:
    """The control plane with two worker processes, and a front end alone on another port."""
    cfg = config(tmp_path_factory.mktemp("leader"), redis_server.url)
    leader = ClusterThread(cfg)
    fcfg = cfg.model_copy(deep=True)
    fcfg.runtime_dir = tmp_path_factory.mktemp("follower")
    fcfg.frontend.workers = 1
    follower = ClusterThread(fcfg, role="frontend")
    yield leader, follower
    follower.stop()
    leader.stop()


def load(url: str, model: str, rps: float, seconds: float, seed: int) -> LoadResult:
    rng = np.random.default_rng(seed)
    arrivals = np.sort(rng.uniform(0.0, seconds, rng.poisson(rps * seconds)))

    async def run() -> LoadResult:
        async with LoadClient(url, model, timeout_s=30.0) as client:
            return await client.open_loop(arrivals)

    return asyncio.run(run())


def stored(c: ClusterThread, op: str) -> Any:
    """A read of the cluster's store, on the cluster's own loop."""
    store = c.cluster.store
    assert store is not None
    return c.call(getattr(store, op)())


def counted(c: ClusterThread, model: str) -> int:
    """What the control loop has ingested of ``model``'s arrivals, after a step now."""
    loop = c.cluster.control
    assert loop is not None
    c.call(loop.step())
    return int(loop.models[model].history.sum())


def test_roles_need_a_shared_store(tmp_path: Path) -> None:
    cfg = config(tmp_path, "redis://127.0.0.1:1/0")
    cfg.state.backend = "memory"
    with pytest.raises(ConfigError, match=r"state\.backend: redis"):
        from mark.cluster import LocalCluster
        LocalCluster(cfg, role="frontend")


def test_registered_through_one_served_by_the_other_counts_from_both(
        pair: tuple[ClusterThread, ClusterThread]) -> None:
    leader, follower = pair
    # the follower forwards /admin to the control plane it found in the store
    r = requests.post(follower.url + "/admin/models", json=NEW, timeout=30)
    assert r.status_code == 201, r.text
    wait_for(lambda: any(i["model"] == "shared" and i["state"] == "ready" for i in
                         requests.get(leader.url + "/admin/fleet", timeout=10).json()),
             what="the registered model's instance")
    wait_for(lambda: requests.post(follower.url + "/v2/models/shared/infer", json=BODY,
                                   timeout=10).status_code == 200, what="the follower serving it")
    time.sleep(3.0)  # the requests so far settle
    before = counted(leader, "shared")
    sent = 0
    for url in (leader.url, follower.url) * 15:  # the leader's port: its two processes
        assert requests.post(url + "/v2/models/shared/infer", json=BODY,
                             timeout=10).status_code == 200
        sent += 1
    time.sleep(3.0)  # flushed every 0.25 s; the loop reads seconds settled ~2 s ago
    got = counted(leader, "shared") - before
    now = int(time.time())
    assert got == sent, repr((leader.call(leader.cluster.store.counts("shared", now - 60, now + 1)),
                         list(leader.cluster.control.models["shared"].history[-30:])))
    # the model lives in the store: a new control plane would adopt it; its plan is there
    assert "shared" in stored(leader, "get_models")
    plans = wait_for(lambda: (p := stored(leader, "get_plans")) and "shared" in p and p,
                     what="the plans published")
    assert plans["shared"]["types"]["c5.xlarge"]["capacity_rps"] > 0, plans["shared"]


def test_redis_restart_during_load_loses_nothing_and_resyncs(
        pair: tuple[ClusterThread, ClusterThread], redis_server: PrivateRedis) -> None:
    leader, follower = pair
    before = counted(leader, "base")
    cap = sum(i.capacity_rps for i in leader.cluster.fleet.instances.values()
              if "base" in i.models)

    async def both() -> tuple[LoadResult, LoadResult]:
        async def outage() -> None:
            await asyncio.sleep(1.5)
            redis_server.kill()
            await asyncio.sleep(2.0)
            redis_server.start()

        async def run(url: str, seed: int) -> LoadResult:
            rng = np.random.default_rng(seed)
            arrivals = np.sort(rng.uniform(0.0, 6.0, rng.poisson(0.3 * cap * 6.0)))
            async with LoadClient(url, "base", timeout_s=30.0) as client:
                return await client.open_loop(arrivals)

        a, b, _ = await asyncio.gather(run(leader.url, 1), run(follower.url, 2), outage())
        return a, b

    a, b = asyncio.run(both())
    for res in (a, b):
        assert res.lost == 0 and not res.errors and res.ok == res.sent, res.to_json()
    time.sleep(3.0 + 2.0)  # settled, and the loop's hold after the outage
    # every request counted once, the gap's included (buffered, then sent once)
    assert counted(leader, "base") - before == a.sent + b.sent
    # the fleet view resyncs: a change after the outage reaches the front end alone
    ids = [i.id for i in leader.cluster.fleet.instances.values() if "shared" in i.models]
    assert ids
    r = requests.post(f"{follower.url}/admin/instances/{ids[0]}/drain", timeout=10)
    assert r.status_code == 202, r.text
    wait_for(lambda: ids[0] not in follower.cluster.fleet.instances
             or follower.cluster.fleet.instances[ids[0]].state.value != "ready",
             what="the follower to see the drain")


def test_lost_store_data_is_published_again(pair: tuple[ClusterThread, ClusterThread],
                                            redis_server: PrivateRedis) -> None:
    leader, follower = pair
    redis.Redis(port=redis_server.port).flushall()  # a restart without persistence
    assert stored(leader, "get_fleet") is None
    wait_for(lambda: stored(leader, "get_fleet") is not None, what="the fleet published again")
    wait_for(lambda: "base" in stored(leader, "get_models"), what="the models published again")
    assert requests.post(follower.url + "/v2/models/base/infer", json=BODY,
                         timeout=10).status_code == 200


def test_one_control_loop_per_store(pair: tuple[ClusterThread, ClusterThread],
                                    tmp_path: Path) -> None:
    leader, _ = pair
    lead = leader.cluster.leadership
    assert lead is not None  # (the lock is renewed every third of its expiry, even after a
    wait_for(lambda: stored(leader, "leader") == lead.owner, what="the lock")  # data loss)
    cfg = leader.cluster.cfg.model_copy(deep=True)
    cfg.runtime_dir = tmp_path
    with pytest.raises(Conflict, match="another control loop leads"):
        ClusterThread(cfg)


def test_provisioner_and_a_front_end_alone(redis_server: PrivateRedis, tmp_path: Path) -> None:
    """``mark provisioner`` + ``mark up --frontend-only``: no process does both."""
    cfg = config(tmp_path / "p", redis_server.url, workers=1)
    cfg.state.prefix = "test-split:"
    prov = ClusterThread(cfg, role="provisioner")
    try:
        assert prov.cluster._server is None  # no public port
        fcfg = cfg.model_copy(deep=True)
        fcfg.runtime_dir = tmp_path / "f"
        front = ClusterThread(fcfg, role="frontend")
        try:
            wait_for(lambda: requests.post(front.url + "/v2/models/base/infer", json=BODY,
                                           timeout=10).status_code == 200,
                     what="the front end serving the provisioner's fleet")
            fleet = requests.get(front.url + "/admin/fleet", timeout=10).json()
            assert [i["id"] for i in fleet] == list(prov.cluster.fleet.instances)
            assert front.cluster.control is None and front.cluster.backend is None
        finally:
            front.stop()
    finally:
        prov.stop()
