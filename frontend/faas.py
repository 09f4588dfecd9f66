"""Spill to FaaS: an async Lambda Invoke client and BATCH-style buffers per model.

:class:`LambdaInvoker` speaks AWS Lambda's Invoke API (``POST /2015-03-31/functions/{name}/
invocations``) over the front end's own aiohttp pool, signed with SigV4 by botocore when
credentials exist (AWS) and unsigned against the local runtime. Its client configuration
is its own, as a latency path needs: no SDK retries, a timeout per call from the request's
remaining budget, a pool as large as the function's concurrency. It asks for the log tail
(``X-Amz-Log-Type: Tail``) and bills each invocation from Lambda's REPORT line (billed
duration x memory, plus the request fee, at the catalogue's prices).

:class:`FaasSpill` buffers spilled requests per model (BATCH: release at ``batch`` requests
or ``timeout_s`` after the first) and sends each buffer as one event::

    {"model": m, "requests": [{"body_b64": ..., "headers": {...}}, ...]}

answered by ``{"responses": [{"status", "body_b64", "headers"}, ...]}`` in order. A 429
(the function's concurrency is exhausted) is retried with jitter while the budget lasts,
then answered 503 with ``Retry-After``; a runtime that cannot be reached is a 503 naming it.
Nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from frontend.fleet import Fleet
from frontend.metrics import faas_call
from mark.core.catalogue import LambdaSpec, load_catalogue
from mark.core.config import MarkConfig
from mark.core.errors import ServiceUnavailable, UpstreamError, UpstreamTimeout

log = logging.getLogger(__name__)

_REPORT = re.compile(rb"Billed Duration: ([0-9.]+) ms.*?Memory Size: ([0-9]+) MB", re.S)
_INIT = re.compile(rb"Init Duration: ([0-9.]+) ms")


class FaasThrottled(ServiceUnavailable):
    """The function's concurrency is exhausted (Lambda's 429): 503 with ``Retry-After``."""


@dataclass
class Invocation:
    status: int
    payload: bytes
    function_error: str | None
    billed_ms: float
    memory_mb: float
    init_ms: float


@dataclass
class FaasStats:
    invocations: int = 0
    throttles: int = 0
    errors: int = 0
    cold_starts: int = 0
    usd: float = 0.0


class LambdaInvoker:
    """Invoke Lambda functions at ``endpoint_url`` (see the module docstring)."""

    def __init__(self, endpoint_url: str, region: str, pool_size: int,
                 lambda_spec: LambdaSpec | None = None, sign: bool | None = None) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        self.region = region
        self.lambda_spec = lambda_spec
        self.pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None
        self._credentials: Any = None
        self._sign = sign
        self.stats = FaasStats()
        #: called with (function, HTTP status, init ms) for each answer (the metrics)
        self.observer: Callable[[str, int, float], None] | None = None

    def retarget(self, endpoint_url: str) -> None:
        """Invoke at ``endpoint_url`` from now on (pooled connections to the old one idle out)."""
        self.endpoint_url = endpoint_url.rstrip("/")

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.pool_size, ttl_dns_cache=300))
        return self._session

    def _signed_headers(self, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        if self._sign is False:
            return headers
        if self._credentials is None:
            import boto3

            creds = boto3.Session().get_credentials()
            if creds is None:
                if self._sign:
                    raise ServiceUnavailable("no AWS credentials to sign Lambda invocations")
                self._sign = False
                return headers
            self._credentials = creds
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        req = AWSRequest(method="POST", url=url, data=body, headers=headers)
        SigV4Auth(self._credentials.get_frozen_credentials(), "lambda", self.region
                  ).add_auth(req)
        return dict(req.headers.items())

    async def invoke(self, function: str, payload: bytes, timeout_s: float) -> Invocation:
        """One synchronous invocation; raises ``FaasThrottled`` on 429, ``UpstreamTimeout``
        past ``timeout_s``, ``ServiceUnavailable`` when the endpoint cannot be reached,
        ``UpstreamError`` for other Lambda errors (naming the error code)."""
        url = f"{self.endpoint_url}/2015-03-31/functions/{function}/invocations"
        headers = {"Content-Type": "application/json", "X-Amz-Invocation-Type": "RequestResponse",
                   "X-Amz-Log-Type": "Tail"}
        headers = self._signed_headers(url, payload, headers)
        try:
            async with self._http().post(url, data=payload, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=timeout_s)) as r:
                body = await r.read()
                status = r.status
                rh = r.headers
        except TimeoutError as exc:
            raise UpstreamTimeout(f"function {function} did not answer within "
                                  f"{timeout_s:.3g} s") from exc
        except aiohttp.ClientConnectionError as exc:
            raise ServiceUnavailable(f"FaaS endpoint {self.endpoint_url} not reachable: {exc}",
                                     1) from exc
        self.stats.invocations += 1
        if status == 429:
            self.stats.throttles += 1
            if self.observer is not None:
                self.observer(function, status, 0.0)
            retry = max(1, round(float(rh.get("Retry-After", "1") or 1)))
            raise FaasThrottled(f"function {function} throttled (429 "
                                f"{rh.get('x-amzn-errortype', '')}): its concurrency is in use",
                                retry)
        if status >= 300:
            self.stats.errors += 1
            code = rh.get("x-amzn-errortype", "").split(":")[0] or f"HTTP {status}"
            raise UpstreamError(f"function {function}: {code}: {body[:300]!r}")
        billed, memory, init = _report(rh.get("X-Amz-Log-Result", ""))
        if init > 0:
            self.stats.cold_starts += 1
        if self.observer is not None:
            self.observer(function, status, init)
        if self.lambda_spec is not None and billed > 0:
            spec = self.lambda_spec
            self.stats.usd += (billed / 1000.0 * memory / 1024.0 * spec.usd_per_gb_s
                               + spec.usd_per_request)
        return Invocation(status, body, rh.get("X-Amz-Function-Error"), billed, memory, init)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _report(log_b64: str) -> tuple[float, float, float]:
    """(billed ms, memory MB, init ms) from a Lambda log tail; zeros when absent."""
    if not log_b64:
        return 0.0, 0.0, 0.0
    try:
        text = base64.b64decode(log_b64)
    except ValueError:
        return 0.0, 0.0, 0.0
    m = _REPORT.search(text)
    i = _INIT.search(text)
    return (float(m.group(1)) if m else 0.0, float(m.group(2)) if m else 0.0,
            float(i.group(1)) if i else 0.0)


@dataclass
class SpillReply:
    status: int
    body: bytes
    headers: dict[str, str]


@dataclass
class _Pending:
    body: bytes | bytearray
    headers: dict[str, str]
    deadline: float  # perf_counter
    fut: asyncio.Future[SpillReply]


@dataclass
class _Buffer:
    items: list[_Pending] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None


class FaasSpill:
    """Per-model buffers in front of one function per model (see the module docstring).

    ``settings(model)`` gives the current (batch, timeout_s) from the serving plan.
    ``max_buffered`` bounds what waits in buffers (beyond it: 503), whatever clients send.
    """

    def __init__(self, invoker: LambdaInvoker, function_prefix: str,
                 settings: Any, max_buffered: int = 10_000) -> None:
        self.invoker = invoker
        self.prefix = function_prefix
        self.settings = settings
        self.max_buffered = max_buffered
        self._buffers: dict[str, _Buffer] = {}
        self._buffered = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.spilled = 0
        prefix = len(function_prefix)
        invoker.observer = lambda fn, status, init_ms: faas_call(fn[prefix:], status, init_ms > 0)

    def function(self, model: str) -> str:
        return f"{self.prefix}{model}"

    async def submit(self, model: str, body: bytes | bytearray, headers: Mapping[str, str],
                     deadline: float) -> SpillReply:
        if self._buffered >= self.max_buffered:
            raise ServiceUnavailable(f"FaaS spill buffers are full ({self.max_buffered} "
                                     "requests waiting); retry later", 1)
        loop = asyncio.get_running_loop()
        item = _Pending(body, dict(headers), deadline, loop.create_future())
        buf = self._buffers.setdefault(model, _Buffer())
        buf.items.append(item)
        self._buffered += 1
        self.spilled += 1
        batch, wait_s = self.settings(model)
        if len(buf.items) >= max(1, batch) or wait_s <= 0:
            self._flush(model)
        elif buf.timer is None:
            buf.timer = loop.call_later(wait_s, self._flush, model)
        return await item.fut

    def _flush(self, model: str) -> None:
        buf = self._buffers.get(model)
        if buf is None or not buf.items:
            return
        if buf.timer is not None:
            buf.timer.cancel()
            buf.timer = None
        items, buf.items = buf.items, []
        self._buffered -= len(items)
        task = asyncio.get_running_loop().create_task(self._send(model, items))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, model: str, items: list[_Pending]) -> None:
        event = orjson.dumps({"model": model, "requests": [
            {"body_b64": base64.b64encode(i.body).decode("ascii"), "headers": i.headers}
            for i in items]})
        fn = self.function(model)
        deadline = min(i.deadline for i in items)
        try:
            while True:
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise UpstreamTimeout(f"function {fn}: no answer within the request's "
                                          "deadline")
                try:
                    inv = await self.invoker.invoke(fn, event, left)
                    break
                except FaasThrottled as exc:
                    pause = random.uniform(0.01, 0.05)
                    if deadline - time.perf_counter() <= pause:
                        raise FaasThrottled(f"{exc.message}; retried while the deadline "
                                            "allowed", exc.retry_after_s) from exc
                    await asyncio.sleep(pause)
            self._answer(fn, items, inv)
        except Exception as exc:  # every waiting request gets an answer
            for i in items:
                if not i.fut.done():
                    i.fut.set_exception(exc)

    @staticmethod
    def _answer(fn: str, items: list[_Pending], inv: Invocation) -> None:
        if inv.function_error:
            err = UpstreamError(f"function {fn} failed ({inv.function_error}): "
                                f"{inv.payload[:300]!r}")
            for i in items:
                i.fut.set_exception(err)
            return
        doc = orjson.loads(inv.payload)
        replies = doc.get("responses", []) if isinstance(doc, dict) else []
        if len(replies) != len(items):
            err = UpstreamError(f"function {fn} answered {len(replies)} responses for "
                                f"{len(items)} requests")
            for i in items:
                i.fut.set_exception(err)
            return
        for i, rep in zip(items, replies, strict=True):
            i.fut.set_result(SpillReply(int(rep.get("status", 500)),
                                        base64.b64decode(rep.get("body_b64", "")),
                                        {str(k).lower(): str(v)
                                         for k, v in rep.get("headers", {}).items()}))

    async def close(self) -> None:
        for model in list(self._buffers):
            self._flush(model)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.invoker.close()


def make_spill(cfg: MarkConfig, fleet: Fleet, endpoint_url: str) -> FaasSpill:
    """The spill path of a front-end process: one function per model at ``endpoint_url``
    (signed when the configuration names an endpoint, or the fleet is on AWS: real Lambda;
    unsigned for the local runtime), buffers set by the plan."""
    remote = cfg.faas.endpoint_url is not None or cfg.fleet.backend == "aws"
    invoker = LambdaInvoker(endpoint_url, cfg.faas.region, pool_size=cfg.faas.concurrency,
                            lambda_spec=load_catalogue().lambda_,
                            sign=None if remote else False)
    return FaasSpill(invoker, cfg.faas.function_prefix,
                     lambda model: fleet.faas_settings.get(model, (1, 0.0)))
