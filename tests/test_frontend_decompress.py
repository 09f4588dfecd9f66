"""A compressed request body is decompressed bounded: a gzip bomb gets 413, fast and small.

The front end runs in this process (``main_cluster``), so this process's peak RSS is the
front end's (plus the test client's, which only grows by what it reads back).
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
import zlib
from pathlib import Path

import aiohttp
import pytest

from frontend.protocol import decode_body
from mark.cluster import ClusterThread
from mark.core.errors import BadRequest, PayloadTooLarge
from tests.conftest import MAX_BODY

pytestmark = pytest.mark.triton

SMALL = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                                "data": [1.0] * 16}]}).encode()


def gzip_bomb(expanded_bytes: int, block_bytes: int = 1 << 20) -> bytes:
    """A valid gzip stream of ``expanded_bytes`` spaces, built without ever holding them.

    Each block is compressed after a full flush, which forgets history, so every block
    after the first compresses to the same bytes; the trailer's CRC is chained per block.
    """
    block = b" " * block_bytes
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    first = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(block) + c.flush(zlib.Z_FULL_FLUSH) == again
    end = c.flush()[:-8]  # the final empty block, without the trailer for 3 blocks
    n = expanded_bytes // block_bytes
    crc = 0
    for _ in range(n):
        crc = zlib.crc32(block, crc)
    return b"".join([first, again * (n - 1), end,
                     struct.pack("<II", crc, (n * block_bytes) & 0xFFFFFFFF)])


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


async def _post(s: aiohttp.ClientSession, url: str, body: bytes,
                headers: dict[str, str] | None = None) -> tuple[int, bytes, float]:
    t0 = time.perf_counter()
    async with s.post(f"{url}/v2/models/identity/infer", data=body, headers=headers or {}) as r:
        return r.status, await r.read(), time.perf_counter() - t0


def test_gzip_bomb_is_413_fast_small_and_blocks_nobody(main_cluster: ClusterThread) -> None:
    bomb = gzip_bomb(1000 << 20)  # ~1 MB that expands to 1000 MiB
    assert len(bomb) < MAX_BODY, "the bomb must pass the plain body limit to test decompression"
    gz = {"Content-Encoding": "gzip", "Content-Type": "application/json"}

    async def run() -> tuple[tuple[int, bytes, float], list[int], int]:
        async with aiohttp.ClientSession() as s:
            # warm up with the same round but a plain body of the bomb's size (400): the first
            # ~1 MB body grows this process (client and server sides) by up to ~2 MiB,
            # decompression or not; what the bomb adds on top is what is measured
            plain = b"{" + b" " * (len(bomb) - 1)
            for _ in range(2):  # the allocator settles after the second
                warm = await asyncio.gather(_post(s, main_cluster.url, plain),
                                            *(_post(s, main_cluster.url, SMALL) for _ in range(20)))
                assert [w[0] for w in warm] == [400] + [200] * 20
            _reset_peak_rss()
            base = _status("VmRSS")
            results = await asyncio.gather(
                _post(s, main_cluster.url, bomb, gz),
                *(_post(s, main_cluster.url, SMALL) for _ in range(20)),
            )
            return results[0], [r[0] for r in results[1:]], _status("VmHWM") - base

    (status, body, took_s), others, growth = asyncio.run(run())
    assert status == 413, body
    error = json.loads(body)["error"]
    assert f"frontend.max_body_bytes = {MAX_BODY} bytes" in error and "gzip" in error, error
    assert took_s < 2.0, f"413 took {took_s:.2f} s"
    print(f"gzip bomb: 413 in {took_s * 1000:.1f} ms, peak RSS growth {growth / 2**20:.2f} MiB")
    assert growth < 2 * MAX_BODY, f"RSS grew by {growth / 2**20:.1f} MiB for a {MAX_BODY}-byte limit"
    assert others == [200] * 20


def test_compressed_body_within_the_limit_is_served(main_cluster: ClusterThread) -> None:
    async def run() -> list[int]:
        async with aiohttp.ClientSession() as s:
            out = []
            for enc, data in (("gzip", zlib.compress(SMALL, wbits=31)),
                              ("deflate", zlib.compress(SMALL)), ("br", SMALL)):
                out.append((await _post(s, main_cluster.url, data,
                                        {"Content-Encoding": enc}))[0])
            return out

    assert asyncio.run(run()) == [200, 200, 400]


async def test_decode_body_bounds_output_and_rejects_corrupt_data() -> None:
    data = b"x" * 100_000
    assert await decode_body(zlib.compress(data, wbits=31), "gzip", 100_000, 4096) == data
    with pytest.raises(PayloadTooLarge, match=r"more than frontend\.max_body_bytes = 99999 bytes"):
        await decode_body(zlib.compress(data, wbits=31), "GZIP", 99_999, 4096)
    with pytest.raises(BadRequest, match="truncated"):
        await decode_body(zlib.compress(data)[:-10], "deflate", 200_000)
    with pytest.raises(BadRequest, match="not valid gzip"):
        await decode_body(b"not gzip at all", "gzip", 1000)
