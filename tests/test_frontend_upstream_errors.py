"""The front end's answers when an instance misbehaves (scripted raw HTTP instances)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from frontend.protocol import ModelMetadata
from mark.cluster import ClusterThread
from mark.core.config import FleetConfig, FrontendConfig, MarkConfig, ModelConfig
from mark.core.instances import Instance, InstanceState, Market

META = {"name": "identity", "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 16]}],
        "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 16]}]}
BODY = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                               "data": [1.0] * 16}]}).encode()


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterThread]:
    # one process: the tests edit this process's fleet directly (with no local instance,
    # workers="auto" would start a second front-end process that only follows a snapshot)
    cfg = MarkConfig(models=[ModelConfig(name="identity", kind="identity")],
                     fleet=FleetConfig(instances=0, health_interval_s=3600),
                     frontend=FrontendConfig(port=0, upstream_timeout_s=0.5, workers=1),
                     runtime_dir=Path(tmp_path_factory.mktemp("fe-errors")))
    c = ClusterThread(cfg)
    c.cluster.fleet.metadata["identity"] = ModelMetadata.from_triton(META)
    yield c
    c.call(_close_servers())
    c.stop()


_servers: list[asyncio.Server] = []  # closed when the module's front end stops


async def _close_servers() -> None:
    for srv in _servers:
        srv.close()
    _servers.clear()


async def _scripted(reply: bytes | None, delay_s: float = 0.0) -> str:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        await asyncio.sleep(delay_s)
        if reply is not None:
            w.write(reply)
            await w.drain()
        w.close()

    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    _servers.append(srv)
    return f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"


def _with_instances(c: ClusterThread, *replies: tuple[bytes | None, float]) -> list[str]:
    fleet = c.cluster.fleet
    for iid in list(fleet.instances):
        fleet.remove(iid)
    ids = []
    for n, (reply, delay) in enumerate(replies):
        url = c.call(_scripted(reply, delay))
        inst = Instance(id=f"fake-{n}", url=url, instance_type="fake", market=Market.ON_DEMAND,
                        state=InstanceState.READY, launched_at_s=0.0, models=("identity",))
        fleet.upsert(inst)
        ids.append(inst.id)
    return ids


def _infer(url: str) -> tuple[int, dict[str, str]]:
    async def go() -> tuple[int, dict[str, str]]:
        async with aiohttp.ClientSession() as s, s.post(
                f"{url}/v2/models/identity/infer", data=BODY) as r:
            return r.status, json.loads(await r.read())

    return asyncio.run(go())


def test_malformed_instance_reply_is_502(front: ClusterThread) -> None:
    _with_instances(front, (b"garbage\r\n\r\n", 0.0))
    status, doc = _infer(front.url)
    assert status == 502 and "malformed HTTP reply" in doc["error"]


def test_instance_timeout_is_504(front: ClusterThread) -> None:
    _with_instances(front, (None, 2.0))
    status, doc = _infer(front.url)
    assert status == 504 and "did not answer within 0.5 s" in doc["error"]


def test_close_mid_reply_is_retried_on_another_instance(front: ClusterThread) -> None:
    good = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    broken = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"
    ids = _with_instances(front, (broken, 0.0), (good, 0.0))
    for _ in range(2):  # WRR sends one of the two requests to the broken instance first
        status, doc = _infer(front.url)
        assert status == 200, doc
    seen = {t.instance for t in front.cluster.front.timings.records if t.attempts == 2}
    assert seen == {ids[1]}
    assert front.cluster.fleet.instances[ids[0]].state == InstanceState.UNHEALTHY


def test_close_mid_reply_with_no_other_instance_is_502(front: ClusterThread) -> None:
    _with_instances(front, (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{", 0.0))
    status, doc = _infer(front.url)
    assert status == 502 and "closed during the reply" in doc["error"]
