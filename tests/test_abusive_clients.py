"""Slow and abusive clients: the front end closes them on its timeouts and keeps serving.

One front end (one process, its timeouts this test's short ``frontend.request_timeout_s``
and ``keep_alive_timeout_s``) over a real
Triton instance of the ``identity`` model. Against it: request heads that never finish (a
byte every 0.2 s), bodies sent a byte every 0.2 s (to a real route and to one that answers
404 before the body is in), and a couple of thousand idle connections, fresh and kept alive
after a request. Meanwhile an ordinary client keeps sending inferences and health checks,
each of which must be answered, quickly. Sanic's own timers restart on every byte, so
before :class:`frontend.app.FrontendProtocol` the slow clients held their connections for
as long as they kept dripping.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import aiohttp
import pytest

import frontend.app as app_module
from mark.cluster import ClusterThread
from mark.core.config import ControlConfig, FleetConfig, FrontendConfig, MarkConfig, ModelConfig

pytestmark = pytest.mark.triton

REQUEST_S = 2.0  # a request's head and body must arrive within this of its first byte
KEEP_ALIVE_S = 5.0  # an idle connection is closed after this (opening them all takes ~2 s)
# Sanic checks a connection's timers every min(timeouts) / 2; after a 408 a late body gets
# frontend.app._DRAIN_GRACE_S more; a loaded 2-core machine adds scheduling slack
CHECK_S = min(REQUEST_S, KEEP_ALIVE_S) / 2
SLACK_S = 1.5
BURST = 500  # connections opened at once: past Sanic's default listen backlog (100)
DRIP_S = 0.2  # a slow client's pause between bytes: well inside any idle timer
INFER = (b'{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], '
         b'"data": [0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]}]}')


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterThread]:
    cfg = MarkConfig(
        models=[ModelConfig(name="identity", kind="identity")],
        control=ControlConfig(enabled=False),
        fleet=FleetConfig(instances=1),
        frontend=FrontendConfig(port=0, workers=1, request_timeout_s=REQUEST_S,
                                keep_alive_timeout_s=KEEP_ALIVE_S),
        runtime_dir=tmp_path_factory.mktemp("abusive"),
    )
    c = ClusterThread(cfg)
    yield c
    c.stop()


def test_create_app_sets_the_timeouts(cluster: ClusterThread) -> None:
    config = cluster.cluster._server.app.config
    assert (config.REQUEST_TIMEOUT, config.KEEP_ALIVE_TIMEOUT) == (REQUEST_S, KEEP_ALIVE_S)
    fcfg = cluster.cluster.cfg.frontend
    # Sanic's own 503 never comes before an inference's deadline (504, the front end's)
    assert fcfg.attempt_timeout_ceiling_s < config.RESPONSE_TIMEOUT
    # the defaults: a slow client is cut within a minute, an idle one too
    defaults = FrontendConfig()
    assert 0 < defaults.request_timeout_s <= 60 and 0 < defaults.keep_alive_timeout_s <= 60
    assert cluster.cluster._server.app.ctx.listen_backlog == fcfg.listen_backlog >= 1024


def _address(c: ClusterThread) -> tuple[str, int]:
    host, port = c.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


@dataclass
class Outcome:
    label: str
    status: int | None = None  # of the reply, when one came
    closed_after_s: float | None = None  # from the first byte sent
    sent: int = 0
    errors: list[str] = field(default_factory=list)


async def _drip(addr: tuple[str, int], label: str, first: bytes, drip: bytes,
                limit_s: float) -> Outcome:
    """Send ``first`` at once, then ``drip`` a byte every DRIP_S, reading what comes back;
    stop at EOF (the server closed) or after ``limit_s``."""
    out = Outcome(label)
    reader, writer = await asyncio.open_connection(*addr)
    t0 = time.monotonic()
    reply = b""

    async def read_all() -> None:
        nonlocal reply
        while chunk := await reader.read(4096):
            reply += chunk

    reading = asyncio.create_task(read_all())
    try:
        writer.write(first)
        out.sent = len(first)
        for i in range(len(drip)):
            if reading.done():
                break
            await asyncio.sleep(DRIP_S)
            if reading.done() or time.monotonic() - t0 > limit_s:
                break
            try:
                writer.write(drip[i : i + 1])
                await writer.drain()
                out.sent += 1
            except (ConnectionError, OSError) as exc:
                out.errors.append(repr(exc))
                break
        try:
            await asyncio.wait_for(asyncio.shield(reading), max(0.0, limit_s - (time.monotonic() - t0)))
        except TimeoutError:
            pass
        except (ConnectionError, OSError) as exc:
            out.errors.append(repr(exc))
        if reading.done():
            out.closed_after_s = time.monotonic() - t0
    finally:
        reading.cancel()
        writer.close()
    if reply.startswith(b"HTTP/1.1 "):
        out.status = int(reply[9:12])
    return out


@dataclass
class Served:
    latencies_s: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)


async def _ordinary_client(url: str, stop: asyncio.Event, served: Served) -> None:
    """An inference and a health check, every 50 ms, each on a fresh connection (a client
    that pools would not show whether new connections are still accepted)."""
    timeout = aiohttp.ClientTimeout(total=10)
    while not stop.is_set():
        async with aiohttp.ClientSession(timeout=timeout) as s:
            for method, path, body in (("POST", "/v2/models/identity/infer", INFER),
                                       ("GET", "/v2/health/live", None)):
                t0 = time.monotonic()
                async with s.request(method, url + path, data=body) as r:
                    await r.read()
                    served.statuses.append(r.status)
                served.latencies_s.append(time.monotonic() - t0)
        await asyncio.sleep(0.05)


def _check_served(served: Served, label: str) -> None:
    lat = sorted(served.latencies_s)
    assert lat, f"{label}: the ordinary client sent nothing"
    assert set(served.statuses) == {200}, f"{label}: {sorted(set(served.statuses))}"
    p50, worst = lat[len(lat) // 2], lat[-1]
    print(f"{label}: {len(lat)} ordinary requests, p50 {p50 * 1000:.1f} ms, "
          f"max {worst * 1000:.1f} ms")
    assert p50 < 0.25 and worst < 2.0, f"{label}: p50 {p50:.3f} s, max {worst:.3f} s"


def test_slow_heads_and_bodies_get_408_and_are_closed_while_others_are_served(
        cluster: ClusterThread) -> None:
    addr = _address(cluster)
    head = (b"POST /v2/models/identity/infer HTTP/1.1\r\nhost: x\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n" % len(INFER))
    miss = head.replace(b"/v2/models/identity/infer", b"/no/such/route")
    limit_s = REQUEST_S + CHECK_S + 1.0 + SLACK_S + 2.0  # past it the test gives up
    n = 20

    async def run() -> tuple[list[Outcome], Served]:
        served = Served()
        stop = asyncio.Event()
        ordinary = asyncio.create_task(_ordinary_client(cluster.url, stop, served))
        await asyncio.sleep(0.3)
        abusers = (
            # headers that never finish: a byte at a time, for ever (the drip outlasts them)
            [_drip(addr, "slow head", b"", head * 4, limit_s) for _ in range(n)]
            # a whole head at once, then the body a byte at a time
            + [_drip(addr, "slow body", head + b"\r\n", INFER, limit_s) for _ in range(n)]
            # a 404 answered before the body: Sanic drains the rest of the body after it
            + [_drip(addr, "slow body, 404", miss + b"\r\n", INFER, limit_s)
               for _ in range(n // 4)]
        )
        outcomes = await asyncio.gather(*abusers)
        stop.set()
        await ordinary
        return outcomes, served

    outcomes, served = asyncio.run(run())
    deadline_s = REQUEST_S + CHECK_S + app_module._DRAIN_GRACE_S + SLACK_S
    for o in outcomes:
        assert not o.errors or o.closed_after_s is not None, (o.label, o.errors)
        assert o.closed_after_s is not None, f"{o.label}: still open after {limit_s} s ({o})"
        assert REQUEST_S <= o.closed_after_s <= deadline_s, (o.label, o.closed_after_s)
        # it did not finish sending: the drip was cut off, not completed
        assert o.sent < len(head) * 4 if o.label == "slow head" else o.sent < len(head) + 2 + len(
            INFER), o
        expected = 404 if o.label.endswith("404") else 408
        assert o.status == expected, (o.label, o.status)
    by_label: dict[str, list[float]] = {}
    for o in outcomes:
        by_label.setdefault(o.label, []).append(o.closed_after_s or 0.0)
    for label, times in by_label.items():
        print(f"{label}: {len(times)} closed after {min(times):.2f}-{max(times):.2f} s")
    _check_served(served, "during slow clients")
    # and the front end is fine afterwards
    health = asyncio.run(_one(cluster.url + "/v2/health/live"))
    assert health == 200


async def _one(url: str) -> int:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_thousands_of_idle_connections_are_closed_on_the_keep_alive_timeout(
        cluster: ClusterThread) -> None:
    """Half the connections send nothing, half one request and then nothing (kept alive):
    all are open at once, all are closed by the server on its keep-alive timeout, and an
    ordinary client is served meanwhile. The front end runs in this process, so its
    descriptors are counted here too: back to where they were."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    # each connection costs two descriptors here (client and server side)
    n = min(2000, (soft - 500) // 2)
    if n < 200:
        pytest.skip(f"descriptor limit {soft} too low for a meaningful count")
    addr = _address(cluster)
    get = b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n"
    fds_before = _open_fds()

    async def one(i: int, opened: asyncio.Event) -> tuple[float, float | None, bool]:
        """(seconds to connect, seconds idle until the server closed it or None, whether
        its request, if it sent one, was answered)."""
        t_connect = time.monotonic()
        reader, writer = await asyncio.open_connection(*addr)
        t0 = time.monotonic()
        connect_s = t0 - t_connect
        answered = False
        try:
            if i % 2:
                writer.write(get)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                answered = head.startswith(b"HTTP/1.1 200")
                t0 = time.monotonic()  # idle from here
            opened.set()
            try:
                rest = await asyncio.wait_for(reader.read(1), KEEP_ALIVE_S + CHECK_S + 10)
            except TimeoutError:
                return connect_s, None, answered
            except ConnectionError:
                rest = b""
            return connect_s, (time.monotonic() - t0) if rest == b"" else None, answered
        finally:
            writer.close()

    async def run() -> tuple[list[tuple[float, float | None, bool]], Served, int, float]:
        served = Served()
        stop = asyncio.Event()
        ordinary = asyncio.create_task(_ordinary_client(cluster.url, stop, served))
        t_open = time.monotonic()
        tasks = []
        for start in range(0, n, BURST):  # bursts within the listen backlog, not Sanic's 100
            events = [asyncio.Event() for _ in range(start, min(n, start + BURST))]
            tasks += [asyncio.create_task(one(i, ev)) for i, ev in zip(
                range(start, start + len(events)), events, strict=True)]
            await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in events)), 30)
        opened_s = time.monotonic() - t_open
        peak = _open_fds()
        await asyncio.sleep(0.5)  # served while all are open
        results = await asyncio.gather(*tasks)
        stop.set()
        await ordinary
        return results, served, peak, opened_s

    results, served, peak, opened_s = asyncio.run(run())
    closed = [d for _, d, _ in results if d is not None]
    # a handshake lost to a full accept queue costs its client a 1 s SYN retry
    retried = sum(c >= 1.0 for c, _, _ in results)
    assert retried <= n // 100, f"{retried} of {n} connects took over 1 s (SYN retries)"
    print(f"{n} idle connections opened in {opened_s:.2f} s; descriptors here {fds_before} -> "
          f"{peak} at the peak; closed by the server after "
          f"{min(closed, default=0):.2f}-{max(closed, default=0):.2f} s idle")
    assert peak - fds_before >= n, f"not all open at once (opening took {opened_s:.2f} s)"
    assert all(a for i, (_, _, a) in enumerate(results) if i % 2), "a kept-alive request failed"
    assert len(closed) == n, f"{n - len(closed)} connections were not closed by the server"
    # (the server's timer starts at accept, a little before this side sees the connection)
    assert min(closed) >= KEEP_ALIVE_S - 1.0, "closed well before the keep-alive timeout"
    assert max(closed) <= KEEP_ALIVE_S + CHECK_S + SLACK_S + 1.0, max(closed)
    _check_served(served, f"during {n} idle connections")
    end = time.monotonic() + 5
    while _open_fds() > fds_before + 10 and time.monotonic() < end:
        time.sleep(0.1)
    assert _open_fds() <= fds_before + 10, (fds_before, _open_fds())
