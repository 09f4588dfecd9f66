"""The local function runtime (``mark.faas``) as boto3 sees it, and the function handler.

A real runtime on loopback with real sandbox processes, invoked through boto3's Lambda
client with ``endpoint_url`` (fake credentials, no retries): cold and warm starts, the
concurrency limit, Lambda's errors, timeouts, Event and DryRun, idle expiry, batches. The
``identity`` and ``profiled`` (inception-v3's Lambda times) models keep it fast; the handler
is also called directly, as Lambda calls it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import tritonclient.http as th
from botocore.config import Config
from botocore.exceptions import ClientError

from mark.cli import build_parser
from mark.core.config import FunctionsConfig, MarkConfig, ModelConfig
from mark.core.profiles import LambdaProfile, load_profile
from mark.faas import handler as handler_module
from mark.faas.lambda_api import Report, log_tail, parse_function_name
from mark.faas.runtime import FunctionRuntime
from mark.models.profiled.core import ProfiledCore
from tests.servers import wait_for


def _lambda_times(name: str) -> LambdaProfile:
    lam = load_profile(name).lambda_
    assert lam is not None
    return lam


LAMBDA_INCEP = _lambda_times("inception-v3")
TIMEOUT_S = 1.0  # runtime A's handler timeout: a batch of 4 of inception-v3 (1.4 s) passes it


class RuntimeThread:
    """A FunctionRuntime on its own event loop in a thread (boto3 blocks), on a free port."""

    def __init__(self, cfg: MarkConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.runtime = FunctionRuntime(cfg, port=0)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._call(self.runtime.start())
        self.url = self.runtime.url
        self.client = boto3.client(
            "lambda", endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id="test", aws_secret_access_key="test",
            config=Config(retries={"max_attempts": 0}, read_timeout=30, connect_timeout=5))

    def _call(self, coro: Any, timeout_s: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/mark/stats", timeout=5) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self._call(self.runtime.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def config(**faas: Any) -> MarkConfig:
    return MarkConfig(models=[ModelConfig(name="identity", kind="identity"),
                              ModelConfig(name="incep", kind="profiled", profile="inception-v3")],
                      faas=FunctionsConfig(**faas))


@pytest.fixture(scope="module")
def rt() -> Iterator[RuntimeThread]:
    """Runtime A: one sandbox per function at most, handlers killed after 1 s."""
    r = RuntimeThread(config(concurrency=1, timeout_s=TIMEOUT_S))
    yield r
    r.stop()


# --- v2 bodies, events, results ----------------------------------------------------------

def v2_item(x: np.ndarray, binary_in: bool = True, binary_out: bool | None = True,
            name: str = "INPUT0") -> dict[str, Any]:
    """One request of an event, built by tritonclient exactly as it sends it."""
    inp = th.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary_in)
    outs = None if binary_out is None else [th.InferRequestedOutput("OUTPUT0",
                                                                    binary_data=binary_out)]
    body, json_size = th.InferenceServerClient.generate_request_body([inp], outputs=outs)
    headers = {"content-type": "application/json"}
    if json_size is not None:
        headers = {"content-type": "application/octet-stream",
                   "inference-header-content-length": str(json_size)}
    return {"body_b64": base64.b64encode(body).decode(), "headers": headers}


def event(model: str, *items: dict[str, Any]) -> bytes:
    return json.dumps({"model": model, "requests": list(items)}).encode()


def decoded(resp: dict[str, Any]) -> np.ndarray:
    """OUTPUT0 of one response slot, parsed by tritonclient's InferResult."""
    assert resp["status"] == 200, resp
    hl = resp["headers"].get("inference-header-content-length")
    result = th.InferenceServerClient.parse_response_body(
        base64.b64decode(resp["body_b64"]), header_length=int(hl) if hl else None)
    out = result.as_numpy("OUTPUT0")
    assert out is not None
    return out


def invoke(r: RuntimeThread, function: str, payload: bytes,
           **kw: Any) -> tuple[dict[str, Any], Any, float]:
    """(boto3's response, the decoded payload, wall seconds)."""
    t0 = time.perf_counter()
    resp = r.client.invoke(FunctionName=function, Payload=payload, LogType="Tail", **kw)
    body = resp["Payload"].read()
    return resp, (json.loads(body) if body else None), time.perf_counter() - t0


def log_of(resp: dict[str, Any]) -> str:
    return base64.b64decode(resp["LogResult"]).decode()


def x16(rows: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 16)).astype(np.float32)


# --- the runtime -------------------------------------------------------------------------

def test_a_cold_then_a_warm_invocation(rt: RuntimeThread) -> None:
    x = x16(2)
    cold, out1, cold_s = invoke(rt, "mark-identity", event("identity", v2_item(x)))
    warm, out2, warm_s = invoke(rt, "mark-identity", event("identity", v2_item(x, False, False)))
    for resp, out in ((cold, out1), (warm, out2)):
        assert resp["StatusCode"] == 200 and "FunctionError" not in resp
        assert resp["ExecutedVersion"] == "$LATEST"
        assert resp["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
        np.testing.assert_array_equal(decoded(out["responses"][0]), x * 2)
    # the cold start loaded the model in a new sandbox; its REPORT says how long
    init = re.search(r"\tInit Duration: ([\d.]+) ms\t", log_of(cold))
    assert init is not None and "Init Duration" not in log_of(warm)
    report = re.compile(r"REPORT RequestId: [0-9a-f-]{36}\tDuration: [\d.]+ ms\tBilled Duration: "
                        r"(\d+) ms\tMemory Size: 3008 MB\tMax Memory Used: \d+ MB\t")
    assert report.search(log_of(cold)) and report.search(log_of(warm))
    assert log_of(warm).rstrip("\n").splitlines()[-1].startswith("REPORT RequestId:")
    init_ms = float(init.group(1))
    assert cold_s - warm_s > 0.5 * init_ms / 1000.0, (cold_s, warm_s, init_ms)
    stats = rt.stats()["mark-identity"]
    assert stats["cold_starts"] == 1 and stats["invocations"] == 2 and stats["idle"] == 1
    print(f"identity: cold {cold_s * 1000:.0f} ms (Init Duration {init_ms:.0f} ms), "
          f"warm {warm_s * 1000:.1f} ms")


def test_a_batch_of_three_is_answered_in_order_and_a_bad_request_only_fails_its_slot(
        rt: RuntimeThread) -> None:
    xs = [x16(1, 1), x16(3, 2), x16(2, 3)]
    bad = {"body_b64": base64.b64encode(b'{"inputs": [{"name": "NOPE"}]}').decode(),
           "headers": {"content-type": "application/json"}}
    items = [v2_item(xs[0]), v2_item(xs[1], binary_in=False, binary_out=False), bad,
             v2_item(xs[2], binary_out=None)]
    resp, out, _ = invoke(rt, "mark-identity", event("identity", *items))
    assert "FunctionError" not in resp
    slots = out["responses"]
    assert len(slots) == 4
    for slot, x in zip([slots[0], slots[1], slots[3]], xs, strict=True):
        np.testing.assert_array_equal(decoded(slot), x * 2)
    assert slots[1]["headers"] == {"content-type": "application/json"}  # JSON asked, JSON sent
    assert "inference-header-content-length" in slots[3]["headers"]  # binary_data_output
    assert slots[2]["status"] == 400
    error = json.loads(base64.b64decode(slots[2]["body_b64"]))["error"]
    assert "'NOPE' is not an input of model 'identity'; accepted: ['INPUT0']" in error


def test_the_concurrency_limit_throttles_with_lambdas_error(rt: RuntimeThread) -> None:
    slow = event("incep", v2_item(x16(2)))  # inception-v3 on Lambda: ~0.72 s for a batch of 2
    invoke(rt, "mark-incep", slow)  # warm the one sandbox first
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(invoke, rt, "mark-incep", slow)
        # Wait for the runtime to hold the first call (a fixed sleep lost this race on a
        # loaded host: the second call arrived before the first and nothing was throttled).
        wait_for(lambda: rt.stats()["mark-incep"]["busy"] >= 1, 5.0,
                 "the first call to reach its sandbox", every_s=0.005)
        with pytest.raises(ClientError) as err:
            rt.client.invoke(FunctionName="mark-incep", Payload=slow)
        resp, _, took = first.result()
    e = err.value.response
    assert e["Error"]["Code"] == "TooManyRequestsException"
    assert e["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert e["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert e["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "1"
    assert "all its 1 sandboxes busy" in e["Error"]["Message"]
    assert "FunctionError" not in resp and took >= LAMBDA_INCEP.service_s(3008, 2)
    assert rt.stats()["mark-incep"]["throttles"] >= 1


def test_a_handler_past_its_timeout_is_killed_and_the_next_call_still_works(
        rt: RuntimeThread) -> None:
    invoke(rt, "mark-incep", event("incep", v2_item(x16(1))))
    (sandbox,) = rt.stats()["mark-incep"]["sandboxes"]
    assert LAMBDA_INCEP.service_s(3008, 4) > TIMEOUT_S
    resp, out, took = invoke(rt, "mark-incep", event("incep", v2_item(x16(4))))
    assert resp["StatusCode"] == 200 and resp["FunctionError"] == "Unhandled"
    assert out["errorType"] == "Sandbox.Timedout"
    assert re.fullmatch(r"\S+Z [0-9a-f-]{36} Task timed out after 1\.00 seconds",
                        out["errorMessage"])
    assert TIMEOUT_S <= took < TIMEOUT_S + 1.0
    assert "Billed Duration: 1000 ms" in log_of(resp)
    stats = rt.stats()["mark-incep"]
    assert stats["timeouts"] == 1 and stats["sandboxes"] == []
    assert not Path(f"/proc/{sandbox['pid']}").exists()  # killed and reaped
    resp, out, _ = invoke(rt, "mark-incep", event("incep", v2_item(x16(1))))
    assert "FunctionError" not in resp and "Init Duration" in log_of(resp)  # a new sandbox
    np.testing.assert_array_equal(decoded(out["responses"][0]), x16(1))  # OUTPUT0 = INPUT0


def test_lambdas_api_errors(rt: RuntimeThread) -> None:
    def code(**kw: Any) -> tuple[str, int, str]:
        with pytest.raises(ClientError) as err:
            rt.client.invoke(**kw)
        e = err.value.response
        return e["Error"]["Code"], e["ResponseMetadata"]["HTTPStatusCode"], e["Error"]["Message"]

    c, status, msg = code(FunctionName="nope", Payload=b"{}")
    assert (c, status) == ("ResourceNotFoundException", 404)
    assert "function:nope; known functions: ['mark-identity', 'mark-incep']" in msg
    c, status, msg = code(FunctionName="mark-identity", Qualifier="7", Payload=b"{}")
    assert (c, status) == ("ResourceNotFoundException", 404) and "only $LATEST" in msg
    big = b'"' + b"x" * 6_291_456 + b'"'
    c, status, msg = code(FunctionName="mark-identity", Payload=big)
    assert (c, status) == ("RequestEntityTooLargeException", 413) and "6291456 bytes" in msg
    c, status, msg = code(FunctionName="mark-identity", Payload=b"{not json")
    assert (c, status) == ("InvalidRequestContentException", 400)
    assert "Could not parse request body into json" in msg
    # a full ARN and name:$LATEST name the same function
    for name in ("arn:aws:lambda:us-east-1:000000000000:function:mark-identity",
                 "mark-identity:$LATEST"):
        resp, out, _ = invoke(rt, name, event("identity", v2_item(x16())))
        assert "FunctionError" not in resp and out["responses"][0]["status"] == 200


def test_a_handler_error_is_a_function_error(rt: RuntimeThread) -> None:
    resp, out, _ = invoke(rt, "mark-identity", b'{"model": 5, "requests": []}')
    assert resp["StatusCode"] == 200 and resp["FunctionError"] == "Unhandled"
    assert out["errorType"] == "InvalidEvent" and "'model' must be a model name" in out["errorMessage"]
    assert out["stackTrace"] and "[ERROR] InvalidEvent" in log_of(resp)
    resp, out, _ = invoke(rt, "mark-identity", event("resnet"))
    assert resp["FunctionError"] == "Unhandled"
    assert "unknown model 'resnet'; known models: ['identity', 'incep']" in out["errorMessage"]
    assert rt.stats()["mark-identity"]["errors"] >= 2


def test_event_and_dry_run(rt: RuntimeThread) -> None:
    before = rt.stats()["mark-identity"]["invocations"]
    resp = rt.client.invoke(FunctionName="mark-identity", InvocationType="DryRun")
    assert resp["StatusCode"] == 204
    resp = rt.client.invoke(FunctionName="mark-identity", InvocationType="Event",
                            Payload=event("identity", v2_item(x16())))
    assert resp["StatusCode"] == 202 and resp["Payload"].read() == b""
    deadline = time.monotonic() + 10
    while rt.stats()["mark-identity"]["invocations"] < before + 1:
        assert time.monotonic() < deadline, "the Event invocation never ran"
        time.sleep(0.05)
    assert rt.stats()["mark-identity"]["invocations"] == before + 1  # DryRun runs nothing


def test_an_idle_sandbox_expires_after_keep_alive() -> None:
    r = RuntimeThread(config(keep_alive_s=0.5))
    try:
        payload = event("identity", v2_item(x16()))
        first, _, _ = invoke(r, "mark-identity", payload)
        warm, _, _ = invoke(r, "mark-identity", payload)
        assert "Init Duration" in log_of(first) and "Init Duration" not in log_of(warm)
        (sandbox,) = r.stats()["mark-identity"]["sandboxes"]
        time.sleep(1.2)
        stats = r.stats()["mark-identity"]
        assert stats["idle"] == 0 and not Path(f"/proc/{sandbox['pid']}").exists()
        again, _, _ = invoke(r, "mark-identity", payload)
        assert "Init Duration" in log_of(again)
        assert r.stats()["mark-identity"]["cold_starts"] == 2
    finally:
        r.stop()


def test_a_failed_init_is_a_function_error_and_leaves_no_sandbox(tmp_path: Path) -> None:
    profile = tmp_path / "no-lambda.json"  # nothing to emulate a function with
    profile.write_text(json.dumps({"model": "x", "instances": {"local": {"batch_ms": {"1": 5}}}}))
    r = RuntimeThread(MarkConfig(models=[ModelConfig(name="p", kind="profiled",
                                                     profile=str(profile))]))
    try:
        resp, out, _ = invoke(r, "mark-p", event("p", v2_item(x16())))
        assert resp["FunctionError"] == "Unhandled" and out["errorType"] == "ConfigError"
        assert "profile 'x' has no 'lambda' section" in out["errorMessage"]
        assert "Init Duration" in log_of(resp)
        stats = r.stats()["mark-p"]
        assert (stats["cold_starts"], stats["errors"], stats["sandboxes"]) == (1, 1, [])
    finally:
        r.stop()


# --- the handler, as Lambda calls it -----------------------------------------------------

def test_the_handler_called_directly_with_mark_config_json(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    profile = tmp_path / "batchy.json"  # batching nearly free: 4 rows cost what 1 does
    profile.write_text(json.dumps({
        "model": "batchy", "instances": {"local": {"batch_ms": {"1": 1.0, "4": 1.0}}},
        "lambda": {"memory_mb": 3008, "batch_ms": {"1": 200.0, "4": 220.0}}}))
    cfg = MarkConfig(models=[ModelConfig(name="identity", kind="identity"),
                             ModelConfig(name="b", kind="profiled", profile=str(profile))])
    monkeypatch.setenv("MARK_CONFIG_JSON", cfg.model_dump_json())
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", raising=False)
    x = x16(2)
    out = handler_module.handler({"model": "identity", "requests": [v2_item(x)]}, None)
    np.testing.assert_array_equal(decoded(out["responses"][0]), x * 2)
    json.dumps(out)  # the result is what Lambda can marshal
    # two requests of two rows: one batch of 4 (~220 ms), not two of 2 (~2 x 207 ms)
    handler_module.handler({"model": "b", "requests": [v2_item(x16(1))]}, None)  # load
    t0 = time.perf_counter()
    out = handler_module.handler({"model": "b", "requests": [v2_item(x), v2_item(x)]}, None)
    took = time.perf_counter() - t0
    assert 0.215 <= took < 0.40, took
    assert [s["status"] for s in out["responses"]] == [200, 200]
    # the memory Lambda gives the function (its environment says) scales a profiled time
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
    assert handler_module.memory_mb(cfg) == 1024
    core = handler_module.build_core(cfg.models[1], 1024)
    assert isinstance(core, ProfiledCore)
    assert core.table_s[1] == _lambda_times(str(profile)).service_s(1024, 1) > 0.3
    with pytest.raises(handler_module.InvalidEvent, match="'requests' must be a list"):
        handler_module.handler({"model": "identity"}, None)


# --- the wire format, pure -----------------------------------------------------------------

def test_function_names_and_the_report_line() -> None:
    assert parse_function_name("mark-a").name == "mark-a"
    ref = parse_function_name("arn:aws:lambda:eu-west-1:123456789012:function:mark-a:$LATEST")
    assert (ref.name, ref.qualifier) == ("mark-a", "$LATEST")
    ref = parse_function_name("123456789012:function:mark-a", "prod")
    assert (ref.name, ref.qualifier) == ("mark-a", "prod")
    report = Report("r-1", 12.341, 3008, 57, init_ms=250.5)
    assert report.billed_ms == 263
    assert report.line() == ("REPORT RequestId: r-1\tDuration: 12.34 ms\tBilled Duration: 263 ms"
                             "\tMemory Size: 3008 MB\tMax Memory Used: 57 MB\t"
                             "Init Duration: 250.50 ms\t")
    tail = base64.b64decode(log_tail("r-1", "x" * 10_000, Report("r-1", 1.0, 128, 1))).decode()
    assert len(tail.encode()) <= 4096 and tail.endswith("Max Memory Used: 1 MB\t\n")


def test_mark_faas_is_a_command() -> None:
    args = build_parser().parse_args(["faas", "--config", "x.yaml", "--port", "0"])
    assert (args.command, args.config, args.port) == ("faas", "x.yaml", 0)


def test_every_sandbox_is_gone_when_the_runtime_stops() -> None:
    r = RuntimeThread(config())
    invoke(r, "mark-identity", event("identity", v2_item(x16())))
    pids = [s["pid"] for f in r.stats().values() for s in f["sandboxes"]]
    r.stop()
    assert pids and not any(Path(f"/proc/{p}").exists() for p in pids)
    assert os.environ.get("MARK_MODEL") is None  # the runtime never sets it on itself


@pytest.mark.slow
def test_minilm_in_a_function_embeds_like_the_instances() -> None:
    """The real model, once: a cold start that loads torch and the weights, then a warm call."""
    cfg = MarkConfig(models=[ModelConfig(name="minilm", kind="minilm", torch_threads=1)],
                     faas=FunctionsConfig(timeout_s=60))
    r = RuntimeThread(cfg)
    try:
        text = th.InferInput("TEXT", [2, 1], "BYTES")
        text.set_data_from_numpy(np.array([[b"hello"], [b"a longer sentence"]], dtype=object))
        body, json_size = th.InferenceServerClient.generate_request_body([text])
        item = {"body_b64": base64.b64encode(body).decode(),
                "headers": {"inference-header-content-length": str(json_size)}}
        cold, out, cold_s = invoke(r, "mark-minilm", event("minilm", item))
        warm, out2, warm_s = invoke(r, "mark-minilm", event("minilm", item))
        for resp, o in ((cold, out), (warm, out2)):
            assert "FunctionError" not in resp, o
            slot = o["responses"][0]
            hl = int(slot["headers"]["inference-header-content-length"])
            emb = th.InferenceServerClient.parse_response_body(
                base64.b64decode(slot["body_b64"]), header_length=hl).as_numpy("EMBEDDING")
            assert emb is not None and emb.shape == (2, 384)
            np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-3)
        init = re.search(r"Init Duration: ([\d.]+) ms", log_of(cold))
        assert init is not None and "Init Duration" not in log_of(warm)
        assert cold_s > warm_s + 1.0
        print(f"minilm: cold {cold_s * 1000:.0f} ms (Init Duration {float(init.group(1)):.0f} "
              f"ms), warm {warm_s * 1000:.1f} ms")
    finally:
        r.stop()
