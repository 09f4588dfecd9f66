"""The front end against real Triton instances on loopback, judged by tritonclient."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import aiohttp
import numpy as np
import pytest
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from mark.cluster import ClusterThread
from tests.conftest import MAIN_WEIGHTS, MAX_BODY

pytestmark = pytest.mark.triton


def client(url: str) -> th.InferenceServerClient:
    return th.InferenceServerClient(url.removeprefix("http://"))


def embed(c: th.InferenceServerClient, texts: list[str]) -> np.ndarray:
    inp = th.InferInput("TEXT", [len(texts), 1], "BYTES")
    inp.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
    return c.infer("minilm", [inp]).as_numpy("EMBEDDING")


def test_tritonclient_reads_metadata_and_infers_like_direct(main_cluster: ClusterThread) -> None:
    front = client(main_cluster.url)
    assert front.is_server_live() and front.is_server_ready()
    assert front.is_model_ready("minilm")
    meta = front.get_model_metadata("minilm")
    assert meta["inputs"] == [{"name": "TEXT", "datatype": "BYTES", "shape": [-1, 1]}]
    texts = ["a cat sits on the mat", "cloud bills are too high"]
    via_front = embed(front, texts)
    inst = next(iter(main_cluster.cluster.fleet.instances.values()))
    direct = embed(client(inst.url), texts)
    assert via_front.shape == (2, 384)
    np.testing.assert_allclose(via_front, direct, rtol=1e-5, atol=1e-6)
    # a real encoder: related sentences are closer than unrelated ones
    e = embed(front, ["a cat sits on the mat", "a kitten rests on a rug", "stock prices fell"])
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2


def test_binary_and_json_inputs_and_headers(main_cluster: ClusterThread) -> None:
    front = client(main_cluster.url)
    x = np.arange(32, dtype=np.float32).reshape(2, 16)
    for binary in (True, False):
        inp = th.InferInput("INPUT0", [2, 16], "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = th.InferRequestedOutput("OUTPUT0", binary_data=binary)
        res = front.infer("identity", [inp], outputs=[out])
        np.testing.assert_array_equal(res.as_numpy("OUTPUT0"), 2 * x)

    async def headers() -> dict[str, str]:
        async with aiohttp.ClientSession() as s, s.post(
            f"{main_cluster.url}/v2/models/identity/infer",
            json={"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                              "data": [1.0] * 16}]},
        ) as r:
            assert r.status == 200
            return dict(r.headers)

    h = asyncio.run(headers())
    assert h["x-mark-backend"] == "iaas"
    assert h["x-mark-instance"] in main_cluster.cluster.fleet.instances


async def _count_instances(url: str, n: int, rows: int = 1) -> Counter[str]:
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [rows, 16],
                        "data": [0.0] * (16 * rows)}]}
    counts: Counter[str] = Counter()
    async with aiohttp.ClientSession() as s:
        for _ in range(n):
            async with s.post(f"{url}/v2/models/identity/infer", json=body) as r:
                assert r.status == 200, await r.text()
                counts[r.headers["x-mark-instance"]] += rows
    return counts


def test_weighted_round_robin_follows_weights(main_cluster: ClusterThread) -> None:
    counts = asyncio.run(_count_instances(main_cluster.url, 600))
    weights = {i.id: i.capacity_rps for i in main_cluster.cluster.fleet.instances.values()}
    assert sorted(weights.values()) == MAIN_WEIGHTS
    total_w = sum(weights.values())
    for iid, w in weights.items():
        share = counts[iid] / 600
        assert abs(share - w / total_w) <= 0.05 * (w / total_w), (counts, weights)


def test_weights_count_requests_in_batched_dispatches(main_cluster: ClusterThread) -> None:
    counts = asyncio.run(_count_instances(main_cluster.url, 150, rows=4))
    weights = {i.id: i.capacity_rps for i in main_cluster.cluster.fleet.instances.values()}
    total = sum(counts.values())
    for iid, w in weights.items():
        assert abs(counts[iid] / total - w / sum(weights.values())) <= 0.05 * w / 6


def _post(url: str, path: str, data: bytes, headers: dict[str, str] | None = None
          ) -> tuple[int, dict[str, str], dict[str, str]]:
    async def go() -> tuple[int, dict[str, str], dict[str, str]]:
        async with aiohttp.ClientSession() as s, s.post(url + path, data=data,
                                                       headers=headers or {}) as r:
            return r.status, dict(r.headers), json.loads(await r.read())

    return asyncio.run(go())


def _ident(**kw: object) -> bytes:
    t = {"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": [1.0] * 16}
    t.update(kw)
    return json.dumps({"inputs": [t]}).encode()


@pytest.mark.parametrize(
    ("model", "data", "status", "needle"),
    [
        ("nope", _ident(), 404, "known models: ['identity', 'minilm']"),
        ("identity", b'{"inputs": [', 400, "not valid JSON"),
        ("identity", _ident(name="INPUT9"), 400, "accepted: ['INPUT0']"),
        ("identity", _ident(datatype="INT32"), 400, "expects FP32"),
        ("identity", _ident(shape=[1, 4], data=[1.0] * 4), 400, "expects [-1, 16]"),
        ("identity", b"x" * (MAX_BODY + 10), 413, "too large"),
    ],
)
def test_bad_input_gets_a_clear_status(main_cluster: ClusterThread, model: str, data: bytes,
                                       status: int, needle: str) -> None:
    code, _, doc = _post(main_cluster.url, f"/v2/models/{model}/infer", data)
    assert code == status
    assert needle in doc["error"]


def test_tritonclient_sees_errors(main_cluster: ClusterThread) -> None:
    with pytest.raises(InferenceServerException, match="unknown model"):
        client(main_cluster.url).get_model_metadata("nope")


def test_no_ready_instance_is_503_with_retry_after(empty_frontend: ClusterThread) -> None:
    code, headers, doc = _post(empty_frontend.url, "/v2/models/identity/infer", _ident())
    assert code == 503
    assert headers["Retry-After"] == "1"
    assert "no ready instance" in doc["error"]
    assert not client(empty_frontend.url).is_server_ready()
