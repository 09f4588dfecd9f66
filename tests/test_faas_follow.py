"""A front end follows the functions' endpoint when it moves (a provisioner that restarted
with its own runtime on another port), keeping its spill counters and spend."""

from __future__ import annotations

import asyncio
import time

import orjson

from frontend.app import FrontEnd
from frontend.fleet import Fleet
from frontend.shared import attach
from frontend.upstream import Upstream
from mark.core.config import FunctionsConfig, MarkConfig, ModelConfig
from tests.test_faas_runtime import RuntimeThread

BODY = orjson.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                                 "data": [float(i) for i in range(16)]}]})


def test_spill_follows_a_moved_endpoint() -> None:
    cfg = MarkConfig(models=[ModelConfig(name="identity", kind="identity")],
                     faas=FunctionsConfig(concurrency=2))
    first, second = RuntimeThread(cfg), RuntimeThread(cfg)
    try:
        fleet = Fleet(["identity"])
        front = FrontEnd(cfg, fleet, Upstream())

        async def spill() -> int:
            reply = await front.faas.submit(  # type: ignore[union-attr]
                "identity", BODY, {"content-type": "application/json"},
                time.perf_counter() + 20.0)
            return reply.status

        async def scenario() -> None:
            fleet.faas_url = first.url
            attach(front, None)
            spill_path = front.faas
            assert await spill() == 200
            fleet.faas_url = second.url + "/"  # moved (a trailing slash: the same address)
            attach(front, None)
            assert front.faas is spill_path  # the same buffers, counters and spend
            assert await spill() == 200
            attach(front, None)  # unchanged: nothing moves
            assert front.faas.invoker.endpoint_url == second.url  # type: ignore[union-attr]
            await front.faas.close()  # type: ignore[union-attr]

        asyncio.run(scenario())
        assert first.stats()["mark-identity"]["invocations"] == 1
        assert second.stats()["mark-identity"]["invocations"] == 1
        stats = front.faas.invoker.stats  # type: ignore[union-attr]
        assert stats.invocations == 2 and stats.usd > 0
    finally:
        first.stop()
        second.stop()
