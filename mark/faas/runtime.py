"""The local function runtime: AWS Lambda's Invoke API over sandboxes, one function per model.

``POST /2015-03-31/functions/{name}/invocations`` is answered as Lambda answers it, so boto3
and the AWS CLI work unchanged through ``endpoint_url`` (any credentials): the function
name plain, ``name:qualifier`` (only ``$LATEST`` exists here) or an ARN;
``X-Amz-Invocation-Type`` ``RequestResponse`` (200 with the handler's result),
``Event`` (202 at once, run when a sandbox is free, at most :data:`EVENT_BACKLOG` waiting)
or ``DryRun`` (204); ``X-Amz-Log-Type: Tail`` adds ``X-Amz-Log-Result`` (the log tail ending
with the REPORT line the front end bills from). Errors: see :mod:`mark.faas.lambda_api`.

Function ``faas.function_prefix + model.name`` serves each configured model with
``faas.memory_mb`` (3008 MB when null), at most ``faas.concurrency`` sandboxes, an idle
sandbox expiring after ``faas.keep_alive_s`` and a handler killed after ``faas.timeout_s``
(:mod:`mark.faas.pool`). ``GET /mark/stats`` (not Lambda's) returns each function's
counters and sandboxes, for tests and benchmarks.

Memory stays bounded whatever clients send: a body is read only once its invocation holds a
sandbox (or an Event backlog place), never past its limit, and a declared length over the
limit is refused before reading. ``mark faas`` runs the runtime alone; ``mark up`` embeds it
(:meth:`FunctionRuntime.start` on its own event loop).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import orjson
from aiohttp import web

from mark.core.config import MarkConfig, ModelConfig
from mark.faas.handler import CONFIG_ENV, DEFAULT_MEMORY_MB, MEMORY_ENV, MODEL_ENV
from mark.faas.lambda_api import (
    API_PREFIX,
    EVENT_PAYLOAD_LIMIT,
    INVOCATION_TYPES,
    LATEST,
    SYNC_PAYLOAD_LIMIT,
    InvalidParameterValue,
    InvalidRequestContent,
    LambdaApiError,
    RequestEntityTooLarge,
    ResourceNotFound,
    TooManyRequests,
    function_arn,
    log_tail,
    parse_function_name,
)
from mark.faas.pool import FunctionPool, PoolClosed, new_request_id

log = logging.getLogger(__name__)

EVENT_BACKLOG = 32  # Event invocations per function waiting for a sandbox (then 429)
READ_CHUNK_BYTES = 64 * 1024
INLINE_JSON_BYTES = 64 * 1024  # larger payloads are validated off the event loop
RETRY_AFTER_S = 1


class FunctionRuntime:
    """The Invoke API on ``host:port`` (the configuration's ``faas`` ones by default; port 0
    = any free port, see :attr:`url` once started). ``memory_mb``: per model, the memory its
    function is deployed with when ``faas.memory_mb`` is null (``mark up``: the plan's)."""

    def __init__(self, cfg: MarkConfig, host: str | None = None, port: int | None = None,
                 memory_mb: dict[str, int] | None = None) -> None:
        self.cfg = cfg
        self.host = host if host is not None else cfg.faas.host
        self.port = port if port is not None else cfg.faas.port
        self.functions: dict[str, FunctionPool] = {}
        self._queued: dict[str, int] = {}
        for model in cfg.models:
            self.add_function(model, (memory_mb or {}).get(model.name))
        self._events: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._reaper: asyncio.Task[None] | None = None

    def add_function(self, model: ModelConfig, plan_memory_mb: int | None = None) -> str:
        """Deploy ``model``'s function (the configuration's models must hold it: the
        sandboxes read it there) with the model's ``faas_memory_mb``, else ``faas.memory_mb``,
        else ``plan_memory_mb``, else 3008 MB; returns its name."""
        faas = self.cfg.faas
        memory = (model.faas_memory_mb or faas.memory_mb or plan_memory_mb
                  or DEFAULT_MEMORY_MB)
        name = faas.function_prefix + model.name
        self.functions[name] = FunctionPool(
            name, model.name,
            self._sandbox_env(name, model.name, memory, self.cfg.model_dump_json()),
            memory_mb=memory, concurrency=faas.concurrency, keep_alive_s=faas.keep_alive_s,
            timeout_s=faas.timeout_s)
        self._queued.setdefault(name, 0)
        return name

    async def remove_function(self, model: str) -> None:
        """Delete ``model``'s function: its sandboxes are killed (invocations in flight on
        them fail as a crashed sandbox's would; delete after the model's traffic stopped)."""
        name = self.cfg.faas.function_prefix + model
        pool = self.functions.pop(name, None)  # its _queued counter stays (events may drain)
        if pool is not None:
            await pool.close()

    def _sandbox_env(self, name: str, model: str, memory: int, cfg_json: str) -> dict[str, str]:
        """A worker's environment: ours plus what Lambda sets, and the handler's inputs."""
        region = self.cfg.faas.region
        env = dict(os.environ)
        env.update({
            CONFIG_ENV: cfg_json, MODEL_ENV: model, MEMORY_ENV: str(memory),
            "AWS_LAMBDA_FUNCTION_NAME": name, "AWS_LAMBDA_FUNCTION_VERSION": LATEST,
            "AWS_REGION": region, "AWS_DEFAULT_REGION": region,
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"local/[{LATEST}]{name}",
        })
        # torch's OpenMP threads spin while idle by default, starving the neighbours
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        return env

    @property
    def url(self) -> str:
        """``http://host:port``: the ``endpoint_url`` for boto3 (the bound port once started)."""
        return f"http://{self.host}:{self.port}"

    def app(self) -> web.Application:
        """The runtime as an aiohttp application: the Invoke API and ``/mark/stats``; its
        startup starts the idle-sandbox reaper, its cleanup kills every sandbox (what
        gunicorn's aiohttp worker runs, see :mod:`mark.faas.gunicorn`)."""
        app = web.Application(client_max_size=SYNC_PAYLOAD_LIMIT + 1)
        app.router.add_post(API_PREFIX + "/{name}/invocations", self._invoke)
        app.router.add_get("/mark/stats", self._stats)

        async def reap(_app: web.Application) -> None:
            tick_s = min(1.0, max(0.05, min(p.keep_alive_s for p in self.functions.values()) / 4))
            self._reaper = asyncio.create_task(self._reap(tick_s))

        async def cleanup(_app: web.Application) -> None:
            await self._close()

        app.on_startup.append(reap)
        app.on_cleanup.append(cleanup)
        return app

    async def start(self) -> None:
        """Serve on the running event loop; returns once the port is bound."""
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("function runtime on %s: %s", self.url, sorted(self.functions))

    async def stop(self) -> None:
        """Stop serving and kill every sandbox (idempotent)."""
        await self._close()
        if self._runner is not None:
            await self._runner.cleanup()  # runs the app's cleanup: already closed, a no-op
            self._runner = None

    async def _close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
            self._reaper = None
        for task in list(self._events):
            task.cancel()
        await asyncio.gather(*self._events, return_exceptions=True)
        await asyncio.gather(*(p.close() for p in self.functions.values()))

    def stats(self) -> dict[str, Any]:
        """Each function's counters and sandboxes (what ``GET /mark/stats`` returns)."""
        return {name: {**pool.to_json(), "queued_events": self._queued[name]}
                for name, pool in self.functions.items()}

    async def _reap(self, tick_s: float) -> None:
        while True:
            await asyncio.sleep(tick_s)
            for pool in self.functions.values():
                n = await pool.expire()
                if n:
                    log.debug("%s: %d idle sandbox(es) expired", pool.name, n)

    async def _stats(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.stats()), content_type="application/json")

    # -- the Invoke API ------------------------------------------------------------------
    def _pool(self, raw_name: str, query_qualifier: str | None) -> tuple[FunctionPool, str]:
        ref = parse_function_name(raw_name, query_qualifier)
        region = self.cfg.faas.region
        pool = self.functions.get(ref.name)
        if pool is None:
            raise ResourceNotFound(f"Function not found: {function_arn(region, ref.name)}; "
                                   f"known functions: {sorted(self.functions)}")
        if ref.qualifier not in (None, LATEST):
            raise ResourceNotFound(
                f"Function not found: {function_arn(region, ref.name, ref.qualifier)}; this "
                f"runtime has no versions or aliases, only {LATEST}")
        return pool, function_arn(region, ref.name, ref.qualifier)

    async def _invoke(self, request: web.Request) -> web.StreamResponse:
        request_id = new_request_id()
        try:
            return await self._invoke_checked(request, request_id)
        except LambdaApiError as exc:
            headers = {"x-amzn-errortype": exc.code, "x-amzn-RequestId": request_id,
                       **exc.headers()}
            return web.Response(status=exc.status, body=exc.body(), headers=headers,
                                content_type="application/json")

    async def _invoke_checked(self, request: web.Request, request_id: str) -> web.StreamResponse:
        pool, arn = self._pool(request.match_info["name"], request.query.get("Qualifier"))
        kind = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        if kind not in INVOCATION_TYPES:
            raise InvalidParameterValue(f"1 validation error detected: Value '{kind}' at "
                                        f"'invocationType' failed to satisfy constraint: Member "
                                        f"must satisfy enum value set: {list(INVOCATION_TYPES)}")
        headers = {"x-amzn-RequestId": request_id}
        if kind == "DryRun":
            return web.Response(status=204, headers=headers)
        limit = EVENT_PAYLOAD_LIMIT if kind == "Event" else SYNC_PAYLOAD_LIMIT
        if request.content_length is not None and request.content_length > limit:
            raise _too_large(request.content_length, limit)
        if kind == "Event":
            await self._accept_event(request, pool, request_id, arn)
            return web.Response(status=202, headers=headers)
        lease = pool.take()
        if lease is None:
            pool.stats.throttles += 1
            raise _throttled(pool)
        try:
            payload = await _read_payload(request, limit)
        except BaseException:
            await pool.release(lease)
            raise
        outcome = await pool.run(lease, request_id, payload, arn)
        log.debug("%s %s", pool.name, outcome.report.line())
        headers["X-Amz-Executed-Version"] = LATEST
        if outcome.function_error:
            headers["X-Amz-Function-Error"] = "Unhandled"
        if request.headers.get("X-Amz-Log-Type") == "Tail":
            headers["X-Amz-Log-Result"] = log_tail(request_id, outcome.log, outcome.report)
        return web.Response(status=200, body=outcome.body, headers=headers,
                            content_type="application/json")

    async def _accept_event(self, request: web.Request, pool: FunctionPool, request_id: str,
                            arn: str) -> None:
        """Read an Event invocation's payload and queue it (429 when the backlog is full)."""
        if self._queued[pool.name] >= EVENT_BACKLOG:
            pool.stats.throttles += 1
            raise _throttled(pool)
        self._queued[pool.name] += 1
        try:
            payload = await _read_payload(request, EVENT_PAYLOAD_LIMIT)
        except BaseException:
            self._queued[pool.name] -= 1
            raise
        task = asyncio.create_task(self._run_event(pool, request_id, payload, arn))
        self._events.add(task)
        task.add_done_callback(self._events.discard)

    async def _run_event(self, pool: FunctionPool, request_id: str, payload: bytes,
                         arn: str) -> None:
        try:
            lease = await pool.wait_take()
        except PoolClosed:
            return
        finally:
            self._queued[pool.name] -= 1
        outcome = await pool.run(lease, request_id, payload, arn)
        if outcome.function_error:
            log.info("%s: Event invocation %s failed: %s", pool.name, request_id,
                     outcome.body[:500].decode("utf-8", "replace"))


def _too_large(size: int, limit: int) -> RequestEntityTooLarge:
    return RequestEntityTooLarge(f"Request must be smaller than {limit} bytes for the "
                                 f"InvokeFunction operation (got {size} bytes)")


def _throttled(pool: FunctionPool) -> TooManyRequests:
    return TooManyRequests(f"Rate Exceeded. Function {pool.name!r} has all its "
                           f"{pool.concurrency} sandboxes busy (faas.concurrency)",
                           retry_after_s=RETRY_AFTER_S)


async def _read_payload(request: web.Request, limit: int) -> bytes:
    """The body, at most ``limit`` bytes (413 past it), checked to be JSON (400); an empty
    body stands for ``{}``."""
    buf = bytearray()
    async for chunk in request.content.iter_chunked(READ_CHUNK_BYTES):
        buf += chunk
        if len(buf) > limit:
            raise _too_large(len(buf), limit)
    payload = bytes(buf)
    del buf
    if not payload.strip():
        return b"{}"
    try:
        if len(payload) <= INLINE_JSON_BYTES:
            orjson.loads(payload)
        else:
            await asyncio.to_thread(orjson.loads, payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestContent(f"Could not parse request body into json: Could not parse "
                                    f"payload into json: {exc}") from None
    return payload
