"""The hot-path upstream client against scripted raw HTTP servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from frontend.upstream import Upstream, UpstreamConnectionError, UpstreamProtocolError, _Conn
from mark.backends.local import free_port
from mark.core.errors import UpstreamTimeout

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + (await reader.readexactly(length) if length else b"")


@pytest.fixture
async def server() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        srv = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(srv)
        return f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"

    yield start
    for srv in servers:
        srv.close()


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def keep_alive(delay_s: float = 0.0, on_request: Callable[[bytes], None] | None = None,
               on_close: Callable[[], None] | None = None) -> Handler:
    """A keep-alive server answering ``{}`` to each request after ``delay_s``; ``on_close``
    runs when the client closes the connection."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while True:
            try:
                req = await read_request(r)
            except asyncio.IncompleteReadError:
                if on_close is not None:
                    on_close()
                return
            if on_request is not None:
                on_request(req)
            await asyncio.sleep(delay_s)
            w.write(ok(b"{}"))
            await w.drain()

    return handler


async def test_keep_alive_reuses_one_connection(server) -> None:  # type: ignore[no-untyped-def]
    conns = 0

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal conns
        conns += 1
        while True:
            try:
                req = await read_request(r)
            except asyncio.IncompleteReadError:
                return
            w.write(ok(b'{"n": %d}' % len(req)))
            await w.drain()

    url = await server(handler)
    up = Upstream()
    for _ in range(5):
        reply = await up.request("POST", f"{url}/v2/models/m/infer", b"x" * 10,
                                 {"Content-Type": "application/json"})
        assert reply.status == 200 and reply.body.startswith(b'{"n": ')
        assert reply.headers["content-type"] == "application/json"
    assert conns == 1
    await up.close()


async def test_chunked_reply_is_reassembled(server) -> None:  # type: ignore[no-untyped-def]
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        await w.drain()

    up = Upstream()
    reply = await up.request("GET", await server(handler) + "/x")
    assert reply.body == b"hello world"
    await up.close()


async def test_body_until_close_is_read(server) -> None:  # type: ignore[no-untyped-def]
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await w.drain()
        w.close()

    up = Upstream()
    reply = await up.request("GET", await server(handler) + "/x")
    assert (reply.status, reply.body) == (200, b"all of it")
    await up.close()


async def test_close_mid_response_is_a_connection_error(server) -> None:  # type: ignore[no-untyped-def]
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
        await w.drain()
        w.close()

    up = Upstream()
    with pytest.raises(UpstreamConnectionError, match="closed during the reply"):
        await up.request("POST", await server(handler) + "/x", b"{}")
    await up.close()


async def test_timeout_is_504_and_connection_dropped(server) -> None:  # type: ignore[no-untyped-def]
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        await asyncio.sleep(5)

    up = Upstream(timeout_s=0.2)
    with pytest.raises(UpstreamTimeout, match=r"did not answer within 0\.(2|1\d*) s") as exc:
        await up.request("POST", await server(handler) + "/x", b"{}")
    assert exc.value.status == 504
    assert not any(p.idle for p in up._pools.values())
    await up.close()


async def test_malformed_reply_is_a_protocol_error(server) -> None:  # type: ignore[no-untyped-def]
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"this is not http\r\n\r\n")
        await w.drain()

    up = Upstream()
    with pytest.raises(UpstreamProtocolError, match="malformed HTTP reply") as exc:
        await up.request("GET", await server(handler) + "/x")
    assert exc.value.status == 502
    await up.close()


async def test_refused_connection_is_a_connection_error() -> None:
    up = Upstream()
    with pytest.raises(UpstreamConnectionError, match="cannot connect"):
        await up.request("GET", f"http://127.0.0.1:{free_port()}/x")


async def test_stale_idle_connection_is_retried_fresh(server) -> None:  # type: ignore[no-untyped-def]
    conns = 0

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal conns
        conns += 1
        await read_request(r)
        w.write(ok(b"{}"))  # claims keep-alive, then closes: an idle timeout on the server
        await w.drain()
        w.close()

    url = await server(handler)
    up = Upstream()
    assert (await up.request("GET", url + "/a")).status == 200
    await asyncio.sleep(0.05)
    assert (await up.request("GET", url + "/b")).status == 200
    assert conns == 2
    await up.close()


async def test_connections_per_instance_are_capped(server) -> None:  # type: ignore[no-untyped-def]
    open_now = peak = 0
    serve = keep_alive(0.02)

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal open_now, peak
        open_now += 1
        peak = max(peak, open_now)
        try:
            await serve(r, w)
        finally:
            open_now -= 1

    url = await server(handler)
    up = Upstream(max_connections=8)
    # a burst of 200 concurrent requests
    replies = await asyncio.gather(*(up.request("GET", f"{url}/{i}") for i in range(200)))
    assert [r.status for r in replies] == [200] * 200
    assert peak == 8, f"{peak} connections were open at once; the cap is 8"
    assert up._pools[url].open <= 8
    await up.close()


async def test_requests_beyond_the_cap_wait_in_arrival_order(server) -> None:  # type: ignore[no-untyped-def]
    order: list[str] = []
    url = await server(keep_alive(0.005, lambda req: order.append(req.split(b" ")[1].decode())))
    up = Upstream(max_connections=1)
    await asyncio.gather(*(up.request("GET", f"{url}/{i}") for i in range(8)))
    assert order == [f"/{i}" for i in range(8)]
    await up.close()


async def test_waiting_past_the_deadline_for_a_connection_is_504(server) -> None:  # type: ignore[no-untyped-def]
    url = await server(keep_alive(0.6))
    up = Upstream(max_connections=1)
    busy = asyncio.create_task(up.request("GET", f"{url}/slow"))
    await asyncio.sleep(0.05)
    t0 = asyncio.get_running_loop().time()
    with pytest.raises(UpstreamTimeout, match="no free connection") as exc:
        await up.request("GET", f"{url}/late", timeout_s=0.15)
    assert exc.value.status == 504
    assert asyncio.get_running_loop().time() - t0 < 0.5
    assert (await busy).status == 200
    # the waiter that gave up holds no slot: the connection is reused
    assert (await up.request("GET", f"{url}/again")).status == 200
    assert up._pools[url].open == 1
    await up.close()


async def test_drop_fails_waiters_and_closes_the_pool(server) -> None:  # type: ignore[no-untyped-def]
    closed = asyncio.Event()  # set when the front end closes the connection
    url = await server(keep_alive(0.3, on_close=closed.set))
    up = Upstream(max_connections=1)
    busy = asyncio.create_task(up.request("GET", f"{url}/busy"))
    await asyncio.sleep(0.05)
    waiting = asyncio.create_task(up.request("GET", f"{url}/waiting"))
    await asyncio.sleep(0.05)
    up.drop(url)
    with pytest.raises(UpstreamConnectionError, match="left the fleet"):
        await waiting
    assert (await busy).status == 200  # a request already sent still gets its reply
    assert url not in up._pools
    await asyncio.wait_for(closed.wait(), 2)  # ... and its connection is closed, not pooled
    await up.close()


async def test_close_delimited_body_cut_by_a_reset_is_an_error(server) -> None:  # type: ignore[no-untyped-def]
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nonly the start of it")
        await w.drain()
        await asyncio.sleep(0.05)
        w.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                              struct.pack("ii", 1, 0))
        w.transport.abort()  # linger 0: a reset, not a clean end of the body

    up = Upstream()
    with pytest.raises(UpstreamConnectionError, match="connection closed"):
        await up.request("GET", await server(handler) + "/x")
    await up.close()


def _armed_timeouts() -> list[asyncio.TimerHandle]:
    loop = asyncio.get_running_loop()
    return [h for h in loop._scheduled  # type: ignore[attr-defined]
            if not h.cancelled() and getattr(h._callback, "__func__", None) is _Conn._on_timeout]


async def test_cancelled_request_leaves_no_timer_armed(server) -> None:  # type: ignore[no-untyped-def]
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await read_request(r)
        await asyncio.sleep(5)

    url = await server(handler)
    up = Upstream(timeout_s=30)
    task = asyncio.create_task(up.request("POST", f"{url}/x", b"{}"))
    await asyncio.sleep(0.1)
    assert len(_armed_timeouts()) == 1  # the check below can see a live timer
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert _armed_timeouts() == []
    assert up._pools[url].open == 0
    await up.close()
