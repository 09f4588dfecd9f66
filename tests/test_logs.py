"""Structured logs that never hold a secret, and request ids from the client (or the front end)
to the instance or function and back in ``x-request-id``."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import requests
from aiohttp import web

from mark.cluster import ClusterThread
from mark.core.config import (
    ControlConfig,
    FleetConfig,
    FrontendConfig,
    FunctionsConfig,
    LoggingConfig,
    MarkConfig,
    ModelConfig,
)
from mark.core.instances import Instance, InstanceState, Market
from mark.core.logs import REDACTED, Redactor, configure_logging
from mark.models.repository import model_metadata

SECRET = "s3cr3t-admin-token-value"
KEY = "api-key-value-99"
BODY = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": [1.0] * 16}]}
HEX32 = re.compile(r"[0-9a-f]{32}")


# -- the log format and the redaction --------------------------------------------------------
@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    sanic = {n: (list(lg.handlers), lg.propagate) for n in ("sanic.root", "sanic.error")
             for lg in [logging.getLogger(n)]}
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    for n, (hs, prop) in sanic.items():
        lg = logging.getLogger(n)
        lg.handlers[:] = hs
        lg.propagate = prop


def test_json_lines_carry_the_fields_and_the_extras(restore_root: None) -> None:
    out = io.StringIO()
    configure_logging(LoggingConfig(json_lines=True, level="INFO"), stream=out)
    log = logging.getLogger("mark.test")
    log.debug("not at INFO")
    log.info("served %s in %.1f ms", "identity", 3.5,
             extra={"request_id": "abc", "model": "identity", "instance": "local-1-1"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    logging.getLogger("sanic.error").warning("from sanic")  # Sanic's loggers: same format
    lines = out.getvalue().splitlines()
    docs = [json.loads(line) for line in lines]
    assert len(docs) == 3
    first = docs[0]
    assert first["msg"] == "served identity in 3.5 ms"
    assert (first["level"], first["logger"]) == ("INFO", "mark.test")
    assert (first["request_id"], first["model"], first["instance"]) == ("abc", "identity",
                                                                         "local-1-1")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert docs[1]["level"] == "ERROR" and "ValueError: boom" in docs[1]["exc"]
    assert docs[2]["logger"] == "sanic.error" and docs[2]["msg"] == "from sanic"


def test_plain_text_by_default(restore_root: None) -> None:
    out = io.StringIO()
    configure_logging(LoggingConfig(), stream=out)
    logging.getLogger("mark.test").info("hello", extra={"request_id": "r1"})
    line = out.getvalue().strip()
    assert re.fullmatch(r"\S+Z INFO mark\.test\[\d+\]: hello request_id=r1", line), line


@pytest.mark.parametrize("json_lines", [False, True])
def test_secrets_and_credential_headers_are_redacted(restore_root: None,
                                                     json_lines: bool) -> None:
    out = io.StringIO()
    configure_logging(LoggingConfig(json_lines=json_lines), secrets=[SECRET, KEY, None, ""],
                      stream=out)
    log = logging.getLogger("mark.test")
    log.warning("token %s and key %s", SECRET, KEY)
    log.warning("headers %s", {"authorization": "Bearer some-other-token", "x-api-key": "kk1"})
    log.warning("raw: Authorization: Basic dXNlcjpwdw== then more")
    log.warning("extra", extra={"request_id": f"id-{SECRET}", "blob": {"k": KEY}})
    try:
        raise RuntimeError(f"failed with {SECRET}")
    except RuntimeError:
        log.exception("crash")
    text = out.getvalue()
    for leaked in (SECRET, KEY, "some-other-token", "kk1", "dXNlcjpwdw=="):
        assert leaked not in text, (leaked, text)
    assert text.count(REDACTED) >= 7
    assert "then more" in text and "RuntimeError" in text  # only the secrets went


def test_the_redactor_leaves_ordinary_text_alone() -> None:
    r = Redactor([SECRET])
    assert r.redact("model identity served 12 requests") == "model identity served 12 requests"
    assert r.redact(f"x{SECRET}y") == f"x{REDACTED}y"
    assert r.redact("authorization=Bearer abc def") == f"authorization={REDACTED} def"


# -- request ids, live --------------------------------------------------------------------------
class Recorder:
    """A v2 endpoint that answers like an identity instance and keeps each request's headers
    (Triton cannot show what headers it received)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.meta = model_metadata(ModelConfig(name="identity", kind="identity"))
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v2/health/ready", self.ready)
        app.router.add_get("/v2/models/identity", self.metadata)
        app.router.add_post("/v2/models/identity/infer", self.infer)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def ready(self, request: web.Request) -> web.Response:
        return web.Response()

    async def metadata(self, request: web.Request) -> web.Response:
        return web.json_response(self.meta)

    async def infer(self, request: web.Request) -> web.Response:
        self.seen.append({k.lower(): v for k, v in request.headers.items()})
        doc = await request.json()
        return web.json_response({"model_name": "identity", "outputs": [
            {**doc["inputs"][0], "name": "OUTPUT0"}]})

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ClusterThread, Recorder]]:
    cfg = MarkConfig(models=[ModelConfig(name="identity", kind="identity")],
                     control=ControlConfig(enabled=False), fleet=FleetConfig(instances=0),
                     frontend=FrontendConfig(port=0, workers=1),
                     runtime_dir=tmp_path_factory.mktemp("rid"))
    c = ClusterThread(cfg)
    rec = Recorder()

    async def add() -> None:
        await rec.start()
        c.cluster.fleet.upsert(Instance("rec-1", "local", Market.ON_DEMAND, InstanceState.READY,
                                        0.0, 0.0, rec.url, 100.0, ("identity",)))

    c.call(add())
    yield c, rec
    c.call(rec.stop())
    c.stop()


def infer(url: str, model: str = "identity", **headers: str) -> requests.Response:
    return requests.post(f"{url}/v2/models/{model}/infer", json=BODY, headers=headers, timeout=30)


def test_a_request_gets_an_id_that_reaches_the_instance(
        recorded: tuple[ClusterThread, Recorder]) -> None:
    c, rec = recorded
    r = infer(c.url)
    assert r.status_code == 200, r.text
    assert r.headers["x-mark-instance"] == "rec-1"
    rid = r.headers["x-request-id"]
    assert HEX32.fullmatch(rid)
    assert rec.seen[-1]["x-request-id"] == rid
    assert infer(c.url).headers["x-request-id"] != rid  # one per request


def test_the_client_id_is_kept_forwarded_and_returned(
        recorded: tuple[ClusterThread, Recorder]) -> None:
    c, rec = recorded
    for rid in ("client-1", "a b:c/d=e~" + "x" * 118):  # printable ASCII up to 128 chars
        r = infer(c.url, **{"x-request-id": rid})
        assert r.status_code == 200, r.text
        assert r.headers["x-request-id"] == rid
        assert rec.seen[-1]["x-request-id"] == rid


def test_errors_carry_the_id_too(recorded: tuple[ClusterThread, Recorder]) -> None:
    c, _ = recorded
    r = infer(c.url, model="nope", **{"x-request-id": "err-404"})
    assert r.status_code == 404 and r.headers["x-request-id"] == "err-404"
    r = requests.post(f"{c.url}/v2/models/identity/infer", data=b"{", timeout=30,
                      headers={"x-request-id": "err-400"})
    assert r.status_code == 400 and r.headers["x-request-id"] == "err-400"
    r = requests.get(f"{c.url}/no/such/route", timeout=30)
    assert r.status_code == 404 and HEX32.fullmatch(r.headers["x-request-id"])


@pytest.mark.parametrize("bad", ["x" * 129, "caf\u00e9", "tab\there"])
def test_a_bad_request_id_is_a_400_naming_the_header(recorded: tuple[ClusterThread, Recorder],
                                                       bad: str) -> None:
    c, rec = recorded
    before = len(rec.seen)
    r = infer(c.url, **{"x-request-id": bad})
    assert r.status_code == 400, r.text
    msg = r.json()["error"]
    assert "x-request-id" in msg and "128 printable ASCII" in msg
    assert HEX32.fullmatch(r.headers["x-request-id"])  # a new one: the sent one is not valid
    assert len(rec.seen) == before


# -- the function's side ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def spill_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterThread]:
    """No instance at all: every request goes to the model's function."""
    cfg = MarkConfig(
        models=[ModelConfig(name="incep", kind="profiled", profile="inception-v3",
                            max_batch_size=16)],
        fleet=FleetConfig(instances=0),
        control=ControlConfig(interval_s=3600.0, types=["c5.xlarge"]),
        faas=FunctionsConfig(enabled=True, port=0, concurrency=4, keep_alive_s=600.0),
        frontend=FrontendConfig(port=0, workers=1),
        runtime_dir=tmp_path_factory.mktemp("rid-faas"),
    )
    c = ClusterThread(cfg)
    yield c
    c.stop()


def test_a_spilled_request_carries_its_id_into_the_function_log(
        spill_only: ClusterThread) -> None:
    c = spill_only
    assert c.cluster.front.faas is not None and c.cluster.runtime is not None
    invoker = c.cluster.front.faas.invoker
    events: list[bytes] = []
    original = invoker.invoke

    async def spy(function: str, payload: bytes, timeout_s: float) -> Any:
        events.append(payload)
        return await original(function, payload, timeout_s)

    invoker.invoke = spy  # type: ignore[method-assign]
    try:
        r = requests.post(f"{c.url}/v2/models/incep/infer", timeout=60, json={"inputs": [
            {"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": list(range(16))}]},
            headers={"x-request-id": "spill-rid-7"})
    finally:
        invoker.invoke = original  # type: ignore[method-assign]
    assert r.status_code == 200, r.text
    assert r.headers["x-mark-backend"] == "faas"
    assert r.headers["x-request-id"] == "spill-rid-7"
    event = json.loads(events[-1])
    assert event["requests"][0]["headers"]["x-request-id"] == "spill-rid-7"

    async def replay() -> str:  # the same event, asking for the log tail as the front end does
        url = f"{c.cluster.runtime.url}/2015-03-31/functions/mark-incep/invocations"
        async with aiohttp.ClientSession() as s, s.post(
                url, data=events[-1], headers={"X-Amz-Log-Type": "Tail"}) as resp:
            assert resp.status == 200
            return base64.b64decode(resp.headers["X-Amz-Log-Result"]).decode()

    tail = asyncio.run(replay())
    assert "request_id=spill-rid-7 model=incep status=200" in tail, tail
