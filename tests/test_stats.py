"""Triton's statistics extension through the front end: the sum of the instances' own."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import numpy as np
import pytest
import tritonclient.http as th

from frontend.stats import sum_model_stats
from mark.cluster import ClusterThread


def client(url: str) -> th.InferenceServerClient:
    return th.InferenceServerClient(url.removeprefix("http://"))


def _entry(doc: dict[str, Any], model: str) -> dict[str, Any]:
    (entry,) = [e for e in doc["model_stats"] if e["name"] == model]
    return entry


def _totals(entry: dict[str, Any]) -> dict[str, int]:
    """The counters to compare, flattened: inference_stats.*.count/ns and batch counts."""
    out = {"inference_count": entry["inference_count"], "execution_count": entry["execution_count"]}
    for kind, v in entry["inference_stats"].items():
        out[f"{kind}.count"] = v["count"]
        out[f"{kind}.ns"] = v["ns"]
    for b in entry["batch_stats"]:
        out[f"batch{b['batch_size']}.count"] = b["compute_infer"]["count"]
        out[f"batch{b['batch_size']}.ns"] = b["compute_infer"]["ns"]
    return out


def _add(dicts: list[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


@pytest.mark.triton
def test_statistics_are_the_sum_over_instances(main_cluster: ClusterThread) -> None:
    front = client(main_cluster.url)
    direct = [client(i.url) for i in main_cluster.cluster.fleet.ready("identity")]
    assert len(direct) == 3
    before = _totals(_entry(front.get_inference_statistics("identity"), "identity"))
    x = np.ones((1, 16), dtype=np.float32)
    for _ in range(20):
        inp = th.InferInput("INPUT0", [1, 16], "FP32")
        inp.set_data_from_numpy(x)
        front.infer("identity", [inp])
    via_front = _entry(front.get_inference_statistics("identity"), "identity")
    per_instance = [_entry(c.get_inference_statistics("identity"), "identity") for c in direct]
    after = _totals(via_front)
    assert after == _add([_totals(e) for e in per_instance])
    assert after["success.count"] - before["success.count"] == 20
    assert after["inference_count"] - before["inference_count"] == 20
    assert via_front["last_inference"] == max(e["last_inference"] for e in per_instance)
    assert (via_front["name"], via_front["version"]) == ("identity", "1")
    # the version route and the all-models route agree
    versioned = _entry(front.get_inference_statistics("identity", "1"), "identity")
    assert _totals(versioned) == after
    everything = front.get_inference_statistics()
    assert {e["name"] for e in everything["model_stats"]} == {"identity", "minilm"}
    assert _totals(_entry(everything, "identity")) == after
    assert "statistics" in front.get_server_metadata()["extensions"]


@pytest.mark.triton
def test_statistics_of_an_unknown_model_is_404(main_cluster: ClusterThread) -> None:
    async def get() -> tuple[int, dict[str, str]]:
        async with aiohttp.ClientSession() as s, \
                s.get(f"{main_cluster.url}/v2/models/nope/stats") as r:
            return r.status, json.loads(await r.read())

    status, doc = asyncio.run(get())
    assert status == 404 and "known models: ['identity', 'minilm']" in doc["error"]


def test_sum_matches_by_model_and_batch_size() -> None:
    def stat(count: int, ns: int) -> dict[str, int]:
        return {"count": count, "ns": ns}

    def doc(n: int, last: int, batches: dict[int, int]) -> dict[str, Any]:
        return {"model_stats": [{
            "name": "m", "version": "1", "last_inference": last, "inference_count": n,
            "execution_count": n, "inference_stats": {"success": stat(n, 10 * n),
                                                      "fail": stat(0, 0)},
            "batch_stats": [{"batch_size": b, "compute_infer": stat(c, c)}
                            for b, c in batches.items()],
            "memory_usage": [],
        }]}

    total = sum_model_stats([doc(3, 100, {1: 3}), doc(5, 300, {2: 1, 1: 3}), doc(0, 0, {})])
    (m,) = total["model_stats"]
    assert (m["inference_count"], m["last_inference"]) == (8, 300)
    assert m["inference_stats"]["success"] == {"count": 8, "ns": 80}
    assert m["batch_stats"] == [{"batch_size": 1, "compute_infer": {"count": 6, "ns": 6}},
                                {"batch_size": 2, "compute_infer": {"count": 1, "ns": 1}}]
    assert sum_model_stats([]) == {"model_stats": []}
