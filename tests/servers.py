"""Real servers the tests start on loopback: a private ``redis-server``, moto in server mode;
and what readies one: warm sandboxes in the function runtime."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import redis

REDIS_SERVER = "redis-server"


def wait_for(pred: Callable[[], Any], timeout_s: float = 30.0, what: str = "",
             every_s: float = 0.1) -> Any:
    """``pred()``'s first truthy value, polled every ``every_s``; AssertionError naming
    ``what`` after ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pings(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=0.2, socket_connect_timeout=0.2).ping())
    except redis.RedisError:
        return False


class PrivateRedis:
    """A redis-server process of our own on a fixed loopback port, to kill and restart.

    Its append-only file is fsynced on every write, so a restart keeps what was acknowledged:
    the totals after an outage can then be compared with everything that was ever added."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = directory
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not pings(self.port):
            assert self.proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto in server mode on a free loopback port (its URL), stopped on exit."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


async def warm_functions(runtime_url: str, model: str, n: int) -> None:
    """Start ``n`` sandboxes of ``model``'s function with concurrent empty events, so a
    burst's spill finds them warm, as a running service's does (``n`` cold starts at once on
    a loaded 2-core host take seconds each, past the requests' deadline)."""
    url = f"{runtime_url}/2015-03-31/functions/mark-{model}/invocations"
    async with aiohttp.ClientSession() as s:
        async def one() -> None:
            async with s.post(url, json={"model": model, "requests": []}) as r:
                await r.read()

        await asyncio.gather(*(one() for _ in range(n)))
