"""The admin routes on the front end's port: fleet, cost and decisions over HTTP.

The front end does not own the control plane; it serves whatever implements
:class:`AdminApi` (the application's control plane in the serving process, or
:class:`ProxyAdmin` in a worker process, which forwards to the control plane's private
loopback address). Until the admin issue adds authentication, these routes answer only
clients on loopback (403 otherwise).

- ``GET /admin/fleet``: the instances, each with ``id``, ``url``, ``model``,
  ``instance_type``, ``market``, ``state``, ``weight``, ``launched_at``, ``ready_at``,
  ``cost_usd``.
- ``POST /admin/instances/{id}/drain``, ``POST /admin/instances/{id}/notice``.
- ``GET /admin/cost``: ``{"total", "on_demand", "spot", "faas"}`` (USD since start).
- ``GET /admin/decisions?since=T``: the policy steps at or after ``T`` (seconds, the
  control loop's clock as the records' ``t`` give it).
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any, Protocol

import orjson
from sanic import Request, Sanic, response
from sanic.response import HTTPResponse

from frontend.upstream import Upstream
from mark.core.errors import (
    BadRequest,
    MarkError,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)


class Forbidden(MarkError):
    status = 403


class AdminApi(Protocol):
    async def fleet(self) -> list[dict[str, Any]]: ...

    async def drain(self, instance_id: str) -> dict[str, Any]: ...

    async def notice(self, instance_id: str) -> dict[str, Any]: ...

    async def cost(self) -> dict[str, float]: ...

    async def decisions(self, since: float) -> list[dict[str, Any]]: ...


def _loopback_only(request: Request) -> None:
    try:
        ok = ipaddress.ip_address(request.ip).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise Forbidden(f"the admin API answers only clients on loopback (127.0.0.1, ::1) until "
                        f"authentication exists; this request came from {request.ip!r}")


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


def add_admin_routes(app: Sanic[Any, Any], get_admin: Any) -> None:
    """Register the admin routes on ``app``; ``get_admin()`` returns the :class:`AdminApi`
    (or None while there is none: 503)."""

    def admin_of(request: Request) -> AdminApi:
        _loopback_only(request)
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

    app.add_route(fleet, "/admin/fleet", methods=["GET"], name="admin_fleet")
    app.add_route(drain, "/admin/instances/<instance_id:str>/drain", methods=["POST"],
                  name="admin_drain")
    app.add_route(notice, "/admin/instances/<instance_id:str>/notice", methods=["POST"],
                  name="admin_notice")
    app.add_route(cost, "/admin/cost", methods=["GET"], name="admin_cost")
    app.add_route(decisions, "/admin/decisions", methods=["GET"], name="admin_decisions")


class ProxyAdmin:
    """An :class:`AdminApi` that forwards to the control plane's admin address (workers)."""

    def __init__(self, base_url: str, upstream: Upstream) -> None:
        self.base_url = base_url.rstrip("/")
        self.upstream = upstream

    async def _call(self, method: str, path: str) -> Any:
        try:
            reply = await self.upstream.request(method, self.base_url + path)
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
