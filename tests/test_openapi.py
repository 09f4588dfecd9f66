"""``GET /openapi.json``: every route the app serves is in it, it is a valid OpenAPI document,
and what the routes really send fits its schemas."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import requests

from frontend.app import FrontEnd, create_app
from frontend.fleet import Fleet
from frontend.openapi import OPERATIONS, UNDOCUMENTED, build_document, openapi_path, undocumented
from frontend.upstream import Upstream
from mark.cluster import ClusterThread
from mark.core.config import FrontendConfig, MarkConfig, ModelConfig


def app_of(cfg: MarkConfig) -> Any:
    front = FrontEnd(cfg, Fleet([m.name for m in cfg.models]), Upstream(1, 1.0, 1.0, 1))
    return create_app(front)


def validator(doc: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}",
                                            "components": doc["components"]})


@pytest.mark.parametrize("keys", [[], ["k1"]])
def test_every_route_of_the_app_is_described(keys: list[str]) -> None:
    app = app_of(MarkConfig(frontend=FrontendConfig(api_keys=keys)))
    missing, extra = undocumented(app)
    assert not missing, f"routes served but not in frontend/openapi.py OPERATIONS: {missing}"
    assert not extra, f"OPERATIONS describes routes the app does not serve: {extra}"
    doc = build_document(api_keys=bool(keys))
    served = {(m, openapi_path(r.path)) for r in app.router.routes for m in r.methods}
    for method, path in served:
        if path in UNDOCUMENTED:
            continue
        assert method.lower() in doc["paths"][path], (method, path)
    # the table is not empty and covers both families
    assert any(p.startswith("/admin/models") for _, p in served)
    assert ("POST", "/v2/models/{model}/infer") in served


@pytest.mark.parametrize("api_keys", [False, True])
def test_the_document_is_valid_openapi(api_keys: bool) -> None:
    doc = build_document(api_keys)
    assert doc["openapi"].startswith("3.1")
    validate = pytest.importorskip("openapi_spec_validator").validate
    validate(doc)


def test_security_schemes() -> None:
    doc = build_document(api_keys=True)
    assert doc["components"]["securitySchemes"]["adminToken"] == {
        **doc["components"]["securitySchemes"]["adminToken"], "type": "http", "scheme": "bearer"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if path.startswith("/admin/"):
                assert op["security"] == [{"adminToken": []}], (method, path)
                assert {"401", "403"} <= set(op["responses"]), (method, path)
            elif path.startswith("/v2/health/"):
                assert "security" not in op
            else:
                assert {"apiKeyHeader": []} in op["security"], (method, path)
    open_doc = build_document(api_keys=False)
    assert "apiKeyHeader" not in open_doc["components"]["securitySchemes"]
    assert "security" not in open_doc["paths"]["/v2/models/{model}/infer"]["post"]


def test_the_schemas_fit_real_bodies() -> None:
    doc = build_document()
    infer = {"id": "1", "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2],
                                    "data": [[1.0, 2.0]]}], "outputs": [{"name": "OUTPUT0"}]}
    validator(doc, "InferRequest").validate(infer)
    assert not validator(doc, "InferRequest").is_valid({"inputs": [{"name": "x"}]})
    assert not validator(doc, "InferRequest").is_valid(
        {"inputs": [{"name": "x", "shape": [1], "datatype": "FP33"}]})
    validator(doc, "Error").validate({"error": "unknown model 'x'"})
    assert not validator(doc, "Error").is_valid({"message": "x"})
    model = ModelConfig(name="m1", kind="profiled", profile="inception-v3",
                        instance_types=["c5.xlarge"], markets=["spot"], faas_memory_mb=2048)
    validator(doc, "ModelConfig").validate(model.model_dump(mode="json"))
    validator(doc, "ModelRegistration").validate({"name": "m2", "slo_latency_ms": 200})
    assert not validator(doc, "ModelRegistration").is_valid({"slo_latency_ms": 200})
    assert not validator(doc, "ModelRegistration").is_valid({"name": "m", "slo_ms": 200})
    validator(doc, "ModelUpdate").validate({"slo_latency_ms": 300, "slo_percentile": 99})
    assert not validator(doc, "ModelUpdate").is_valid({"slo_percentile": 100})
    op = doc["paths"]["/admin/models"]["post"]
    assert "201" in op["responses"]
    assert "202" in doc["paths"]["/admin/models/{model}"]["delete"]["responses"]
    assert {o.method for o in OPERATIONS if o.path == "/admin/models/<model:str>"} == {
        "GET", "PUT", "DELETE"}


@pytest.fixture(scope="module")
def served(empty_frontend: ClusterThread) -> dict[str, Any]:
    r = requests.get(empty_frontend.url + "/openapi.json", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    doc: dict[str, Any] = r.json()
    return doc


def test_the_running_front_end_serves_it(empty_frontend: ClusterThread,
                                         served: dict[str, Any]) -> None:
    assert served == build_document(api_keys=False)
    app = empty_frontend.cluster._server.app
    for route in app.router.routes:
        path = openapi_path(route.path)
        if path not in UNDOCUMENTED:
            assert set(m.lower() for m in route.methods) <= set(served["paths"][path]), path


def test_live_admin_replies_fit_their_schemas(empty_frontend: ClusterThread,
                                              served: dict[str, Any]) -> None:
    url = empty_frontend.url
    for path, schema in (("/admin/fleet", "Fleet"), ("/admin/cost", "Cost"),
                         ("/admin/decisions?since=0", "Decisions"), ("/v2", "ServerMetadata")):
        r = requests.get(url + path, timeout=30)
        assert r.status_code == 200, (path, r.text)
        validator(served, schema).validate(r.json())
    r = requests.get(url + "/v2/models/nope", timeout=30)
    assert r.status_code == 404
    validator(served, "Error").validate(r.json())
