"""The admin routes on the front end's port: fleet, cost and decisions over HTTP.

The front end does not own the control plane; it serves whatever implements
:class:`AdminApi` (the application's control plane in the serving process, or
:class:`ProxyAdmin` in a worker process, which forwards to the control plane's private
loopback address, with the admin token). Every route requires the admin bearer token
(``authorization: Bearer <t>``: 401 without, 403 wrong); with no token configured they answer
only clients on loopback (403 otherwise). See :mod:`frontend.auth`.

- ``GET /admin/fleet``: the instances, each with ``id``, ``url``, ``model``,
  ``instance_type``, ``market``, ``state``, ``weight``, ``launched_at``, ``ready_at``,
  ``cost_usd``.
- ``POST /admin/instances/{id}/drain``, ``POST /admin/instances/{id}/notice``.
- ``GET /admin/cost``: ``{"total", "on_demand", "spot", "faas"}`` (USD since start).
- ``GET /admin/decisions?since=T``: the policy steps at or after ``T`` (seconds, the
  control loop's clock as the records' ``t`` give it).
- ``GET|POST /admin/models``, ``GET|PUT|DELETE /admin/models/{m}``: the registered models
  (a model configuration each, with ``status`` and ``instances``); register (201), update
  the SLO, types, markets or weight, delete (202: its fleet drains first). See
  :mod:`mark.control.models`.
"""

from __future__ import annotations

import math
from typing import Any, Protocol
from urllib.parse import quote

import orjson
from sanic import Request, Sanic, response
from sanic.response import HTTPResponse

from frontend.auth import AdminAuth, guarded, loopback_only
from frontend.auth import Forbidden as Forbidden  # re-exported: it used to live here
from frontend.upstream import Upstream
from mark.core.errors import (
    BadRequest,
    MarkError,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)


class AdminApi(Protocol):
    async def fleet(self) -> list[dict[str, Any]]: ...

    async def drain(self, instance_id: str) -> dict[str, Any]: ...

    async def notice(self, instance_id: str) -> dict[str, Any]: ...

    async def cost(self) -> dict[str, float]: ...

    async def decisions(self, since: float) -> list[dict[str, Any]]: ...

    async def models(self) -> list[dict[str, Any]]: ...

    async def model(self, name: str) -> dict[str, Any]: ...

    async def register(self, doc: Any) -> dict[str, Any]: ...

    async def update(self, name: str, doc: Any) -> dict[str, Any]: ...

    async def delete(self, name: str) -> dict[str, Any]: ...


def _json_body(request: Request) -> Any:
    """The request's JSON body (400 naming what is accepted when it is not JSON)."""
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if ctype != "application/json":
        raise BadRequest(f"content-type must be application/json, got {ctype!r}")
    try:
        return orjson.loads(request.body or b"null")
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from exc


_loopback_only = loopback_only  # the check without a token (tests call it by this name)


def _since(request: Request) -> float:
    raw = request.args.get("since", "0")
    try:
        since = float(raw)
    except ValueError:
        since = math.nan
    if not math.isfinite(since):
        raise BadRequest(f"since must be a number of seconds (the control loop's clock, as "
                         f"the decisions' t), got {raw!r}")
    return since


def add_admin_routes(app: Sanic[Any, Any], get_admin: Any, token: str | None = None) -> None:
    """Register the admin routes on ``app``; ``get_admin()`` returns the :class:`AdminApi`
    (or None while there is none: 503). ``token``: the bearer token every route requires
    (None: loopback clients only; see :mod:`frontend.auth`).

    Register every route through ``add`` below: it puts the check before the handler, so
    no body is parsed and nothing answers before the caller is known."""
    auth = AdminAuth(token)

    def add(handler: Any, uri: str, method: str, name: str) -> None:
        app.add_route(guarded(handler, auth.check), uri, methods=[method], name=name)

    def admin_of(request: Request) -> AdminApi:
        auth.check(request)  # again, for a route registered past ``add``
        admin = get_admin()
        if admin is None:
            raise ServiceUnavailable("the control plane is not reachable yet; retry later", 1)
        return admin

    def dumps(doc: Any, status: int = 200) -> HTTPResponse:
        body = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
        return response.raw(body, status=status, content_type="application/json")

    async def fleet(request: Request) -> HTTPResponse:
        return dumps(await admin_of(request).fleet())

    async def drain(request: Request, instance_id: str) -> HTTPResponse:
        return dumps(await admin_of(request).drain(instance_id), 202)

    async def notice(request: Request, instance_id: str) -> HTTPResponse:
        return dumps(await admin_of(request).notice(instance_id), 202)

    async def cost(request: Request) -> HTTPResponse:
        return dumps(await admin_of(request).cost())

    async def decisions(request: Request) -> HTTPResponse:
        since = _since(request)
        return dumps(await admin_of(request).decisions(since))

    async def models(request: Request) -> HTTPResponse:
        return dumps(await admin_of(request).models())

    async def register(request: Request) -> HTTPResponse:
        admin = admin_of(request)
        return dumps(await admin.register(_json_body(request)), 201)

    async def model(request: Request, model: str) -> HTTPResponse:
        return dumps(await admin_of(request).model(model))

    async def update(request: Request, model: str) -> HTTPResponse:
        admin = admin_of(request)
        return dumps(await admin.update(model, _json_body(request)))

    async def delete(request: Request, model: str) -> HTTPResponse:
        return dumps(await admin_of(request).delete(model), 202)

    add(models, "/admin/models", "GET", "admin_models")
    add(register, "/admin/models", "POST", "admin_register")
    add(model, "/admin/models/<model:str>", "GET", "admin_model")
    add(update, "/admin/models/<model:str>", "PUT", "admin_update")
    add(delete, "/admin/models/<model:str>", "DELETE", "admin_delete")
    add(fleet, "/admin/fleet", "GET", "admin_fleet")
    add(drain, "/admin/instances/<instance_id:str>/drain", "POST", "admin_drain")
    add(notice, "/admin/instances/<instance_id:str>/notice", "POST", "admin_notice")
    add(cost, "/admin/cost", "GET", "admin_cost")
    add(decisions, "/admin/decisions", "GET", "admin_decisions")


class ProxyAdmin:
    """An :class:`AdminApi` that forwards to the control plane's admin address (workers),
    with the admin ``token`` when one is configured (that address requires it too)."""

    def __init__(self, base_url: str, upstream: Upstream, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.upstream = upstream
        self._headers = {"authorization": f"Bearer {token}"} if token else None

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        headers = self._headers
        data: bytes | None = None
        if body is not None:
            headers = {**(headers or {}), "content-type": "application/json"}
            data = orjson.dumps(body)
        try:
            reply = await self.upstream.request(method, self.base_url + path, data,
                                                headers=headers)
        except (UpstreamError, UpstreamTimeout) as exc:
            raise ServiceUnavailable(f"control plane at {self.base_url} not reachable: {exc}",
                                     1) from exc
        doc = orjson.loads(reply.body) if reply.body else {}
        if reply.status >= 400:
            err = MarkError(doc.get("error", f"control plane answered {reply.status}"))
            err.status = reply.status
            raise err
        return doc

    async def fleet(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/admin/fleet")

    async def drain(self, instance_id: str) -> dict[str, Any]:
        return await self._call("POST", f"/admin/instances/{instance_id}/drain")

    async def notice(self, instance_id: str) -> dict[str, Any]:
        return await self._call("POST", f"/admin/instances/{instance_id}/notice")

    async def cost(self) -> dict[str, float]:
        return await self._call("GET", "/admin/cost")

    async def decisions(self, since: float) -> list[dict[str, Any]]:
        return await self._call("GET", f"/admin/decisions?since={since!r}")

    async def models(self) -> list[dict[str, Any]]:
        return await self._call("GET", "/admin/models")

    async def model(self, name: str) -> dict[str, Any]:
        return await self._call("GET", f"/admin/models/{quote(name, safe='')}")

    async def register(self, doc: Any) -> dict[str, Any]:
        return await self._call("POST", "/admin/models", doc)

    async def update(self, name: str, doc: Any) -> dict[str, Any]:
        return await self._call("PUT", f"/admin/models/{quote(name, safe='')}", doc)

    async def delete(self, name: str) -> dict[str, Any]:
        return await self._call("DELETE", f"/admin/models/{quote(name, safe='')}")
