"""The hot-path upstream client against scripted raw HTTP servers on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from frontend.upstream import Upstream, UpstreamConnectionError, UpstreamProtocolError
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
    with pytest.raises(UpstreamTimeout, match=r"did not answer within 0\.2 s") as exc:
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
    from mark.backends.local import free_port

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
