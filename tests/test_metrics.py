"""``GET /metrics``: prometheus-client's multiprocess mode over two front-end processes, the
control plane's gauges, and the FaaS counters; parsed with prometheus-client's own parser.

The cluster: the ``profiled`` model (Inception-v3's service times on c5.xlarge) on one real
Triton instance, two front-end processes on one port, the local function runtime to spill
to, and the control loop (one warm-started step, so there is a forecast; it does not step
again within the test).
"""

from __future__ import annotations

import asyncio
import base64
import glob
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from frontend import metrics as fm
from frontend.faas import LambdaInvoker
from frontend.metrics import BUCKETS_S, FrontendMetrics
from frontend.timing import RequestTiming, TimingLog
from mark.cluster import ClusterThread
from mark.control.metrics import quantile
from mark.core.config import (
    ControlConfig,
    FleetConfig,
    FrontendConfig,
    FunctionsConfig,
    MarkConfig,
    ModelConfig,
)
from tests.servers import warm_functions

MODEL = "metrics-incep"  # unique in the test process: series are told apart by model
BODY = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                               "data": [1.0] * 16}]}).encode()
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterThread]:
    cfg = MarkConfig(
        models=[ModelConfig(name=MODEL, kind="profiled", profile="inception-v3",
                            max_batch_size=16, slo_latency_ms=500.0)],
        fleet=FleetConfig(instances=1, health_interval_s=0.5),
        control=ControlConfig(interval_s=3600.0, types=["c5.xlarge"], min_instances=1),
        faas=FunctionsConfig(enabled=True, port=0, concurrency=16, keep_alive_s=600.0),
        frontend=FrontendConfig(port=0, workers=2),
        runtime_dir=tmp_path_factory.mktemp("metrics"),
    )
    c = ClusterThread(cfg, warm_start={MODEL: np.full(300, 4, dtype=np.int64)})
    try:
        yield c
    finally:
        c.stop()


def scrape(url: str) -> Series:
    async def get() -> str:
        async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as r:
            assert r.status == 200
            assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
            return await r.text()

    out: Series = {}
    for fam in text_string_to_metric_families(asyncio.run(get())):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(series: Series, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in series.items()
               if n == name and all(dict(ls).get(k) == x for k, x in labels.items()))


def present(series: Series, name: str, **labels: str) -> bool:
    return any(n == name and all(dict(ls).get(k) == x for k, x in labels.items())
               for n, ls in series)


async def burst(url: str, n: int, concurrency: int) -> list[int]:
    """``n`` inference requests, ``concurrency`` at a time, each on a new connection (so the
    kernel spreads them over the front-end processes)."""
    sem = asyncio.Semaphore(concurrency)

    async def one() -> int:
        async with sem, aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True)) as s, \
                s.post(f"{url}/v2/models/{MODEL}/infer", data=BODY) as r:
            await r.read()
            return r.status

    return list(await asyncio.gather(*(one() for _ in range(n))))


def wait_for(url: str, ok: Any, timeout_s: float = 15.0) -> Series:
    deadline = time.monotonic() + timeout_s
    while True:
        series = scrape(url)
        if ok(series) or time.monotonic() > deadline:
            return series
        time.sleep(0.3)


def test_quantile_interpolates_within_buckets() -> None:
    bounds = np.array([0.1, 0.2, 0.5, math.inf])
    counts = np.array([10.0, 10.0, 0.0, 0.0])
    assert quantile(bounds, counts, 0.5) == pytest.approx(0.1)
    assert quantile(bounds, counts, 0.25) == pytest.approx(0.05)
    assert quantile(bounds, counts, 0.75) == pytest.approx(0.15)
    assert quantile(bounds, np.array([0.0, 0.0, 0.0, 5.0]), 0.99) == 0.5  # in +Inf: last bound
    assert math.isnan(quantile(bounds, np.zeros(4), 0.5))


def test_only_files_of_ended_processes_are_cleared_at_start(tmp_path: Path) -> None:
    """A front end and a provisioner on one host may share the directory: a process starting
    clears what ended processes left, not what live ones write."""
    import subprocess
    import sys

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead_pid = int(ended.stdout)
    assert not fm._alive(tmp_path / f"counter_{dead_pid}.db")
    assert not fm._alive(tmp_path / f"counter_{os.getpid()}.db")  # ours: from an earlier run
    assert fm._alive(tmp_path / f"gauge_mostrecent_{os.getppid()}.db")
    assert not fm._alive(tmp_path / "counter_x.db")


def test_record_costs_about_a_microsecond() -> None:
    models = {"bench": ModelConfig(name="bench", kind="identity")}
    m = FrontendMetrics(lambda: models, flush_s=3600.0)
    log = TimingLog()
    log.observer = m.record
    recs = [RequestTiming("bench", "i-1", "iaas", 0.0, 0.0004 * (i % 7), 0.01 * (i % 40), 200, 1)
            for i in range(1000)]
    m._armed = True  # no event loop here: keep the sums pending while timing
    best = math.inf
    for _ in range(5):
        t = time.perf_counter()
        for r in recs * 20:
            m.record(r)
        best = min(best, (time.perf_counter() - t) / 20_000)
    m.close()
    assert best < 5e-6, f"record took {best * 1e6:.2f} µs"


def test_lambda_throttles_and_cold_starts_are_counted() -> None:
    """A real HTTP server answering as Lambda does: a 429, then a cold start's REPORT."""
    FrontendMetrics(lambda: {})  # this process records (a front end exists)
    cold = base64.b64encode(b"REPORT RequestId: x\tDuration: 3.00 ms\tBilled Duration: 3 ms\t"
                            b"Memory Size: 1024 MB\tMax Memory Used: 80 MB\t"
                            b"Init Duration: 250.00 ms\t").decode()
    answers = [web.Response(status=429, headers={"x-amzn-errortype": "TooManyRequestsException"}),
               web.Response(body=b"{}", headers={"X-Amz-Log-Result": cold})]

    async def invoke(request: web.Request) -> web.Response:
        return answers.pop(0)

    async def run() -> None:
        app = web.Application()
        app.router.add_post("/2015-03-31/functions/{name}/invocations", invoke)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        from frontend.faas import FaasSpill

        inv = LambdaInvoker(f"http://127.0.0.1:{port}", "us-east-1", 2, sign=False)
        FaasSpill(inv, "mark-", lambda m: (1, 0.0))  # wires the counters by model
        try:
            with pytest.raises(Exception, match="throttled"):
                await inv.invoke("mark-lambda-counted", b"{}", 5.0)
            await inv.invoke("mark-lambda-counted", b"{}", 5.0)
        finally:
            await inv.close()
            await runner.cleanup()

    asyncio.run(run())
    fams = fm.aggregate(["mark_faas_invocations", "mark_faas_cold_starts", "mark_faas_throttles"])
    got = {f: sum(s.value for s in ss if s.labels.get("model") == "lambda-counted"
                  and s.name.endswith("_total")) for f, ss in fams.items()}
    assert got == {"mark_faas_invocations": 1, "mark_faas_cold_starts": 1,
                   "mark_faas_throttles": 1}


def _served_200(pid: int) -> float:
    """Requests answered 200 by front-end process ``pid`` (its multiprocess counter file)."""
    directory = fm.metrics_dir()
    assert directory is not None
    return sum(s.value for f in glob.glob(str(directory / f"counter_{pid}.db"))
               for m in MultiProcessCollector.merge([f]) for s in m.samples
               if s.name == "mark_requests_total" and s.labels["model"] == MODEL
               and s.labels["status"] == "200")


def test_every_series_exists_and_moves_with_load(cluster: ClusterThread) -> None:
    url = cluster.url
    before = scrape(url)
    n = 60
    assert cluster.cluster.runtime is not None
    asyncio.run(warm_functions(cluster.cluster.runtime.url, MODEL, 16))  # the burst's spill finds them warm
    statuses = asyncio.run(burst(url, n, concurrency=20))  # beyond one instance: some spill
    assert statuses == [200] * n

    async def errors() -> list[int]:
        async with aiohttp.ClientSession() as s:
            out = []
            async with s.post(f"{url}/v2/models/no-such-model/infer", data=BODY) as r:
                out.append(r.status)
            async with s.post(f"{url}/v2/models/{MODEL}/infer", data=b"{not json") as r:
                out.append(r.status)
            return out

    assert asyncio.run(errors()) == [404, 400]

    def grown(s: Series) -> bool:  # each process writes its counts within a quarter second
        return (total(s, "mark_requests_total", model=MODEL, status="200")
                - total(before, "mark_requests_total", model=MODEL, status="200") >= n
                and total(s, "mark_requests_total", status="400")
                > total(before, "mark_requests_total", status="400")
                and total(s, "mark_requests_total", status="404")
                > total(before, "mark_requests_total", status="404")
                and total(s, "mark_arrival_rate_rps", model=MODEL) > 0
                and not math.isnan(total(s, "mark_latency_window_seconds", model=MODEL))
                # the ledger's FaaS cost comes from the workers' reports, a second later
                and total(s, "mark_cost_usd_total", market="faas") > 0)

    after = wait_for(url, grown)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    # the counters: exactly the requests sent, summed over both front-end processes
    assert delta("mark_requests_total", model=MODEL, status="200") == n
    assert delta("mark_requests_total", model=MODEL, backend="none", status="400") == 1
    assert delta("mark_requests_total", model=fm.UNKNOWN_MODEL, backend="none", status="404") == 1
    served = {b: delta("mark_requests_total", model=MODEL, backend=b, status="200")
              for b in ("iaas", "faas")}
    assert served["iaas"] > 0 and served["faas"] > 0, served  # the burst spilled
    for h in ("mark_request_duration_seconds", "mark_queue_duration_seconds",
              "mark_upstream_duration_seconds"):
        assert delta(f"{h}_count", model=MODEL) == n, h
        assert delta(f"{h}_bucket", model=MODEL, le="+Inf") == n, h
        assert delta(f"{h}_sum", model=MODEL) > 0, h
        les = {dict(ls)["le"] for (nm, ls) in after if nm == f"{h}_bucket"}
        assert {"0.005", "30.0", "+Inf"} <= les
    # the total is the sum of queue and upstream time, request by request
    assert delta("mark_request_duration_seconds_sum", model=MODEL) == pytest.approx(
        delta("mark_queue_duration_seconds_sum", model=MODEL)
        + delta("mark_upstream_duration_seconds_sum", model=MODEL), rel=1e-6)
    # the 400 counts for nothing in the SLO; the 200s all do
    assert delta("mark_slo_requests_total", model=MODEL) == n
    met = delta("mark_slo_met_total", model=MODEL)
    assert 0 < met <= n
    spills = {r: delta("mark_spills_total", model=MODEL, reason=r) for r in fm.SPILL_REASONS}
    assert spills["slo_at_risk"] > 0 and sum(spills.values()) == served["faas"], spills
    assert delta("mark_faas_invocations_total", model=MODEL) >= 1
    # warmed before (counting a cold start's Init Duration: the Lambda test above)
    assert present(after, "mark_faas_cold_starts_total", model=MODEL)
    assert present(after, "mark_faas_throttles_total", model=MODEL)

    # both front-end processes served, and /metrics summed them. They accept on one socket:
    # whichever wakes first may take all of a burst's connections (all 20 went to one
    # process on a loaded host), so fresh connections one at a time until the worker has served
    (worker,) = cluster.cluster._worker_procs

    async def spread() -> None:
        for _ in range(300):
            if _served_200(worker.pid) > 0:
                return
            async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(force_close=True)) as s, \
                    s.post(f"{url}/v2/models/{MODEL}/infer", data=BODY) as r:
                assert r.status == 200

    asyncio.run(spread())
    directory = fm.metrics_dir()
    assert directory is not None
    deadline = time.monotonic() + 5.0
    while True:  # a process counts a request just after answering it
        pids = [int(Path(f).stem.split("_")[1])
                for f in glob.glob(str(directory / "counter_*.db"))]
        by_pid = {pid: _served_200(pid) for pid in pids}
        scraped = total(scrape(url), "mark_requests_total", model=MODEL, status="200")
        if sum(by_pid.values()) == scraped or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert by_pid.get(os.getpid(), 0) > 0 and by_pid.get(worker.pid, 0) > 0, by_pid
    assert sum(by_pid.values()) == scraped

    # the control plane's gauges
    ready = total(after, "mark_instances", model=MODEL, state="ready")
    assert ready >= 1 and present(after, "mark_instances", model=MODEL,
                                  instance_type="c5.xlarge", market="on_demand")
    costs = {m: total(after, "mark_cost_usd_total", market=m)
             for m in ("on_demand", "spot", "faas", "total")}
    assert costs["on_demand"] > 0 and costs["faas"] > 0
    assert costs["total"] == pytest.approx(costs["on_demand"] + costs["spot"] + costs["faas"],
                                           rel=1e-3, abs=1e-6)
    per_hour = {m: total(after, "mark_cost_usd_per_hour", market=m)
                for m in ("on_demand", "spot", "faas", "total")}
    assert per_hour["on_demand"] == pytest.approx(0.17 * ready, rel=0.5)  # c5.xlarge, us-east-1
    assert per_hour["total"] >= per_hour["on_demand"]
    assert 0 < total(after, "mark_arrival_rate_rps", model=MODEL) <= n / 10 + 1
    assert total(after, "mark_forecast_rate_rps", model=MODEL) == pytest.approx(4.0, rel=0.5)
    assert total(after, "mark_capacity_rps", model=MODEL) > 0
    assert total(after, "mark_slo_latency_seconds", model=MODEL) == 0.5
    assert total(after, "mark_slo_percentile", model=MODEL) == 98.0
    attained = total(after, "mark_slo_attainment_ratio", model=MODEL)
    assert 0 < attained <= 1
    q = {x: total(after, "mark_latency_window_seconds", model=MODEL, quantile=x)
         for x in ("0.5", "0.98", "0.99")}
    assert BUCKETS_S[0] / 2 < q["0.5"] <= q["0.98"] <= q["0.99"] <= 30.0, q
    assert q["0.5"] >= 0.1  # no reply is faster than the model's 132 ms at batch 1
