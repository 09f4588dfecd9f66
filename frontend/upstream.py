"""The pooled HTTP client to instances (aiohttp), with errors mapped at this one boundary.

- connection refused/reset, server disconnected, truncated reply -> ``UpstreamConnectionError``
  (the instance is likely gone; the caller may retry once elsewhere)
- no answer within the timeout -> ``UpstreamTimeout`` (504; not retried: the instance may
  still be working on it)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp

from mark.errors import UpstreamError, UpstreamTimeout


class UpstreamConnectionError(UpstreamError):
    """The instance could not be reached or dropped the connection."""


@dataclass(slots=True)
class UpstreamReply:
    status: int
    body: bytes
    headers: Mapping[str, str]


class Upstream:
    def __init__(self, pool_size: int = 256, connect_timeout_s: float = 2.0,
                 timeout_s: float = 30.0) -> None:
        self.pool_size = pool_size
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=connect_timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.pool_size, keepalive_timeout=30),
                timeout=self.timeout,
                auto_decompress=False,  # bodies pass through as the instance encoded them
                skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self, method: str, url: str, body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> UpstreamReply:
        if self._session is None:
            await self.start()
        assert self._session is not None
        try:
            async with self._session.request(method, url, data=body, headers=headers) as resp:
                data = await resp.read()
                return UpstreamReply(resp.status, data, resp.headers)
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"{url} did not answer within {self.timeout.total:.0f} s"
            ) from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise UpstreamConnectionError(f"{url}: {type(exc).__name__}: {exc}") from exc
