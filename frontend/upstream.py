"""The pooled HTTP/1.1 client to instances, lean enough for the infer hot path.

Why not aiohttp here: profiling the front end (README, "Front-end hot path") showed aiohttp's
request machinery (header normalisation, payload wrappers, stream writers, response objects)
costing several times the proxying itself. This client keeps what a reverse proxy needs and
nothing else: keep-alive connections in a per-host pool, a request written in one
``transport.write`` of pre-encoded bytes, and the reply parsed by ``httptools`` (llhttp, the
parser Sanic itself uses), which also decodes chunked bodies. aiohttp stays everywhere off the
hot path (health checks, load generation).

Connections per instance are capped (``max_connections``: open, idle or busy, connecting
included); a request beyond the cap waits, first come first served, for a connection to come
free, within its own time budget. ``pool_size`` bounds only the idle connections kept.
:meth:`Upstream.drop` forgets an instance that left the fleet: idle connections are closed,
waiters fail with ``UpstreamConnectionError`` (so the caller retries elsewhere) and busy
connections are closed when their reply is done.

Errors are mapped at this one boundary:

- connection refused/reset, closed before or during the reply -> ``UpstreamConnectionError``
  (the instance is likely gone; the caller may retry once elsewhere). A *reused* keep-alive
  connection that the server had already closed is retried once on a fresh connection first,
  so an idle timeout on the instance never looks like a dead instance. A body delimited by
  the end of the connection is complete only when the connection ends cleanly (EOF); a reset
  cuts it short, and that is an error too.
- a reply that is not valid HTTP -> ``UpstreamProtocolError`` (502, not retried)
- no complete reply within the request's time budget, or no free connection within it ->
  ``UpstreamTimeout`` (504; not retried: the instance may still be working on it). The
  connection is closed, never reused mid-reply.
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
        self._cancel_timer()
        if self.waiter is None or self.waiter.done():
            return
        if exc is None and self.status and "content-length" not in self.headers and \
                "chunked" not in self.headers.get("transfer-encoding", ""):
            self.keep_alive = False
            self.on_message_complete()  # a body delimited by the (clean) end of the connection
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
        self._cancel_timer()
        if self.waiter is not None and not self.waiter.done():
            body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
            self.waiter.set_result(UpstreamReply(self.status, body, self.headers))

    # -- use -------------------------------------------------------------------------------
    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fail(self, exc: Exception) -> None:
        self._cancel_timer()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)

    def _on_timeout(self, timeout_s: float) -> None:
        self._timer = None
        self._fail(UpstreamTimeout(f"{self.url} did not answer within {timeout_s:.3g} s"))
        self.close()

    def send(self, data: bytes, timeout_s: float) -> asyncio.Future[UpstreamReply]:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._reset()
        self.waiter = loop.create_future()
        self._timer = loop.call_later(max(timeout_s, 0.0), self._on_timeout, timeout_s)
        self.transport.write(data)
        return self.waiter

    def reusable(self) -> bool:
        return (not self.closed and self.complete and self.keep_alive
                and self.transport is not None and not self.transport.is_closing())

    def close(self) -> None:
        self.closed = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()


# what a waiter for a connection receives: a pooled connection, or None = a slot under the
# cap that is now reserved for it (it opens the connection itself)
_Grant = _Conn | None


class _HostPool:
    """Connections to one instance: the idle ones, how many are open, who waits for one."""

    __slots__ = ("base", "dropped", "host", "hostline", "idle", "open", "port", "waiters")

    def __init__(self, base: str, host: str, port: int) -> None:
        self.base = base
        self.host = host
        self.port = port
        self.idle: deque[_Conn] = deque()
        self.open = 0  # connections counted against the cap: idle, busy or connecting
        self.waiters: deque[asyncio.Future[_Grant]] = deque()
        self.dropped = False
        self.hostline = f"Host: {host}:{port}\r\n".encode()

    def grant(self, what: _Grant) -> bool:
        """Hand a connection (or a reserved slot) to the first live waiter, FIFO."""
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(what)
                return True
        return False


class Upstream:
    """Keep-alive connection pools per instance (``scheme://host:port``).

    ``pool_size``: idle connections kept per instance. ``max_connections``: hard cap on the
    connections open to one instance at a time. ``timeout_s``: the time budget of a request
    that does not bring its own (``request(..., timeout_s=)``), covering the wait for a
    connection, connecting and the whole reply.
    """

    def __init__(self, pool_size: int = 256, connect_timeout_s: float = 2.0,
                 timeout_s: float = 30.0, max_connections: int = 64) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self.pool_size = pool_size
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._pools: dict[str, _HostPool] = {}

    async def close(self) -> None:
        for base in list(self._pools):
            self.drop(base, "the front end is closing")

    def drop(self, base_url: str, reason: str = "the instance left the fleet") -> None:
        """Forget the pool of ``base_url``: close idle connections, fail waiters.

        Requests already on a connection finish; their connections are closed afterwards.
        """
        pool = self._pools.pop(base_url.rstrip("/"), None)
        if pool is None:
            return
        pool.dropped = True
        while pool.idle:
            pool.idle.pop().close()
            pool.open -= 1
        while pool.waiters:
            fut = pool.waiters.popleft()
            if not fut.done():
                fut.set_exception(UpstreamConnectionError(f"{base_url}: {reason}", fresh=True))

    def _pool(self, base: str) -> _HostPool:
        pool = self._pools.get(base)
        if pool is None:
            parts = urlsplit(base)
            if parts.scheme != "http" or not parts.hostname:
                raise UpstreamConnectionError(f"unsupported upstream URL {base!r}; accepted: http://host:port")
            pool = self._pools[base] = _HostPool(base, parts.hostname, parts.port or 80)
        return pool

    async def _connect(self, pool: _HostPool, deadline: float) -> _Conn:
        """Open a connection on a slot already counted in ``pool.open``."""
        loop = asyncio.get_running_loop()
        limit = min(self.connect_timeout_s, deadline - loop.time())
        try:
            async with asyncio.timeout(limit):
                _, conn = await loop.create_connection(lambda: _Conn(pool.base), pool.host, pool.port)
        except TimeoutError as exc:
            self._free_slot(pool)
            if limit < self.connect_timeout_s:
                raise UpstreamTimeout(
                    f"{pool.base}: no connection within the request's time budget") from exc
            raise UpstreamConnectionError(
                f"{pool.base}: connect timed out after {self.connect_timeout_s:g} s") from exc
        except OSError as exc:
            self._free_slot(pool)
            raise UpstreamConnectionError(f"{pool.base}: cannot connect: {exc.strerror or exc}") from exc
        except BaseException:
            self._free_slot(pool)
            raise
        return conn

    async def _acquire(self, pool: _HostPool, deadline: float) -> tuple[_Conn, bool]:
        """A connection to ``pool``'s instance and whether it was reused (idle)."""
        while pool.idle:
            conn = pool.idle.pop()
            if conn.reusable():
                return conn, True
            conn.close()
            pool.open -= 1
        if pool.open < self.max_connections:
            pool.open += 1
            return await self._connect(pool, deadline), False
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[_Grant] = loop.create_future()
        pool.waiters.append(fut)
        try:
            async with asyncio.timeout_at(deadline):
                granted = await fut
        except BaseException as exc:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._give_back(pool, fut.result())  # granted as we were cancelled
            else:
                fut.cancel()
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout(
                    f"{pool.base}: no free connection within the request's time budget "
                    f"({self.max_connections} connections busy, the cap per instance)"
                ) from exc
            raise
        if granted is None:
            return await self._connect(pool, deadline), False
        if granted.reusable():
            return granted, True
        granted.close()
        return await self._connect(pool, deadline), False  # its slot is ours

    def _give_back(self, pool: _HostPool, what: _Grant) -> None:
        if what is None:
            self._free_slot(pool)
        else:
            self._release(pool, what)

    def _discard(self, pool: _HostPool, conn: _Conn) -> None:
        conn.close()
        self._free_slot(pool)

    def _free_slot(self, pool: _HostPool) -> None:
        """A counted connection is gone: its slot goes to the next waiter, if any."""
        if pool.dropped or not pool.grant(None):
            pool.open -= 1

    def _release(self, pool: _HostPool, conn: _Conn) -> None:
        if pool.dropped:
            conn.close()
            return
        if not conn.reusable():
            self._discard(pool, conn)
        elif pool.grant(conn):
            pass
        elif len(pool.idle) < self.pool_size:
            pool.idle.append(conn)
        else:
            conn.close()
            pool.open -= 1

    async def request(
        self, method: str, url: str, body: bytes | None = None,
        headers: Mapping[str, str] | None = None, timeout_s: float | None = None,
    ) -> UpstreamReply:
        """``url`` is ``http://host:port/path``; returns the whole reply.

        ``timeout_s`` (default: the pool's ``timeout_s``) bounds everything: waiting for a
        free connection, connecting, and the reply.
        """
        loop = asyncio.get_running_loop()
        budget_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = loop.time() + budget_s
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

        while True:
            if loop.time() >= deadline:
                raise UpstreamTimeout(f"{base} did not answer within {budget_s:.3g} s")
            conn, reused = await self._acquire(pool, deadline)
            try:
                reply = await conn.send(data, deadline - loop.time())
            except UpstreamConnectionError as exc:
                self._discard(pool, conn)
                if reused and exc.fresh:
                    continue  # the server closed an idle connection; try another one
                raise
            except BaseException:
                # timeout, bad reply or cancelled: the reply may still come, so this
                # connection cannot carry another request
                self._discard(pool, conn)
                raise
            self._release(pool, conn)
            return reply

    async def healthy(self, base_url: str) -> bool:
        """Whether the instance at ``base_url`` answers ``/v2/health/ready`` with 200 (a hung
        one, which accepts but never answers, is not healthy: it never raises)."""
        try:
            return (await self.request("GET", f"{base_url}/v2/health/ready")).status == 200
        except (UpstreamError, UpstreamTimeout):
            return False
