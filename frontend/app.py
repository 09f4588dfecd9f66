"""The Sanic app: KServe v2 routes proxied to the fleet, one error handler, one route table."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterator
from typing import Any

import orjson
from sanic import Request, Sanic, response
from sanic.exceptions import RequestTimeout, SanicException
from sanic.http import Http, Stage
from sanic.response import HTTPResponse
from sanic.server.protocols.http_protocol import HttpProtocol

from frontend.admin import AdminApi, add_admin_routes
from frontend.arrivals import ArrivalCounter
from frontend.auth import ApiKeys, guarded
from frontend.faas import FaasSpill, FaasThrottled
from frontend.fleet import Fleet
from frontend.metrics import FrontendMetrics, add_metrics_route
from frontend.openapi import add_openapi_route
from frontend.protocol import ModelMetadata, decode_body, parse_infer
from frontend.queue_cells import QueueCells
from frontend.request_id import HEADER as REQUEST_ID
from frontend.request_id import new_request_id, request_id_of, valid
from frontend.spill import InstanceQueue, PredictionErrors
from frontend.stats import sum_model_stats
from frontend.timing import RequestTiming, TimingLog
from frontend.upstream import Upstream, UpstreamConnectionError, UpstreamReply
from mark.core import __version__
from mark.core.config import MarkConfig, ModelConfig
from mark.core.errors import MarkError, NotFound, ServiceUnavailable, UpstreamError, UpstreamTimeout
from mark.core.instances import Instance, InstanceState

log = logging.getLogger(__name__)
_app_ids = itertools.count(1)
_touched_up = False

# request headers forwarded to instances, and reply headers passed back
_FWD_REQ = ("content-type", "inference-header-content-length", "content-encoding",
            "accept-encoding")
_FWD_RESP = ("content-type", "inference-header-content-length", "content-encoding")
_FWD_RESP_BYTES = {k: k.encode() for k in _FWD_RESP}

# Connection timeouts are frontend.* configuration (request_timeout_s, keep_alive_timeout_s,
# response_timeout_s, listen_backlog), set on every front-end app by create_app. A whole
# request, head and body, must arrive within the request timeout of its first byte
# (FrontendProtocol: Sanic's own timer restarts on every byte, so a client sending a byte a
# second would hold its connection for ever).
_DRAIN_GRACE_S = 1.0  # after a 408, how long the rest of a late body may still come (s)


class ProxyResponse(HTTPResponse):
    """A response whose headers arrive pre-encoded (no per-header sanitising on the hot path).

    Sanic still adds content-length and connection through ``headers``; those are appended.
    """

    def __init__(self, body: bytes, status: int, raw_headers: list[tuple[bytes, bytes]]) -> None:
        super().__init__(body, status=status)
        self._raw_headers = raw_headers

    @property
    def processed_headers(self) -> Iterator[tuple[bytes, bytes]]:
        yield from self._raw_headers
        for name, value in self.headers.items():
            if value != "":
                yield name.encode("ascii"), str(value).encode("latin-1")


class FrontEnd:
    """Handlers over a fleet; the Sanic wiring is in :func:`create_app`.

    An inference request has a deadline: its arrival plus its model's SLO latency times
    ``frontend.attempt_timeout_slo_factor``, clamped to the configured floor and ceiling.
    Each attempt (the one retry included) gets what is left of it; past it, 504.

    Every inference request for a known model is counted in ``arrivals`` (per second: the
    control loop's forecasts read them); ``inflight`` holds the requests out at each
    instance now (a drain waits for zero). ``admin`` serves the ``/admin`` routes.

    Spill (``faas``, when set): a request goes to its model's function instead of the
    instance WRR picked when the instance's predicted completion (:mod:`frontend.spill`, fed
    with the plan's batch times and wait budget, carried in ``inst.extra["spill"]``) puts the
    SLO at risk, when no instance is ready (the planner's zero-instance tier), or when the
    retry after a dead instance has nowhere to go.
    """

    def __init__(self, cfg: MarkConfig, fleet: Fleet, upstream: Upstream,
                 timings: TimingLog | None = None, admin: AdminApi | None = None,
                 cells: QueueCells | None = None) -> None:
        self.cfg = cfg
        self.fleet = fleet
        self.upstream = upstream
        self.timings = timings or TimingLog(cfg.frontend.timing_log_size)
        self.arrivals = ArrivalCounter([m.name for m in cfg.models])
        self.inflight: dict[str, int] = {}
        self.admin = admin
        self.faas: FaasSpill | None = None
        self._queues: dict[str, InstanceQueue] = {}
        self.cells = cells or QueueCells()  # the instances' spill state, shared by processes
        self._fallback_meta: dict[str, ModelMetadata] = {}  # not cached in the fleet: an
        # instance's own metadata replaces it as soon as one answers
        self._spill_margin_s = cfg.frontend.spill_margin_ms / 1000.0
        self._errors: dict[str, PredictionErrors] = {}  # by model: what the spill model misses
        self.models = {m.name: m for m in cfg.models}
        self.budget_s = {m.name: cfg.frontend.request_budget_s(m.slo_latency_ms) for m in cfg.models}
        self._where_cache: dict[str, tuple[tuple[bytes, bytes], ...]] = {}
        fleet.on_leave.append(self._instance_left)
        self.metrics = FrontendMetrics.attach(self, self.timings) if cfg.metrics.enabled else None

    # -- models come and go (registered through the admin API) ---------------------------
    def set_model(self, model: ModelConfig) -> None:
        """Serve ``model``, new or changed (its SLO sets the deadline of requests from now)."""
        self.models[model.name] = model
        self.budget_s[model.name] = self.cfg.frontend.request_budget_s(model.slo_latency_ms)
        self.arrivals.add_model(model.name)
        self.fleet.add_model(model.name)

    def drop_model(self, name: str) -> None:
        """Refuse ``name`` from now on (404); requests already in flight finish."""
        self.models.pop(name, None)
        self.budget_s.pop(name, None)
        self.arrivals.remove_model(name)
        self._fallback_meta.pop(name, None)
        self._errors.pop(name, None)
        self.fleet.remove_model(name)

    def sync_models(self, docs: dict[str, dict[str, Any]]) -> None:
        """Serve exactly the models of ``docs`` (name -> ModelConfig JSON), as the control
        plane published them; unchanged ones are left alone."""
        for name, doc in docs.items():
            old = self.models.get(name)
            if old is None or old.model_dump(mode="json") != doc:
                try:
                    self.set_model(ModelConfig.model_validate(doc))
                except ValueError as exc:
                    log.error("cannot serve model %r as published: %s", name, exc)
        for name in [n for n in self.models if n not in docs]:
            self.drop_model(name)

    def _instance_left(self, inst: Instance) -> None:
        self.upstream.drop(inst.url)
        self._where_cache.pop(inst.id, None)
        self._queues.pop(inst.id, None)
        self.cells.drop(inst.id)

    def _queue(self, inst: Instance, model: str) -> InstanceQueue | None:
        """The spill model of ``inst`` (None when the plan gave it none)."""
        params = inst.extra.get("spill")
        if params is None:
            return None
        q = self._queues.get(inst.id)
        if q is None or q.params is not params:
            errors = self._errors.get(model)
            if errors is None:
                errors = self._errors[model] = PredictionErrors(self._spill_margin_s)
            q = self._queues[inst.id] = InstanceQueue(params, self._spill_margin_s, errors,
                                                      self.cells.cell(inst.id), self.cells.slot)
        return q

    async def _spill(self, model: str, body: bytes | bytearray, fwd: dict[str, str], arrival: float,
                     deadline: float, attempts: int, reason: str) -> HTTPResponse:
        """Serve the request by its model's function; ``reason``: slo_at_risk, no_instance or
        retry (counted in ``mark_spills_total``)."""
        assert self.faas is not None
        if self.metrics is not None:
            self.metrics.spilled(model, reason)
        # the function gets the body decoded (``body``), so not its content-encoding
        fwd = {k: v for k, v in fwd.items() if k != "content-encoding"}
        sent = time.perf_counter()
        if sent >= deadline:
            raise UpstreamTimeout(f"model {model!r}: the request's deadline passed before it "
                                  "could spill")
        reply = await self.faas.submit(model, body, fwd, deadline)
        done = time.perf_counter()
        fn = self.faas.function(model)
        self.timings.add(RequestTiming(model, f"faas:{fn}", "faas", arrival, sent - arrival,
                                       done - sent, reply.status, attempts))
        raw = [(_FWD_RESP_BYTES[k], v.encode("latin-1"))
               for k in _FWD_RESP if (v := reply.headers.get(k)) is not None]
        raw.extend(((b"x-mark-backend", b"faas"), (b"x-mark-instance", f"faas:{fn}".encode()),
                    (b"x-request-id", fwd[REQUEST_ID].encode())))
        return ProxyResponse(reply.body, reply.status, raw)

    # -- helpers -------------------------------------------------------------------------
    def _where(self, instance_id: str) -> tuple[tuple[bytes, bytes], ...]:
        """Pre-encoded x-mark-* headers for an instance (built once per instance)."""
        hdrs = self._where_cache.get(instance_id)
        if hdrs is None:
            hdrs = ((b"x-mark-backend", b"iaas"), (b"x-mark-instance", instance_id.encode()))
            self._where_cache[instance_id] = hdrs
        return hdrs

    def _known(self, model: str) -> None:
        if model not in self.models:
            raise NotFound(f"unknown model {model!r}; known models: {sorted(self.models)}")

    def _unavailable(self, model: str) -> ServiceUnavailable:
        return ServiceUnavailable(
            f"no ready instance for model {model!r}; retry later",
            retry_after_s=self.cfg.frontend.retry_after_s,
        )

    async def metadata(self, model: str) -> ModelMetadata:
        self._known(model)
        meta = self.fleet.metadata.get(model)
        if meta is not None:
            return meta
        for inst in self.fleet.ready(model):
            try:
                reply = await self.upstream.request("GET", f"{inst.url}/v2/models/{model}")
            except UpstreamError as exc:
                log.warning("metadata of %s from %s failed: %s", model, inst.id, exc)
                continue
            if reply.status == 200:
                meta = ModelMetadata.from_triton(orjson.loads(reply.body))
                self.fleet.metadata[model] = meta
                return meta
        fallback = self.fleet.fallback_metadata.get(model)
        if fallback is not None and self.faas is not None:  # functions alone serve it now
            meta = self._fallback_meta.get(model)
            if meta is None or meta.raw is not fallback:
                meta = self._fallback_meta[model] = ModelMetadata.from_triton(fallback)
            return meta
        raise self._unavailable(model)

    # -- handlers ------------------------------------------------------------------------
    async def live(self, request: Request) -> HTTPResponse:
        return response.empty(status=200)

    async def ready(self, request: Request) -> HTTPResponse:
        missing = [m for m in self.models if not self.fleet.ready(m)]
        if missing:
            raise ServiceUnavailable(f"no ready instance for models {missing}",
                                     self.cfg.frontend.retry_after_s)
        return response.empty(status=200)

    async def server_metadata(self, request: Request) -> HTTPResponse:
        return response.json({"name": "mark", "version": __version__,
                              "extensions": ["binary_tensor_data", "statistics"]})

    async def model_metadata(self, request: Request, model: str, version: str = "") -> HTTPResponse:
        return response.json((await self.metadata(model)).raw)

    async def model_ready(self, request: Request, model: str, version: str = "") -> HTTPResponse:
        self._known(model)
        if not self.fleet.ready(model):
            raise self._unavailable(model)
        return response.empty(status=200)

    async def model_config(self, request: Request, model: str, version: str = "") -> HTTPResponse:
        self._known(model)
        for inst in self.fleet.ready(model):
            try:
                reply = await self.upstream.request("GET", f"{inst.url}/v2/models/{model}/config")
            except UpstreamError:
                continue
            return response.raw(reply.body, status=reply.status,
                                content_type=reply.headers.get("content-type", "application/json"))
        raise self._unavailable(model)

    async def model_stats(self, request: Request, model: str = "", version: str = "") -> HTTPResponse:
        """Triton's statistics extension, summed over the ready instances (of ``model``)."""
        if model:
            self._known(model)
            instances = self.fleet.ready(model)
            if not instances:
                raise self._unavailable(model)
        else:
            instances = list({i.id: i for m in self.models for i in self.fleet.ready(m)}.values())
        path = request.path

        async def one(inst: Instance) -> UpstreamReply | UpstreamError:
            try:
                return await self.upstream.request("GET", inst.url + path)
            except UpstreamError as exc:
                log.warning("statistics from %s failed: %s", inst.id, exc)
                return exc

        replies = await asyncio.gather(*(one(i) for i in instances))
        docs = []
        for reply in replies:
            if isinstance(reply, UpstreamError):
                continue
            if reply.status != 200:  # e.g. an unknown version: the instance's own answer
                return response.raw(reply.body, status=reply.status, content_type=reply.headers.get(
                    "content-type", "application/json"))
            docs.append(orjson.loads(reply.body))
        if instances and not docs:
            raise UpstreamError(
                f"statistics: no instance answered ({'; '.join(str(r) for r in replies)})"
            )
        return response.raw(orjson.dumps(sum_model_stats(docs)), content_type="application/json")

    async def infer(self, request: Request, model: str, version: str = "") -> HTTPResponse:
        arrival = time.perf_counter()
        rid = request.ctx.request_id = request_id_of(request.headers.get(REQUEST_ID))
        if model in self.models:
            self.arrivals.add(model)
        meta = await self.metadata(model)
        budget_s = self.budget_s.get(model)
        if budget_s is None:  # deleted while its metadata was fetched
            self._known(model)
            raise NotFound(f"model {model!r} was deleted")
        deadline = arrival + budget_s
        body = request.body
        hdrs = request.headers
        encoding = hdrs.get("content-encoding")
        # a compressed body is validated decoded (bounded), then forwarded as sent
        decoded = body if encoding is None else await decode_body(
            body, encoding, self.cfg.frontend.max_body_bytes)
        info = parse_infer(decoded, hdrs.get("inference-header-content-length"), meta)
        fwd = {k: v for k in _FWD_REQ if (v := hdrs.get(k)) is not None}
        fwd[REQUEST_ID] = rid
        path = f"/v2/models/{model}/versions/{version}/infer" if version else request.path
        faas = self.faas if self.fleet.spill.get(model, False) else None
        tried: list[str] = []
        last: UpstreamConnectionError | None = None
        for _attempt in range(2):  # one retry, on another instance, if the first one died
            inst = self.fleet.pick(model, info.batch_size, tried)
            if inst is None:
                if faas is not None:  # no instance (the FaaS tier), or none for the retry
                    return await self._spill(model, decoded, fwd, arrival, deadline,
                                             len(tried) + 1, "retry" if tried else "no_instance")
                if last is None:
                    raise self._unavailable(model)
                break
            admitted: InstanceQueue | None = None
            q = self._queue(inst, model)
            if faas is not None and q is not None:
                now = time.perf_counter()
                if q.in_flight():  # by any front-end process of this host
                    q.busy_now(now)
                else:
                    q.idle(now)
                if not q.admit(now):  # the SLO is at risk there: spill
                    return await self._spill(model, decoded, fwd, arrival, deadline,
                                             len(tried) + 1, "slo_at_risk")
                admitted = q
            sent = time.perf_counter()
            left_s = deadline - sent
            if left_s <= 0:
                raise UpstreamTimeout(
                    f"model {model!r}: no reply within the request's deadline ({budget_s:g} s "
                    f"after arrival); instance(s) tried: {tried}"
                )
            inflight = self.inflight
            inflight[inst.id] = inflight.get(inst.id, 0) + 1
            if q is not None:
                q.sent(sent)
            try:
                reply = await self.upstream.request("POST", inst.url + path, body, fwd,
                                                    timeout_s=left_s)
            except UpstreamConnectionError as exc:
                log.warning("infer %s on %s failed (%s); retrying elsewhere", model, inst.id, exc,
                            extra={"request_id": rid, "model": model, "instance": inst.id})
                self.fleet.set_state(inst.id, InstanceState.UNHEALTHY, str(exc))
                tried.append(inst.id)
                last = exc
                continue
            finally:
                if q is not None:
                    q.answered(time.perf_counter())
                left = inflight[inst.id] - 1
                if left:
                    inflight[inst.id] = left
                else:
                    del inflight[inst.id]
            done = time.perf_counter()
            if admitted is not None and admitted.errors is not None and reply.status == 200:
                admitted.errors.note(admitted.predicted_s, done - now)
            self.timings.add(RequestTiming(model, inst.id, "iaas", arrival, sent - arrival,
                                           done - sent, reply.status, len(tried) + 1))
            raw = [(_FWD_RESP_BYTES[k], v.encode("latin-1"))
                   for k in _FWD_RESP if (v := reply.headers.get(k)) is not None]
            raw.extend(self._where(inst.id))
            raw.append((b"x-request-id", rid.encode()))
            return ProxyResponse(reply.body, reply.status, raw)
        if faas is not None:  # the retry's instance died too (a fleet that went at once)
            return await self._spill(model, decoded, fwd, arrival, deadline, len(tried) + 1,
                                     "retry")
        raise UpstreamError(
            f"model {model!r}: instance(s) {tried} failed ({last}) and no other ready "
            f"instance could take the retry"
        )


def request_id_for_error(request: Request | None) -> str:
    """The id an error reply carries: the request's (once validated), else the client's when
    valid, else a new one."""
    if request is None:
        return new_request_id()
    rid = getattr(request.ctx, "request_id", None)
    if rid is None:
        sent = request.headers.get(REQUEST_ID)
        rid = sent if sent is not None and valid(sent) else new_request_id()
    return str(rid)


def error_response(exc: Exception, max_body_bytes: int | None = None,
                   request_id: str | None = None) -> HTTPResponse:
    """``{"error": msg}`` with the status ``exc`` maps to (and ``x-request-id`` when given)."""
    extra = {REQUEST_ID: request_id} if request_id is not None else {}
    if isinstance(exc, MarkError):
        return response.json({"error": exc.message}, status=exc.status,
                             headers={**exc.headers(), **extra})
    if isinstance(exc, SanicException):
        status = exc.status_code
        msg = str(exc) or type(exc).__name__
        if status == 413:
            msg = f"request body too large: {msg}"
            if max_body_bytes is not None:
                msg += f" (frontend.max_body_bytes = {max_body_bytes} bytes)"
        return response.json({"error": msg}, status=status,
                             headers={**(getattr(exc, "headers", None) or {}), **extra})
    log.exception("unhandled error", exc_info=exc, extra={"request_id": request_id})
    return response.json({"error": f"internal error: {type(exc).__name__}: {exc}"}, status=500,
                         headers=extra)


class _TimedHttp(Http):
    """Sanic's HTTP/1.1 cycle, noting when each request's first byte arrived."""

    __slots__ = ()

    def init_for_request(self) -> None:
        super().init_for_request()
        proto: Any = self.protocol  # a FrontendProtocol
        # bytes already buffered (pipelined) are this request's first; else the next ones
        proto.request_began = time.monotonic() if self.recv_buffer else None


class FrontendProtocol(HttpProtocol):
    """HTTP/1.1 with a deadline on receiving each whole request.

    Sanic's REQUEST_TIMEOUT (and RESPONSE_TIMEOUT, which covers reading the body) restart
    whenever a byte arrives: headers that never finish, or a body sent a byte a second,
    would hold a connection and its buffers for ever. Here a request whose head and body
    have not all arrived within ``REQUEST_TIMEOUT`` of its first byte gets 408 and its
    connection is closed, also while the body of a request already answered (a 404, say)
    is still being drained. Sanic's own timeouts apply as before.
    """

    HTTP_CLASS = _TimedHttp
    __slots__ = ("request_began",)

    def _setup(self) -> None:
        super()._setup()
        self.request_began: float | None = None

    def data_received(self, data: bytes) -> None:
        if self.request_began is None:
            self.request_began = time.monotonic()
        super().data_received(data)

    def check_timeouts(self) -> None:
        http = getattr(self, "_http", None)
        began = self.request_began
        if (http is not None and began is not None and self._task
                and (http.stage is Stage.REQUEST or http.request_body)
                and time.monotonic() - began > self.request_timeout):
            if http.exception is not None:  # told once, and the body is still being drained
                self.close()
                return
            http.exception = RequestTimeout(
                f"the request did not arrive in full within {self.request_timeout:g} s of "
                f"its first byte")
            self._task.cancel("request timeout")
            # the 408 goes out at once; Sanic would then drain the rest of the body (a byte
            # a second, maybe): look again shortly and close the connection if it still is
            self._callback_check_timeouts = self.loop.call_later(_DRAIN_GRACE_S,
                                                                 self.check_timeouts)
            return
        super().check_timeouts()


class FrontendSanic(Sanic[Any, Any]):
    """A Sanic app whose servers use :class:`FrontendProtocol` and a listen backlog of
    ``ctx.listen_backlog`` (``frontend.listen_backlog``, set by :func:`create_app`) unless told
    otherwise.

    The backlog matters even on a socket listening already: asyncio listens on it again with
    the server's backlog, Sanic's default 100, and past that a burst of new connections
    loses handshakes: each costs its client a 1 s SYN retry, and an idle one may be left
    believing it is connected to nothing."""

    async def create_server(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("protocol") is None:
            kwargs["protocol"] = FrontendProtocol
        kwargs.setdefault("backlog", getattr(self.ctx, "listen_backlog", 1024))
        return await super().create_server(*args, **kwargs)


def create_app(front: FrontEnd, name: str | None = None) -> Sanic[Any, Any]:
    """The Sanic app with the v2 route table in one place."""
    # Sanic's loggers go through the root logger (mark.core.logs), not handlers of their own
    app = FrontendSanic(name or f"mark_frontend_{next(_app_ids)}", configure_logging=False)
    fcfg = front.cfg.frontend
    app.ctx.listen_backlog = fcfg.listen_backlog
    app.config.REQUEST_MAX_SIZE = fcfg.max_body_bytes
    app.config.MOTD = False
    app.config.ACCESS_LOG = False
    app.config.REQUEST_TIMEOUT = fcfg.request_timeout_s
    app.config.KEEP_ALIVE_TIMEOUT = fcfg.keep_alive_timeout_s
    # past it Sanic answers 503 itself: never before an inference's own deadline (504)
    app.config.RESPONSE_TIMEOUT = max(fcfg.response_timeout_s,
                                      fcfg.attempt_timeout_ceiling_s + 10,
                                      fcfg.upstream_timeout_s + 10)
    # Sanic's touchup rewrites its request path once per process (dropping unused signal
    # dispatch); a second app in the same process (tests) breaks under it, so only the first
    global _touched_up
    app.config.TOUCHUP = not _touched_up
    _touched_up = True
    app.ctx.front = front

    routes: list[tuple[str, Any, str]] = [
        ("/v2/health/live", front.live, "GET"),
        ("/v2/health/ready", front.ready, "GET"),
        ("/v2", front.server_metadata, "GET"),
        ("/v2/models/<model:str>", front.model_metadata, "GET"),
        ("/v2/models/<model:str>/versions/<version:str>", front.model_metadata, "GET"),
        ("/v2/models/<model:str>/ready", front.model_ready, "GET"),
        ("/v2/models/<model:str>/versions/<version:str>/ready", front.model_ready, "GET"),
        ("/v2/models/<model:str>/config", front.model_config, "GET"),
        ("/v2/models/<model:str>/versions/<version:str>/config", front.model_config, "GET"),
        ("/v2/models/<model:str>/infer", front.infer, "POST"),
        ("/v2/models/<model:str>/versions/<version:str>/infer", front.infer, "POST"),
        ("/v2/models/stats", front.model_stats, "GET"),
        ("/v2/models/<model:str>/stats", front.model_stats, "GET"),
        ("/v2/models/<model:str>/versions/<version:str>/stats", front.model_stats, "GET"),
    ]
    keys = ApiKeys(front.cfg.frontend.effective_api_keys())
    for uri, handler, method in routes:
        if keys and not uri.startswith("/v2/health/"):  # no keys: no check at all
            handler = guarded(handler, keys.check)
        app.add_route(handler, uri, methods=[method], name=f"{method}_{uri}".replace("/", "_")
                      .replace("<", "").replace(">", "").replace(":", "_"))
    add_admin_routes(app, lambda: front.admin, token=front.cfg.admin.effective_token())
    add_metrics_route(app, front.metrics)
    add_openapi_route(app, api_keys=bool(keys))

    @app.exception(Exception)
    async def _on_error(request: Request, exc: Exception) -> HTTPResponse:
        resp = error_response(exc, front.cfg.frontend.max_body_bytes,
                              request_id_for_error(request))
        if front.metrics is not None:  # an inference request the front end answered itself
            front.metrics.error_reply(request, resp.status,
                                      "faas" if isinstance(exc, FaasThrottled) else "none")
        return resp

    return app
