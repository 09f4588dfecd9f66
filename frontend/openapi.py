"""``GET /openapi.json``: the OpenAPI 3.1 document of the inference (v2) and admin routes.

Built by hand from one table, :data:`OPERATIONS` (no sanic-ext: it would add work to every
request), rendered once per app and served as bytes. :func:`undocumented` compares the table
with an app's route table; a test keeps the two equal, so a route added without a line here
fails it.

Schemas: the v2 inference request and response (JSON; the binary-tensor extension as
``application/octet-stream`` with ``Inference-Header-Content-Length``), errors
(``{"error": str}``), the admin bodies (fleet, cost, decisions, models; a model is
:class:`~mark.core.config.ModelConfig`, its schema derived by pydantic). Admin routes carry the
``adminToken`` bearer scheme; with API keys configured the v2 routes (health aside) carry
``apiKeyBearer`` or ``apiKeyHeader``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import orjson
from sanic import Request, Sanic, response
from sanic.response import HTTPResponse

from frontend.protocol import DTYPE_SIZES
from mark.core import __version__
from mark.core.config import ModelConfig

OPENAPI_VERSION = "3.1.0"
# served by the app but outside the document: itself, and what the application adds for
# operators (Prometheus text, the dashboard page)
UNDOCUMENTED = frozenset({"/openapi.json", "/metrics", "/dashboard"})


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


_STR = {"type": "string"}
_NUM = {"type": "number"}
_STRS = {"type": "array", "items": _STR}
_PARAMS = {"type": "object", "additionalProperties": True,
           "description": "free-form parameters (v2 protocol)"}


def _v2_schemas() -> dict[str, Any]:
    tensor_meta = _obj(["name", "datatype", "shape"], name=_STR,
                       datatype={"type": "string", "enum": [*DTYPE_SIZES, "BYTES"]},
                       shape={"type": "array", "items": {"type": "integer"}})
    return {
        "Error": {**_obj(["error"], error=_STR),
                  "description": "every error: what was wrong and what is accepted"},
        "TensorData": {"type": "array", "items": {},
                       "description": "the tensor's elements in row-major order, flat or nested"},
        "InferInput": _obj(["name", "shape", "datatype"], name=_STR,
                           shape={"type": "array", "items": {"type": "integer", "minimum": 0}},
                           datatype={"type": "string", "enum": [*DTYPE_SIZES, "BYTES"]},
                           parameters=_PARAMS, data=_ref("TensorData")),
        "InferRequestedOutput": _obj(["name"], name=_STR, parameters=_PARAMS),
        "InferRequest": _obj(["inputs"], id=_STR, parameters=_PARAMS,
                             inputs={"type": "array", "minItems": 1, "items": _ref("InferInput")},
                             outputs={"type": "array", "items": _ref("InferRequestedOutput")}),
        "InferOutput": _obj(["name", "shape", "datatype"], name=_STR,
                            shape={"type": "array", "items": {"type": "integer", "minimum": 0}},
                            datatype=_STR, parameters=_PARAMS, data=_ref("TensorData")),
        "InferResponse": _obj(["model_name", "outputs"], model_name=_STR, model_version=_STR,
                              id=_STR, parameters=_PARAMS,
                              outputs={"type": "array", "items": _ref("InferOutput")}),
        "ServerMetadata": _obj(["name", "version", "extensions"], name=_STR, version=_STR,
                               extensions=_STRS),
        "TensorMetadata": tensor_meta,
        "ModelMetadata": _obj(["name", "platform", "inputs", "outputs"], name=_STR,
                              versions=_STRS, platform=_STR,
                              inputs={"type": "array", "items": _ref("TensorMetadata")},
                              outputs={"type": "array", "items": _ref("TensorMetadata")}),
        "ModelStatistics": {**_obj(["model_stats"], model_stats={
            "type": "array", "items": {"type": "object", "additionalProperties": True}}),
            "description": "Triton's statistics extension, summed over the ready instances"},
        "ModelTritonConfig": {"type": "object", "additionalProperties": True,
                              "description": "the instance's Triton model configuration"},
    }


def _admin_schemas() -> dict[str, Any]:
    model = ModelConfig.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = model.pop("$defs", {})
    update = copy.deepcopy(model)
    update.pop("required", None)
    update["title"] = "ModelUpdate"
    update["description"] = ("fields of a registered model to change (a partial ModelConfig); "
                             "the name cannot change, and fields that shape its running "
                             "instances are refused (400 names them)")
    register = {**copy.deepcopy(model), "required": ["name"], "title": "ModelRegistration",
                "description": "a model to register: its name, kind and source, SLO, allowed "
                               "instance types and markets, FaaS memory (ModelConfig)"}
    entry_props = {**model.get("properties", {}),
                   "status": {"type": "string", "enum": ["serving", "deleting"]},
                   "instances": {**_STRS, "description": "ids of its instances"}}
    nullable_num = {"type": ["number", "null"]}
    return {
        **defs,
        "ModelConfig": model,
        "ModelRegistration": register,
        "ModelUpdate": update,
        "ModelEntry": {"type": "object", "title": "ModelEntry", "properties": entry_props,
                       "required": ["name", "status", "instances"],
                       "description": "a registered model: its configuration (absent while it "
                                      "is deleting), status and instances"},
        "ModelList": {"type": "array", "items": _ref("ModelEntry")},
        "Instance": _obj(
            ["id", "url", "model", "instance_type", "market", "state", "weight"],
            id=_STR, url=_STR, model={"oneOf": [_STR, _STRS]}, instance_type=_STR,
            market={"type": "string", "enum": ["on_demand", "spot"]},
            state={"type": "string",
                   "enum": ["pending", "ready", "notice", "draining", "unhealthy"]},
            weight={**_NUM, "description": "WRR weight (req/s)"},
            launched_at={**_NUM, "description": "s since the control loop started"},
            ready_at={**nullable_num, "description": "s since the control loop started"},
            cost_usd={**_NUM, "description": "USD so far"}),
        "Fleet": {"type": "array", "items": _ref("Instance")},
        "InstanceAction": _obj(["id", "state"], id=_STR, state=_STR,
                               reclaim_at={**_NUM, "description": "when a spot notice reclaims "
                                           "it (s, control loop clock)"}),
        "Cost": _obj(["total", "on_demand", "spot", "faas"], total=_NUM, on_demand=_NUM,
                     spot=_NUM, faas=_NUM),
        "Decision": {**_obj(["t", "model"], t={**_NUM, "description": "s, control loop clock"},
                            wall={**_NUM, "description": "Unix time (s)"}, model=_STR,
                            capacity_rps={"type": "object", "additionalProperties": True},
                            forecast_rps=nullable_num,
                            launches={"type": "array", "items": _obj(
                                ["instance_type", "market"], instance_type=_STR, market=_STR)},
                            terminations=_STRS, info={"type": "object",
                                                      "additionalProperties": True},
                            error={"type": ["string", "null"]},
                            events={"type": "array", "items": {"type": "object"}}),
                     "additionalProperties": True, "description": "one policy step of a model"},
        "Decisions": {"type": "array", "items": _ref("Decision")},
    }


@dataclass(frozen=True)
class Op:
    """One route: ``path`` as Sanic writes it (``<name:type>`` parameters)."""

    method: str
    path: str
    summary: str
    tag: str
    ok: tuple[int, str, str | None]  # status, description, schema name (None: no body)
    body: str | None = None  # request schema name
    errors: tuple[int, ...] = ()
    query: tuple[tuple[str, str, dict[str, Any]], ...] = ()  # name, description, schema


_V = "/versions/<version:str>"
_MODEL_ERR = (400, 404, 503)
_INFER_ERR = (400, 404, 413, 502, 503, 504)
_ADMIN_ERR = (401, 403, 503)


def _v2_ops() -> list[Op]:
    ops = [
        Op("GET", "/v2/health/live", "the server is live", "health", (200, "live", None)),
        Op("GET", "/v2/health/ready", "every model has a ready instance", "health",
           (200, "ready", None), errors=(503,)),
        Op("GET", "/v2", "server metadata", "inference", (200, "metadata", "ServerMetadata")),
        Op("GET", "/v2/models/stats", "statistics of every model (summed over instances)",
           "inference", (200, "statistics", "ModelStatistics"), errors=(502,)),
    ]
    for v in ("", _V):
        ops += [
            Op("GET", f"/v2/models/<model:str>{v}", "model metadata", "inference",
               (200, "metadata", "ModelMetadata"), errors=_MODEL_ERR),
            Op("GET", f"/v2/models/<model:str>{v}/ready", "the model has a ready instance",
               "inference", (200, "ready", None), errors=_MODEL_ERR),
            Op("GET", f"/v2/models/<model:str>{v}/config", "the model's Triton configuration",
               "inference", (200, "configuration", "ModelTritonConfig"), errors=_MODEL_ERR),
            Op("POST", f"/v2/models/<model:str>{v}/infer",
               "run an inference (routed to an instance, or spilled to the model's function)",
               "inference", (200, "the outputs; x-mark-backend and x-mark-instance say where "
                             "it ran", "InferResponse"), body="InferRequest", errors=_INFER_ERR),
            Op("GET", f"/v2/models/<model:str>{v}/stats", "the model's statistics (summed over "
               "its instances)", "inference", (200, "statistics", "ModelStatistics"),
               errors=(*_MODEL_ERR, 502)),
        ]
    return ops


def _admin_ops() -> list[Op]:
    m = "/admin/models/<model:str>"
    return [
        Op("GET", "/admin/models", "the registered models", "admin",
           (200, "models", "ModelList"), errors=(409,)),
        Op("POST", "/admin/models", "register a model; its fleet launches through the control "
           "loop", "admin", (201, "registered", "ModelEntry"), body="ModelRegistration",
           errors=(400, 409)),
        Op("GET", m, "one model", "admin", (200, "the model", "ModelEntry"), errors=(404, 409)),
        Op("PUT", m, "change a model (its SLO takes effect at the next control step and spill "
           "decision)", "admin", (200, "updated", "ModelEntry"), body="ModelUpdate",
           errors=(400, 404, 409)),
        Op("DELETE", m, "delete a model: refused from now on, its fleet drains", "admin",
           (202, "draining", "ModelEntry"), errors=(404, 409)),
        Op("GET", "/admin/fleet", "the instances", "admin", (200, "the fleet", "Fleet")),
        Op("POST", "/admin/instances/<instance_id:str>/drain", "drain an instance", "admin",
           (202, "draining", "InstanceAction"), errors=(404,)),
        Op("POST", "/admin/instances/<instance_id:str>/notice", "send a spot instance its "
           "interruption notice", "admin", (202, "noticed", "InstanceAction"),
           errors=(404, 409)),
        Op("GET", "/admin/cost", "cost so far (USD)", "admin", (200, "cost", "Cost")),
        Op("GET", "/admin/decisions", "the control loop's policy steps", "admin",
           (200, "decisions", "Decisions"), errors=(400,),
           query=(("since", "only steps at or after this time (s, the control loop's clock, "
                   "as the records' t)", {"type": "number", "default": 0}),)),
    ]


OPERATIONS: tuple[Op, ...] = (*_v2_ops(), *_admin_ops())

_PARAM = re.compile(r"<([A-Za-z_]\w*)(?::[^>]*)?>")
_ERRORS = {400: "bad request (the message names the field and what is accepted)",
           401: "no credentials", 403: "wrong credentials, or not allowed from this address",
           404: "unknown model, instance or route", 409: "conflicts with the current state",
           413: "body over frontend.max_body_bytes", 502: "an instance failed, also on retry",
           503: "nothing can serve it now (see Retry-After)", 504: "deadline passed"}
_REQUEST_ID = {"name": "x-request-id", "in": "header", "required": False,
               "description": "1 to 128 printable ASCII characters; made (uuid4 hex) when "
                              "absent; carried to the instance or function and returned",
               "schema": {"type": "string", "maxLength": 128}}


def openapi_path(sanic_path: str) -> str:
    """``/v2/models/<model:str>`` -> ``/v2/models/{model}``."""
    return _PARAM.sub(r"{\1}", "/" + sanic_path.lstrip("/"))


def _operation(op: Op, api_keys: bool) -> dict[str, Any]:
    rid_header = {"x-request-id": {"description": "the request's id",
                                   "schema": {"type": "string"}}}
    doc: dict[str, Any] = {
        "summary": op.summary, "tags": [op.tag],
        "operationId": f"{op.method.lower()}{re.sub(r'[^A-Za-z0-9]+', '_', op.path)}",
    }
    params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
              for n in _PARAM.findall(op.path)]
    params += [{"name": n, "in": "query", "required": False, "description": d, "schema": s}
               for n, d, s in op.query]
    infer = op.path.endswith("/infer")
    if infer:
        params += [_REQUEST_ID, {
            "name": "Inference-Header-Content-Length", "in": "header", "required": False,
            "description": "binary-tensor extension: bytes of JSON at the body's start",
            "schema": {"type": "integer", "minimum": 0}}]
    if params:
        doc["parameters"] = params
    if op.body is not None:
        content: dict[str, Any] = {"application/json": {"schema": _ref(op.body)}}
        if infer:
            content["application/octet-stream"] = {
                "schema": {"type": "string", "format": "binary", "description": "JSON header "
                           "then binary tensors (binary-tensor extension)"}}
        doc["requestBody"] = {"required": True, "content": content}
    status, desc, schema = op.ok
    ok: dict[str, Any] = {"description": desc}
    if schema is not None:
        ok["content"] = {"application/json": {"schema": _ref(schema)}}
    if infer:
        ok["headers"] = {**rid_header, "x-mark-backend": {"schema": {
            "type": "string", "enum": ["iaas", "faas"]}},
            "x-mark-instance": {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(status): ok}
    errors = set(op.errors)
    if op.tag == "admin":
        errors |= set(_ADMIN_ERR)
        doc["security"] = [{"adminToken": []}]
    elif op.tag == "inference" and api_keys:
        errors |= {401, 403}
        doc["security"] = [{"apiKeyBearer": []}, {"apiKeyHeader": []}]
    for code in sorted(errors):
        err: dict[str, Any] = {"description": _ERRORS[code],
                               "content": {"application/json": {"schema": _ref("Error")}}}
        if infer:
            err["headers"] = rid_header
        responses[str(code)] = err
    doc["responses"] = responses
    return doc


def build_document(api_keys: bool = False) -> dict[str, Any]:
    """The OpenAPI document; ``api_keys``: the inference routes require a key."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(openapi_path(op.path), {})[op.method.lower()] = _operation(op, api_keys)
    schemes: dict[str, Any] = {"adminToken": {
        "type": "http", "scheme": "bearer",
        "description": "admin.token or MARK_ADMIN_TOKEN; with none configured the admin "
                       "routes answer only clients on loopback"}}
    if api_keys:
        schemes["apiKeyBearer"] = {"type": "http", "scheme": "bearer",
                                   "description": "one of frontend.api_keys / MARK_API_KEYS"}
        schemes["apiKeyHeader"] = {"type": "apiKey", "in": "header", "name": "x-api-key"}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "mark", "version": __version__,
                 "description": "SLO-aware, cost-minimising inference serving: the KServe v2 "
                                "inference protocol and the admin API"},
        "tags": [{"name": "inference"}, {"name": "health"}, {"name": "admin"}],
        "paths": paths,
        "components": {"schemas": {**_v2_schemas(), **_admin_schemas()},
                       "securitySchemes": schemes},
    }


def route_table(app: Sanic[Any, Any]) -> set[tuple[str, str]]:
    """(METHOD, OpenAPI path) of every route ``app`` serves."""
    if not app.router.finalized:
        app.router.finalize()
    return {(method, openapi_path(route.path)) for route in app.router.routes
            for method in route.methods}


def undocumented(app: Sanic[Any, Any]) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(routes ``app`` serves that :data:`OPERATIONS` lacks, outside :data:`UNDOCUMENTED`;
    operations it describes that ``app`` does not serve)."""
    served = {r for r in route_table(app) if r[1] not in UNDOCUMENTED}
    described = {(op.method, openapi_path(op.path)) for op in OPERATIONS}
    return served - described, described - served


def add_openapi_route(app: Sanic[Any, Any], api_keys: bool = False) -> None:
    """Serve the document at ``GET /openapi.json`` (rendered once)."""
    body = orjson.dumps(build_document(api_keys))

    async def openapi(request: Request) -> HTTPResponse:
        return response.raw(body, content_type="application/json")

    app.add_route(openapi, "/openapi.json", methods=["GET"], name="openapi")
