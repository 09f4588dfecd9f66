"""The pooled HTTP/1.1 client to instances, lean enough for the infer hot path.

Why not aiohttp here: profiling the front end (README, "Front-end hot path") showed aiohttp's
request machinery (header normalisation, payload wrappers, stream writers, response objects)
costing several times the proxying itself. This client keeps what a reverse proxy needs and
nothing else: keep-alive connections in a per-host pool, a request written in one
``transport.write`` of pre-encoded bytes, and the reply parsed by ``httptools`` (llhttp, the
parser Sanic itself uses), which also decodes chunked bodies. aiohttp stays everywhere off the
hot path (health checks, load generation).

Errors are mapped at this one boundary:

- connection refused/reset, closed before or during the reply -> ``UpstreamConnectionError``
  (the instance is likely gone; the caller may retry once elsewhere). A *reused* keep-alive
  connection that the server had already closed is retried once on a fresh connection first,
  so an idle timeout on the instance never looks like a dead instance.
- a reply that is not valid HTTP -> ``UpstreamProtocolError`` (502, not retried)
- no complete reply within the timeout -> ``UpstreamTimeout`` (504; not retried: the instance
  may still be working on it). The connection is closed, never reused mid-reply.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import httptools

from mark.core.errors import UpstreamError, UpstreamTimeout


class UpstreamConnectionError(UpstreamError):
    """The instance could not be reached or dropped the connection.

    ``fresh``: nothing of a reply had arrived (safe to resend on another connection).
    """

    def __init__(self, message: str, fresh: bool = False) -> None:
        super().__init__(message)
        self.fresh = fresh


class UpstreamProtocolError(UpstreamError):
    """The instance answered with something that is not valid HTTP/1.1."""


@dataclass(slots=True)
class UpstreamReply:
    status: int
    body: bytes
    headers: Mapping[str, str]  # lower-case names


class _Conn(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    __slots__ = (
        "_timer",
        "body",
        "closed",
        "complete",
        "got_bytes",
        "headers",
        "keep_alive",
        "parser",
        "status",
        "transport",
        "url",
        "waiter",
    )

    def __init__(self, url: str) -> None:
        self.url = url
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[UpstreamReply] | None = None
        self.closed = False
        self.keep_alive = True
        self._timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.got_bytes = False
        self.complete = False

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"{self.url}: malformed HTTP reply: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is None or self.waiter.done():
            return
        if self.status and "content-length" not in self.headers and \
                "chunked" not in self.headers.get("transfer-encoding", ""):
            self.keep_alive = False
            self.on_message_complete()  # a body delimited by the end of the connection
            return
        what = "during the reply" if self.got_bytes else "before replying"
        self._fail(UpstreamConnectionError(
            f"{self.url}: connection closed {what}" + (f": {exc}" if exc else ""),
            fresh=not self.got_bytes,
        ))

    # -- httptools callbacks ---------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        if self.waiter is not None and not self.waiter.done():
            if self._timer is not None:
                self._timer.cancel()
            body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
            self.waiter.set_result(UpstreamReply(self.status, body, self.headers))

    # -- use -------------------------------------------------------------------------------
    def _fail(self, exc: Exception) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def _on_timeout(self, timeout_s: float) -> None:
        self._fail(UpstreamTimeout(f"{self.url} did not answer within {timeout_s:g} s"))
        self.close()

    def send(self, data: bytes, timeout_s: float) -> asyncio.Future[UpstreamReply]:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._reset()
        self.waiter = loop.create_future()
        self._timer = loop.call_later(timeout_s, self._on_timeout, timeout_s)
        self.transport.write(data)
        return self.waiter

    def reusable(self) -> bool:
        return (not self.closed and self.complete and self.keep_alive
                and self.transport is not None and not self.transport.is_closing())

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class _HostPool:
    __slots__ = ("host", "hostline", "idle", "port")

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.idle: deque[_Conn] = deque()
        self.hostline = f"Host: {host}:{port}\r\n".encode()


class Upstream:
    """Keep-alive connection pools per instance (``scheme://host:port``)."""

    def __init__(self, pool_size: int = 256, connect_timeout_s: float = 2.0,
                 timeout_s: float = 30.0) -> None:
        self.pool_size = pool_size  # idle connections kept per host
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self._pools: dict[str, _HostPool] = {}

    async def start(self) -> None:
        """Nothing to set up; kept so callers can treat upstreams alike."""

    async def close(self) -> None:
        for pool in self._pools.values():
            while pool.idle:
                pool.idle.pop().close()
        self._pools.clear()

    def _pool(self, base: str) -> _HostPool:
        pool = self._pools.get(base)
        if pool is None:
            parts = urlsplit(base)
            if parts.scheme != "http" or not parts.hostname:
                raise UpstreamConnectionError(f"unsupported upstream URL {base!r}; accepted: http://host:port")
            pool = self._pools[base] = _HostPool(parts.hostname, parts.port or 80)
        return pool

    async def _connect(self, base: str, pool: _HostPool) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(lambda: _Conn(base), pool.host, pool.port)
        except TimeoutError as exc:
            raise UpstreamConnectionError(
                f"{base}: connect timed out after {self.connect_timeout_s:g} s") from exc
        except OSError as exc:
            raise UpstreamConnectionError(f"{base}: cannot connect: {exc.strerror or exc}") from exc
        return conn

    async def request(
        self, method: str, url: str, body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> UpstreamReply:
        """``url`` is ``http://host:port/path``; returns the whole reply."""
        split = url.find("/", url.find("//") + 2)
        base, path = (url, "/") if split < 0 else (url[:split], url[split:])
        pool = self._pool(base)
        parts = [f"{method} {path} HTTP/1.1\r\n".encode(), pool.hostline]
        if headers:
            parts.extend(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items())
        payload = body or b""
        if payload or method in ("POST", "PUT"):
            parts.append(b"Content-Length: %d\r\n" % len(payload))
        parts.append(b"\r\n")
        parts.append(payload)
        data = b"".join(parts)

        while pool.idle:
            conn = pool.idle.pop()
            if not conn.reusable():
                conn.close()
                continue
            try:
                return await self._roundtrip(pool, conn, data)
            except UpstreamConnectionError as exc:
                if exc.fresh:
                    continue  # the server closed an idle connection; try another one
                raise
        conn = await self._connect(base, pool)
        return await self._roundtrip(pool, conn, data)

    async def _roundtrip(self, pool: _HostPool, conn: _Conn, data: bytes) -> UpstreamReply:
        try:
            reply = await conn.send(data, self.timeout_s)
        except asyncio.CancelledError:
            conn.close()  # the reply may still come; this connection cannot carry another
            raise
        self._release(pool, conn)
        return reply

    async def healthy(self, base_url: str) -> bool:
        """Whether the instance at ``base_url`` answers ``/v2/health/ready`` with 200."""
        try:
            return (await self.request("GET", f"{base_url}/v2/health/ready")).status == 200
        except UpstreamError:
            return False

    def _release(self, pool: _HostPool, conn: _Conn) -> None:
        if conn.reusable() and len(pool.idle) < self.pool_size:
            pool.idle.append(conn)
        else:
            conn.close()
