"""The front end's answers when an instance misbehaves (scripted raw HTTP instances)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from frontend.protocol import ModelMetadata
from mark.cluster import ClusterThread
from mark.core.config import ControlConfig, FleetConfig, FrontendConfig, MarkConfig, ModelConfig
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
                     control=ControlConfig(enabled=False),
                     fleet=FleetConfig(instances=0, health_interval_s=3600),
                     frontend=FrontendConfig(port=0, workers=1, attempt_timeout_slo_factor=1.0,
                                             attempt_timeout_floor_s=0.1,
                                             attempt_timeout_ceiling_s=0.5),
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


async def _scripted(reply: bytes | None, delay_s: float = 0.0, reset: bool = False) -> str:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readuntil(b"\r\n\r\n")
        await asyncio.sleep(delay_s)
        if reply is not None:
            w.write(reply)
            await w.drain()
        if reset:  # linger 0: the connection ends with a reset, not a clean close
            await asyncio.sleep(0.05)
            w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                  struct.pack("ii", 1, 0))
            w.transport.abort()
            return
        w.close()

    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    _servers.append(srv)
    return f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"


def _with_instances(c: ClusterThread, *replies: tuple[bytes | None, float] | tuple[bytes, float, bool]
                    ) -> list[str]:
    """Replace the fleet (on the front end's loop) by scripted instances, ids fake-0, fake-1..."""
    insts = []
    for n, spec in enumerate(replies):
        url = c.call(_scripted(*spec))
        insts.append(Instance(id=f"fake-{n}", url=url, instance_type="fake",
                              market=Market.ON_DEMAND, state=InstanceState.READY,
                              launched_at_s=0.0, models=("identity",)))

    async def replace() -> None:
        fleet = c.cluster.fleet
        for iid in list(fleet.instances):
            fleet.remove(iid)
        for inst in insts:
            fleet.upsert(inst)

    c.call(replace())
    return [i.id for i in insts]


def _infer_with_headers(url: str) -> tuple[int, dict[str, str], dict[str, str]]:
    async def go() -> tuple[int, dict[str, str], dict[str, str]]:
        async with aiohttp.ClientSession() as s, s.post(
                f"{url}/v2/models/identity/infer", data=BODY) as r:
            return r.status, dict(r.headers), json.loads(await r.read())

    return asyncio.run(go())


def _infer(url: str) -> tuple[int, dict[str, str]]:
    status, _, doc = _infer_with_headers(url)
    return status, doc


def test_malformed_instance_reply_is_502(front: ClusterThread) -> None:
    _with_instances(front, (b"garbage\r\n\r\n", 0.0))
    status, doc = _infer(front.url)
    assert status == 502 and "malformed HTTP reply" in doc["error"]


def test_instance_timeout_is_504(front: ClusterThread) -> None:
    _with_instances(front, (None, 2.0))
    status, doc = _infer(front.url)
    assert status == 504 and re.search(r"did not answer within 0\.\d+ s", doc["error"]), doc


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


def test_the_retry_gets_what_is_left_of_the_deadline(front: ClusterThread) -> None:
    # the request's deadline is 0.5 s (SLO 500 ms x 1.0, within floor 0.1 and ceiling 0.5);
    # fake-0 fails after 0.35 s, so the retry on the silent fake-1 has ~0.15 s, not 0.5 s
    broken = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"
    _with_instances(front, (broken, 0.35), (None, 3.0))
    t0 = time.perf_counter()
    status, doc = _infer(front.url)
    elapsed = time.perf_counter() - t0
    assert status == 504, doc
    assert elapsed < 0.75, f"504 after {elapsed:.2f} s; the deadline was 0.5 s after arrival"


def test_close_delimited_reply_cut_by_a_reset_is_retried_elsewhere(front: ClusterThread) -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"outputs\": ["
    good = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    ids = _with_instances(front, (cut, 0.0, True), (good, 0.0))
    status, headers, doc = _infer_with_headers(front.url)  # WRR picks fake-0 first
    assert status == 200 and doc == {}, doc
    assert headers["x-mark-instance"] == ids[1]
    assert front.cluster.fleet.instances[ids[0]].state == InstanceState.UNHEALTHY


def test_close_delimited_reply_cut_by_a_reset_alone_is_502(front: ClusterThread) -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"outputs\": ["
    (iid,) = _with_instances(front, (cut, 0.0, True))
    status, doc = _infer(front.url)
    assert status == 502 and "connection closed" in doc["error"], doc
    assert front.cluster.fleet.instances[iid].state == InstanceState.UNHEALTHY


def test_an_instance_that_leaves_the_fleet_leaves_no_pool(front: ClusterThread) -> None:
    good = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    (old,) = _with_instances(front, (good, 0.0))
    old_url = front.cluster.fleet.instances[old].url
    assert _infer(front.url)[0] == 200
    assert old_url in front.cluster.upstream._pools  # the request left a pool behind
    _with_instances(front, (good, 0.0))
    assert old_url not in front.cluster.upstream._pools
