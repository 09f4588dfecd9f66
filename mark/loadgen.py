"""Load generation against a KServe v2 endpoint: open loop (arrival times) or closed loop.

Used by ``mark load`` and by the benchmarks. One aiohttp session with a pooled connector;
every request is accounted for: ``ok`` (HTTP 200), ``errors`` (any other status, by
status) or ``lost`` (no HTTP answer at all: connection dropped or timed out).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from mark.core.errors import UpstreamError

_TEXTS = (
    "the quick brown fox jumps over the lazy dog",
    "serving models under a latency SLO at the lowest cloud bill",
    "spot instances are cheap until they are reclaimed",
    "a burst of requests arrives before new instances boot",
)


def build_request(meta: dict[str, Any], rows: int = 1, seed: int = 0) -> bytes:
    """A valid JSON infer body for a model from its v2 metadata (batch dim = ``rows``)."""
    rng = np.random.default_rng(seed)
    inputs = []
    for t in meta["inputs"]:
        shape = [rows if i == 0 and d == -1 else (1 if d == -1 else d)
                 for i, d in enumerate(t["shape"])]
        n = int(np.prod(shape))
        data: list[Any]
        if t["datatype"] == "BYTES":
            data = [_TEXTS[i % len(_TEXTS)] for i in range(n)]
        elif t["datatype"] == "BOOL":
            data = [bool(x) for x in rng.integers(0, 2, n)]
        elif t["datatype"].startswith(("INT", "UINT")):
            data = [int(x) for x in rng.integers(0, 100, n)]
        else:
            data = [float(x) for x in rng.random(n)]
        inputs.append({"name": t["name"], "datatype": t["datatype"], "shape": shape, "data": data})
    return json.dumps({"inputs": inputs}).encode()


@dataclass
class LoadResult:
    latencies_s: list[float] = field(default_factory=list)
    backends: list[str] = field(default_factory=list)  # where each reply was served (x-mark-backend)
    errors: Counter[int] = field(default_factory=Counter)
    lost: int = 0
    spilled: int = 0
    sent: int = 0
    elapsed_s: float = 0.0
    cost_usd: float | None = None  # the front end's cost ledger's increase over the run

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    def missed(self, slo_s: float) -> dict[str, int]:
        """Replies slower than ``slo_s``, by where they were served."""
        out: dict[str, int] = {}
        for lat, where in zip(self.latencies_s, self.backends, strict=False):
            if lat > slo_s:
                out[where or "?"] = out.get(where or "?", 0) + 1
        return out

    def percentiles_ms(self) -> dict[str, float]:
        if not self.latencies_s:
            return {k: float("nan") for k in ("p50", "p90", "p98", "p99")}
        arr = np.asarray(self.latencies_s) * 1000.0
        return {f"p{q}": float(np.percentile(arr, q)) for q in (50, 90, 98, 99)}

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.sent,
            "ok": self.ok,
            "errors": sum(self.errors.values()),
            "errors_by_status": {str(k): v for k, v in sorted(self.errors.items())},
            "lost": self.lost,
            "throughput_rps": self.ok / self.elapsed_s if self.elapsed_s > 0 else 0.0,
            "latency_ms": self.percentiles_ms(),
            "spill_share": self.spilled / self.ok if self.ok else 0.0,
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 6),
        }

    def table(self) -> str:
        j = self.to_json()
        lat = j["latency_ms"]
        return (
            f"requests {j['requests']}  ok {j['ok']}  errors {j['errors']}  lost {j['lost']}\n"
            f"throughput {j['throughput_rps']:.1f} req/s  spill share {j['spill_share']:.3f}\n"
            f"latency ms  p50 {lat['p50']:.2f}  p90 {lat['p90']:.2f}  "
            f"p98 {lat['p98']:.2f}  p99 {lat['p99']:.2f}"
        )


class LoadClient:
    def __init__(self, url: str, model: str, timeout_s: float = 30.0, pool: int = 1024) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=pool),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        )
        self.body = b""

    async def __aenter__(self) -> LoadClient:
        try:
            async with self._session.get(f"{self.url}/v2/models/{self.model}") as r:
                if r.status != 200:
                    raise UpstreamError(
                        f"metadata of {self.model!r} from {self.url}: HTTP {r.status}: {await r.text()}"
                    )
                self.body = build_request(await r.json())
        except aiohttp.ClientError as exc:
            await self._session.close()
            raise UpstreamError(f"cannot reach {self.url}: {exc}") from exc
        except BaseException:
            await self._session.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    async def cost_usd(self) -> float | None:
        """The front end's total cost so far (``GET /admin/cost``); None where there is none
        (Triton itself, an admin API this client may not use)."""
        try:
            async with self._session.get(f"{self.url}/admin/cost") as r:
                if r.status != 200:
                    return None
                return float((await r.json())["total"])
        except (TimeoutError, aiohttp.ClientError, KeyError, TypeError, ValueError):
            return None

    async def one(self, result: LoadResult) -> None:
        result.sent += 1
        t0 = time.perf_counter()
        try:
            async with self._session.post(
                f"{self.url}/v2/models/{self.model}/infer", data=self.body,
                headers={"Content-Type": "application/json"},
            ) as r:
                await r.read()
                if r.status == 200:
                    result.latencies_s.append(time.perf_counter() - t0)
                    backend = r.headers.get("x-mark-backend", "")
                    result.backends.append(backend)
                    if backend == "faas":
                        result.spilled += 1
                else:
                    result.errors[r.status] += 1
        except (TimeoutError, aiohttp.ClientError):
            result.lost += 1

    async def open_loop(self, arrivals_s: np.ndarray) -> LoadResult:
        """Send one request at each arrival time (seconds from now), never waiting on replies."""
        result = LoadResult()
        tasks: set[asyncio.Task[None]] = set()
        start = time.perf_counter()
        for t in arrivals_s:
            delay = start + float(t) - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.one(result))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        result.elapsed_s = time.perf_counter() - start
        return result

    async def closed_loop(self, concurrency: int, duration_s: float,
                          warmup_s: float = 0.5) -> LoadResult:
        """``concurrency`` workers each sending back to back for ``duration_s``.

        A warm-up of ``warmup_s`` (same load, not counted) comes first.
        """

        async def run_for(seconds: float) -> LoadResult:
            result = LoadResult()
            start = time.perf_counter()
            end = start + seconds

            async def worker() -> None:
                while time.perf_counter() < end:
                    await self.one(result)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            result.elapsed_s = time.perf_counter() - start
            return result

        await run_for(warmup_s)
        return await run_for(duration_s)
