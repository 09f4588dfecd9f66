"""Spill to FaaS, live: the front end, real Triton processes serving the ``profiled`` model
(Inception-v3 on c5.xlarge) and the local Lambda-compatible runtime on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import aiohttp
import numpy as np
import pytest

from mark.cluster import ClusterThread
from mark.core.config import (
    ControlConfig,
    FleetConfig,
    FrontendConfig,
    FunctionsConfig,
    MarkConfig,
    ModelConfig,
)
from mark.loadgen import LoadClient, LoadResult
from tests.servers import warm_functions

MODEL = "incep"
SLO_S = 0.5
BODY = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                    "data": list(range(16))}]}


def config(tmp: Any, instances: int = 1, faas: bool = True) -> MarkConfig:
    return MarkConfig(
        # functions of 4 GB: 301 ms an inference, 200 ms inside the SLO for a loaded host's
        # jitter (the plan's 3 GB would leave 120 ms)
        models=[ModelConfig(name=MODEL, kind="profiled", profile="inception-v3",
                            max_batch_size=16, faas_memory_mb=4096)],
        fleet=FleetConfig(instances=instances, health_interval_s=0.5),
        # the loop does not step within a test: the starting fleet stays as it is
        control=ControlConfig(interval_s=3600.0, types=["c5.xlarge"]),
        faas=FunctionsConfig(enabled=faas, port=0, concurrency=32, keep_alive_s=600.0),
        frontend=FrontendConfig(port=0, workers=1),
        runtime_dir=tmp,
    )


@contextlib.contextmanager
def cluster_of(cfg: MarkConfig) -> Iterator[ClusterThread]:
    c = ClusterThread(cfg)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def spill_on(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterThread]:
    with cluster_of(config(tmp_path_factory.mktemp("spill-on"))) as c:
        yield c


@pytest.fixture(scope="module")
def spill_off(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterThread]:
    with cluster_of(config(tmp_path_factory.mktemp("spill-off"), faas=False)) as c:
        yield c


def step_load(c: ClusterThread, times: float, seconds: float, seed: int = 2,
              warm_first: bool = True) -> LoadResult:
    """Poisson arrivals at ``times`` x the instance's capacity (its WRR weight)."""
    cap = sum(i.capacity_rps for i in c.cluster.fleet.instances.values())
    rng = np.random.default_rng(seed)
    arrivals = np.sort(rng.uniform(0.0, seconds, rng.poisson(times * cap * seconds)))

    async def run() -> LoadResult:
        if warm_first and c.cluster.runtime is not None:  # warm functions, as a running service's are
            await warm_functions(c.cluster.runtime.url, MODEL, 12)  # (cold starts: the runtime's own tests)
        async with LoadClient(c.url, MODEL, timeout_s=30.0) as client:
            return await client.open_loop(arrivals)

    return asyncio.run(run())


def attainment(r: LoadResult) -> float:
    met = sum(1 for x in r.latencies_s if x <= SLO_S)
    return met / r.sent


def test_the_excess_spills_and_the_slo_holds(spill_on: ClusterThread,
                                             spill_off: ClusterThread) -> None:
    on = step_load(spill_on, 3.0, 25.0)
    assert on.lost == 0 and sum(on.errors.values()) == 0, on.to_json()
    assert on.spilled > 0.15 * on.sent, on.to_json()  # what the instance cannot take spills
    # the SLO is 98%; on a shared 2-core test host some of these 250 requests miss by the
    # host's jitter alone (CI: 2-8, by either backend; 14 in a slow full-suite run), so the
    # test allows it: what it must catch is the contrast with spill off below (< 90%)
    assert attainment(on) >= 0.93, (on.to_json(), on.missed(SLO_S))
    off = step_load(spill_off, 3.0, 25.0)
    assert off.lost == 0
    assert attainment(off) < 0.9, off.to_json()  # the same load without spill breaks it

    async def cost() -> dict[str, float]:
        async with aiohttp.ClientSession() as s, s.get(f"{spill_on.url}/admin/cost") as r:
            return await r.json()  # type: ignore[no-any-return]

    c = asyncio.run(cost())
    assert c["faas"] > 0
    assert c["total"] == pytest.approx(c["on_demand"] + c["spot"] + c["faas"], abs=3e-6)


def test_spilled_replies_say_where_they_were_served(spill_on: ClusterThread) -> None:
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                        "data": list(range(16))}]}

    async def run() -> set[tuple[str, str]]:
        async with aiohttp.ClientSession() as s:
            async def one() -> tuple[str, str]:
                async with s.post(f"{spill_on.url}/v2/models/{MODEL}/infer", json=body) as r:
                    doc = await r.json()
                    assert r.status == 200 and doc["outputs"][0]["data"] == list(range(16))
                    return r.headers["x-mark-backend"], r.headers["x-mark-instance"]

            return set(await asyncio.gather(*(one() for _ in range(30))))  # a burst

    where = asyncio.run(run())
    assert ("faas", f"faas:mark-{MODEL}") in where
    assert any(b == "iaas" for b, _ in where)


def test_no_instance_means_functions_alone(tmp_path_factory: pytest.TempPathFactory) -> None:
    with cluster_of(config(tmp_path_factory.mktemp("faas-only"), instances=0)) as c:
        assert not c.cluster.fleet.instances
        import tritonclient.http as th

        tc = th.InferenceServerClient(c.url.removeprefix("http://"))
        x = th.InferInput("INPUT0", [2, 16], "FP32")  # the binary tensor extension
        data = np.arange(32, dtype=np.float32).reshape(2, 16)
        x.set_data_from_numpy(data)
        np.testing.assert_array_equal(tc.infer(MODEL, [x]).as_numpy("OUTPUT0"), data)

        async def run(url: str) -> list[tuple[int, str]]:
            async with aiohttp.ClientSession() as s:
                async with s.get(f"{url}/v2/models/{MODEL}") as meta:
                    assert meta.status == 200
                body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                                    "data": list(range(16))}]}
                out = []
                for _ in range(5):
                    async with s.post(f"{url}/v2/models/{MODEL}/infer", json=body) as r:
                        doc = await r.json()
                        out.append((r.status, r.headers.get("x-mark-backend", "")))
                        assert doc["outputs"][0]["data"] == list(range(16))
                return out

        assert asyncio.run(run(c.url)) == [(200, "faas")] * 5


def test_runtime_down_gives_clear_errors_and_no_request_unanswered(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    with cluster_of(config(tmp_path_factory.mktemp("faas-down"))) as c:
        assert c.cluster.runtime is not None
        c.call(c.cluster.runtime.stop())
        r = step_load(c, 3.0, 8.0, warm_first=False)
        assert r.lost == 0
        assert r.ok > 0  # what the instance could take was served
        assert set(r.errors) <= {503}
        assert r.errors[503] > 0


def test_throttled_functions_are_retried_then_answered_503(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """The front end may invoke 8 at once; the function takes 1 (its reserved concurrency,
    as on AWS where other clients share it): Lambda's 429s are retried, then answered."""
    import threading

    from mark.backends.local import free_port
    from mark.faas.runtime import FunctionRuntime

    tmp = tmp_path_factory.mktemp("faas-429")
    port = free_port()
    rt_cfg = config(tmp / "rt", instances=0)
    rt_cfg.faas.concurrency = 1
    runtime = FunctionRuntime(rt_cfg, port=port)
    rt_loop = asyncio.new_event_loop()
    threading.Thread(target=rt_loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(runtime.start(), rt_loop).result(30)
    cfg = config(tmp / "front", instances=0)
    cfg.faas.concurrency = 8
    cfg.faas.endpoint_url = runtime.url
    try:
        with cluster_of(cfg) as c:
            async def run(url: str) -> list[tuple[int, str, str]]:
                async with aiohttp.ClientSession() as s:
                    async def one() -> tuple[int, str, str]:
                        async with s.post(f"{url}/v2/models/{MODEL}/infer", json=BODY) as r:
                            doc = await r.json()
                            return (r.status, r.headers.get("Retry-After", ""),
                                    doc.get("error", ""))

                    return list(await asyncio.gather(*(one() for _ in range(20))))

            replies = asyncio.run(run(c.url))
            codes = [s for s, _, _ in replies]
            # retried while the deadline lasts: served, or a clear 503 (throttled, with
            # Retry-After), or 504 once the deadline passed in the invocation that ran
            assert set(codes) <= {200, 503, 504} and codes.count(200) >= 3, codes
            assert len(codes) > codes.count(200), "20 x 0.38 s on one sandbox in 5 s"
            refused = [(ra, err) for s, ra, err in replies if s == 503]
            assert all(ra and "throttled" in err for ra, err in refused)
            spill = c.cluster.front.faas
            assert spill is not None and spill.invoker.stats.throttles > 0
    finally:
        asyncio.run_coroutine_threadsafe(runtime.stop(), rt_loop).result(30)
        rt_loop.call_soon_threadsafe(rt_loop.stop)


def test_a_quiet_model_is_scaled_to_functions_alone(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    cfg = config(tmp_path_factory.mktemp("faas-tier"))
    cfg.control.interval_s = 1.0
    cfg.control.policy_options = {"hold_s": 2.0}
    with cluster_of(cfg) as c:
        assert len(c.cluster.fleet.instances) == 1
        import time

        deadline = time.monotonic() + 30.0
        while c.cluster.fleet.instances and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not c.cluster.fleet.instances, "no load, yet the plan kept an instance"
        loop = c.cluster.control
        assert loop is not None
        assert any(d["info"].get("planned_instances") == 0.0 for d in loop.decisions)

        async def run(url: str) -> tuple[int, str]:
            async with aiohttp.ClientSession() as s, \
                    s.post(f"{url}/v2/models/{MODEL}/infer", json=BODY) as r:
                await r.read()
                return r.status, r.headers.get("x-mark-backend", "")

        assert asyncio.run(run(c.url)) == (200, "faas")
