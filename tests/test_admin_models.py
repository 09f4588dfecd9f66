"""Models registered, updated and deleted through ``/admin/models`` on a running cluster:
real Triton processes (the ``profiled`` model), the control loop, the local function
runtime, two front-end processes sharing the port."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiohttp
import numpy as np
import pytest
import requests

from mark.cluster import ClusterThread
from mark.core.config import (
    AdminConfig,
    ControlConfig,
    FleetConfig,
    FrontendConfig,
    FunctionsConfig,
    MarkConfig,
    ModelConfig,
)
from mark.loadgen import LoadClient, LoadResult
from tests import servers

BODY = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                    "data": list(range(16))}]}
NEW = {"name": "reg", "kind": "profiled", "profile": "inception-v3", "max_batch_size": 16,
       "slo_latency_ms": 300, "instance_types": ["c5.xlarge"]}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterThread]:
    cfg = MarkConfig(
        models=[ModelConfig(name="base", kind="profiled", profile="inception-v3",
                            max_batch_size=16)],
        fleet=FleetConfig(instances=1, health_interval_s=0.5, launch_delay_s=0.0),
        # steps only when woken (an SLO update); the floor keeps one instance per model
        control=ControlConfig(interval_s=3600.0, types=["c5.xlarge"], min_instances=1),
        faas=FunctionsConfig(port=0, concurrency=32, keep_alive_s=600.0),
        frontend=FrontendConfig(port=0, workers=2),
        admin=AdminConfig(model_paths=[str(tmp_path_factory.mktemp("allowed"))]),
        runtime_dir=tmp_path_factory.mktemp("admin-models"),
    )
    c = ClusterThread(cfg)
    yield c
    c.stop()


def admin(c: ClusterThread, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(method, c.url + path, json=body, timeout=30)


def ready_instances(c: ClusterThread, model: str) -> list[dict[str, Any]]:
    return [i for i in admin(c, "GET", "/admin/fleet").json()
            if i["model"] == model and i["state"] == "ready"]


def wait_for(pred: Any, timeout_s: float = 60.0, what: str = "") -> Any:
    return servers.wait_for(pred, timeout_s, what, every_s=0.2)


def load(c: ClusterThread, model: str, rps: float, seconds: float, seed: int) -> LoadResult:
    rng = np.random.default_rng(seed)
    arrivals = np.sort(rng.uniform(0.0, seconds, rng.poisson(rps * seconds)))

    async def run() -> LoadResult:
        async with LoadClient(c.url, model, timeout_s=30.0) as client:
            return await client.open_loop(arrivals)

    return asyncio.run(run())


def reg_gauges(c: ClusterThread) -> list[str]:
    """The lines of gauges of the model ``reg`` in ``/metrics``."""
    text = requests.get(f"{c.url}/metrics", timeout=10).text
    gauges = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")
              and line.endswith(" gauge")}
    return [line for line in text.splitlines() if 'model="reg"' in line
            and line.split("{")[0] in gauges]


def test_register_validates_and_names_the_field(cluster: ClusterThread) -> None:
    allowed = cluster.cluster.cfg.admin.model_paths[0]
    cases = [
        # a repository is code the server runs, a profile a file it reads: only under
        # admin.model_paths, checked before anything reads them
        ({**NEW, "repository": "/etc"}, 400, "repository: '/etc' is outside the directories"),
        ({**NEW, "repository": f"{allowed}/../escape"}, 400, "is outside the directories"),
        ({**NEW, "profile": "/etc/passwd"}, 400, "profile: '/etc/passwd' is outside"),
        ({**NEW, "repository": f"{allowed}/none"}, 400, "repository"),  # inside, not there
        ({"kind": "profiled"}, 400, "name"),
        ({**NEW, "name": "bad name!"}, 400, "name"),
        ({**NEW, "kind": "resnet"}, 400, "kind"),
        ({**NEW, "slo_latency_ms": -5}, 400, "slo_latency_ms"),
        ({**NEW, "instance_types": ["m9.huge"]}, 400, "instance_types"),
        ({**NEW, "markets": ["spot"]}, 400, "markets"),
        ({**NEW, "surprise": 1}, 400, "surprise"),
        ({**NEW, "name": "base"}, 409, "registered already"),
    ]
    for body, status, needle in cases:
        r = admin(cluster, "POST", "/admin/models", body)
        assert r.status_code == status, (body, r.text)
        assert needle in r.json()["error"], (body, r.text)
    r = requests.post(cluster.url + "/admin/models", data=b"{not json",
                      headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 400 and "not JSON" in r.json()["error"]
    assert admin(cluster, "GET", "/admin/models/nope").status_code == 404
    # nothing was registered by the refused bodies
    assert [m["name"] for m in admin(cluster, "GET", "/admin/models").json()] == ["base"]


def test_register_infer_update_delete(cluster: ClusterThread) -> None:
    r = admin(cluster, "POST", "/admin/models", NEW)
    assert r.status_code == 201, r.text
    assert r.json()["slo_latency_ms"] == 300 and r.json()["status"] == "serving"
    assert "reg" in [m["name"] for m in admin(cluster, "GET", "/admin/models").json()]
    wait_for(lambda: ready_instances(cluster, "reg"), what="an instance of the new model")

    # both front-end processes serve it (connections spread over the shared port)
    statuses = Counter(requests.post(f"{cluster.url}/v2/models/reg/infer", json=BODY,
                                     timeout=10).status_code for _ in range(30))
    assert statuses == Counter({200: 30}), statuses
    frozen = admin(cluster, "PUT", "/admin/models/reg", {"kind": "identity"})
    assert frozen.status_code == 400 and "kind" in frozen.json()["error"]

    # the SLO: a tight one spills much at this load; loosened, the same load spills less
    # (the step the update wakes may also grow the fleet, which only spills less too)
    inst = cluster.cluster.fleet.instances[ready_instances(cluster, "reg")[0]["id"]]
    tight_budget = inst.extra["spill"].budget_s
    tight = load(cluster, "reg", 8.0, 4.0, seed=1)  # about the type's service rate
    r = admin(cluster, "PUT", "/admin/models/reg", {"slo_latency_ms": 1500})
    assert r.status_code == 200 and r.json()["slo_latency_ms"] == 1500, r.text
    assert admin(cluster, "GET", "/admin/models/reg").json()["slo_latency_ms"] == 1500
    wait_for(lambda: any(d.get("model") == "reg" and d["t"] > 0 for d in
                         admin(cluster, "GET", "/admin/decisions").json()),
             what="the step the update woke")
    wait_for(lambda: all(i["state"] != "pending" for i in admin(cluster, "GET", "/admin/fleet")
                         .json() if i["model"] == "reg"), what="launches to settle")
    assert inst.extra["spill"].budget_s > tight_budget + 0.5  # the new plan's budget
    time.sleep(0.5)  # the worker processes apply the new plan's snapshot
    loose = load(cluster, "reg", 8.0, 4.0, seed=1)
    for res in (loose, tight):
        assert res.lost == 0 and not res.errors, res.to_json()
    assert tight.spilled / tight.ok > loose.spilled / loose.ok + 0.15, (
        loose.to_json(), tight.to_json())

    # delete under load (as above): everything sent is answered, 200 before, 404 after
    ids = {i["id"] for i in ready_instances(cluster, "reg")}
    wait_for(lambda: reg_gauges(cluster), what="the control plane's gauges of the model")
    gap_s = 1.0 / 6.0

    async def during_delete() -> Counter[int | str]:
        out: Counter[int | str] = Counter()
        async with aiohttp.ClientSession() as s:
            async def one(delay: float) -> None:
                await asyncio.sleep(delay)
                try:
                    async with s.post(f"{cluster.url}/v2/models/reg/infer", json=BODY) as resp:
                        await resp.read()
                        out[resp.status] += 1
                except aiohttp.ClientError as exc:
                    out[type(exc).__name__] += 1

            async def delete() -> None:
                await asyncio.sleep(2.0)
                async with s.delete(f"{cluster.url}/admin/models/reg") as resp:
                    out[f"delete:{resp.status}"] += 1

            await asyncio.gather(delete(), *(one(k * gap_s) for k in range(int(4.0 / gap_s))))
        return out

    got = asyncio.run(during_delete())
    assert got["delete:202"] == 1, got
    assert set(got) <= {200, 404, "delete:202"}, got
    assert got[200] > 5 and got[404] > 5, got
    wait_for(lambda: not ids & {i["id"] for i in admin(cluster, "GET", "/admin/fleet").json()},
             what="the deleted model's fleet to drain")
    wait_for(lambda: admin(cluster, "GET", "/admin/models/reg").status_code == 404,
             what="the model to be gone")
    r = requests.post(f"{cluster.url}/v2/models/reg/infer", json=BODY, timeout=10)
    assert r.status_code == 404 and "reg" in r.json()["error"]
    # its gauges (last values, in files that outlive them) are gone from /metrics; its
    # counters stay (what was served was served)
    assert reg_gauges(cluster) == [], reg_gauges(cluster)
    text = requests.get(f"{cluster.url}/metrics", timeout=10).text
    assert 'mark_requests_total{backend="iaas",model="reg",status="200"}' in text
    assert 'mark_slo_latency_seconds{model="base"}' in text
    # the configured model was never disturbed
    assert requests.post(f"{cluster.url}/v2/models/base/infer", json=BODY,
                         timeout=10).status_code == 200
