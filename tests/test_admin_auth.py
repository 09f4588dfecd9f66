"""Admin authentication and inference API keys, live: a cluster (two front-end processes, so
the worker's forwarding to the private admin port is on the path too) with an admin token and
an API key; every ``/admin`` route of the app's own route table is tried with no token, a
wrong one and the right one, on the public port and on the private one."""

from __future__ import annotations

import io
import logging
import os
import re
import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from frontend.auth import AdminAuth, ApiKeys, CredentialsRequired, Forbidden
from mark.cluster import ClusterThread
from mark.core.config import (
    AdminConfig,
    ControlConfig,
    FleetConfig,
    FrontendConfig,
    MarkConfig,
    ModelConfig,
)

TOKEN = "admin-Tok3n-0123456789abcdef"
KEY = "inference-key-42-zyxw"
OTHER_KEY = "second-key-7"
PARAMS = {"model": "nope", "instance_id": "nope", "version": "1"}  # nothing real is touched
BODY = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": [1.0] * 16}]}


@pytest.fixture(scope="module")
def clean_env() -> Iterator[None]:
    saved = {k: os.environ.pop(k) for k in ("MARK_ADMIN_TOKEN", "MARK_API_KEYS")
             if k in os.environ}
    yield
    os.environ.update(saved)


@pytest.fixture(scope="module")
def raw_log() -> Iterator[io.StringIO]:
    """Every record of the module at DEBUG, without redaction: what the code itself logs."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="module")
def guarded_cluster(tmp_path_factory: pytest.TempPathFactory, clean_env: None,
                    raw_log: io.StringIO) -> Iterator[ClusterThread]:
    cfg = MarkConfig(
        models=[ModelConfig(name="identity", kind="identity")],
        control=ControlConfig(enabled=False),
        fleet=FleetConfig(instances=1),
        frontend=FrontendConfig(port=0, workers=2, api_keys=[KEY, OTHER_KEY]),
        admin=AdminConfig(token=TOKEN),
        runtime_dir=tmp_path_factory.mktemp("auth"),
    )
    c = ClusterThread(cfg)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def open_cluster(tmp_path_factory: pytest.TempPathFactory,
                 clean_env: None) -> Iterator[ClusterThread]:
    """No token, listening on every address: the admin API answers loopback only."""
    cfg = MarkConfig(
        models=[ModelConfig(name="identity", kind="identity")],
        control=ControlConfig(enabled=False),
        fleet=FleetConfig(instances=0),
        frontend=FrontendConfig(host="0.0.0.0", port=0, workers=1),
        runtime_dir=tmp_path_factory.mktemp("auth-open"),
    )
    c = ClusterThread(cfg)
    yield c
    c.stop()


def admin_routes(c: ClusterThread) -> list[tuple[str, str]]:
    """(method, concrete path) of every /admin route the front end's app serves."""
    app = c.cluster._server.app
    out = []
    for route in app.router.routes:
        path = "/" + route.path.lstrip("/")
        if not path.startswith("/admin"):
            continue
        concrete = re.sub(r"<(\w+)(?::[^>]*)?>", lambda m: PARAMS[m[1]], path)
        out += [(method, concrete) for method in sorted(route.methods)]
    return sorted(out)


def call(method: str, url: str, headers: dict[str, str] | None = None) -> requests.Response:
    body = b"{}" if method in ("POST", "PUT") else None
    return requests.request(method, url, headers={"content-type": "application/json",
                                                  **(headers or {})}, data=body, timeout=30)


def test_every_admin_route_requires_the_token(guarded_cluster: ClusterThread) -> None:
    routes = admin_routes(guarded_cluster)
    # the routes known today are among them (a route table that lost them would pass vacuously)
    assert {("GET", "/admin/fleet"), ("GET", "/admin/cost"), ("GET", "/admin/decisions"),
            ("POST", "/admin/instances/nope/drain"), ("GET", "/admin/models"),
            ("DELETE", "/admin/models/nope")} <= set(routes)
    bases = [guarded_cluster.url, guarded_cluster.cluster.fleet.admin_url]
    assert bases[1], "two workers: the private admin port must be up"
    for base in bases:
        for method, path in routes:
            where = f"{method} {base}{path}"
            r = call(method, base + path)
            assert r.status_code == 401, (where, r.status_code, r.text)
            assert r.headers.get("www-authenticate", "").startswith("Bearer"), where
            assert "no bearer token" in r.json()["error"], where
            r = call(method, base + path, {"authorization": "Basic " + TOKEN})
            assert r.status_code == 401, (where, "another scheme is no bearer token")
            r = call(method, base + path, {"authorization": "Bearer wrong-" + TOKEN})
            assert r.status_code == 403, (where, r.status_code, r.text)
            assert r.json()["error"] == "wrong admin token", where
            r = call(method, base + path, {"authorization": "Bearer " + TOKEN})
            assert r.status_code not in (401, 403), (where, r.status_code, r.text)


def test_the_right_token_reaches_the_control_plane_through_every_worker(
        guarded_cluster: ClusterThread) -> None:
    # connections spread over both processes; each must forward the token to the private port
    for _ in range(12):
        with requests.Session() as s:
            r = s.get(guarded_cluster.url + "/admin/fleet",
                      headers={"authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert r.status_code == 200, r.text
        assert [i["model"] for i in r.json()] == ["identity"]


def test_no_worker_has_the_token_on_its_command_line(guarded_cluster: ClusterThread) -> None:
    procs = guarded_cluster.cluster._worker_procs
    assert procs
    for proc in procs:
        with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
            cmdline = f.read()
        assert b"frontend.worker" in cmdline
        assert TOKEN.encode() not in cmdline and KEY.encode() not in cmdline
    cfg_file = guarded_cluster.cluster.fleet_path.parent / "worker-config.json"
    assert cfg_file.stat().st_mode & 0o777 == 0o600


def test_inference_needs_an_api_key(guarded_cluster: ClusterThread) -> None:
    url = guarded_cluster.url + "/v2/models/identity/infer"
    r = requests.post(url, json=BODY, timeout=30)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "no API key" in r.json()["error"] and "x-api-key" in r.json()["error"]
    for bad in ({"authorization": "Bearer nope"}, {"x-api-key": KEY[:-1]},
                {"x-api-key": TOKEN}):
        r = requests.post(url, json=BODY, headers=bad, timeout=30)
        assert r.status_code == 403, (bad, r.text)
        assert r.json()["error"] == "wrong API key"
        assert KEY not in r.text and TOKEN not in r.text
    for good in ({"authorization": f"Bearer {KEY}"}, {"x-api-key": OTHER_KEY},
                 {"authorization": "Bearer nope", "x-api-key": KEY}):
        r = requests.post(url, json=BODY, headers=good, timeout=30)
        assert r.status_code == 200, (good, r.text)
        assert len(r.json()["outputs"][0]["data"]) == 16
    # the other v2 routes need it too; health does not
    assert requests.get(guarded_cluster.url + "/v2/models/identity", timeout=30).status_code == 401
    assert requests.get(guarded_cluster.url + "/v2/models/identity", headers={
        "x-api-key": KEY}, timeout=30).status_code == 200
    assert requests.get(guarded_cluster.url + "/v2/health/live", timeout=30).status_code == 200
    assert requests.get(guarded_cluster.url + "/v2/health/ready", timeout=30).status_code == 200


def test_no_log_line_holds_a_secret(guarded_cluster: ClusterThread, raw_log: io.StringIO) -> None:
    # after the tests above (module order): refusals were logged, the secrets never
    for path in ("/admin/fleet", "/admin/cost"):
        call("GET", guarded_cluster.url + path, {"authorization": "Bearer wrong-" + TOKEN})
        call("GET", guarded_cluster.url + path)
    text = raw_log.getvalue()
    assert "admin API: 403 for GET /admin/fleet" in text
    assert "admin API: 401 for GET /admin/cost" in text
    assert TOKEN not in text and KEY not in text and OTHER_KEY not in text


def _non_loopback_address() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.200", 9))  # no packet is sent: this only picks a route
            addr = s.getsockname()[0]
    except OSError:
        return None
    return None if addr.startswith("127.") else str(addr)


def test_without_a_token_only_loopback_clients_are_answered(open_cluster: ClusterThread) -> None:
    port = open_cluster.cluster.port
    r = requests.get(f"http://127.0.0.1:{port}/admin/fleet", timeout=30)
    assert r.status_code == 200, r.text
    addr = _non_loopback_address()
    if addr is None:
        pytest.skip("this machine has no non-loopback address (the check itself: below)")
    r = requests.get(f"http://{addr}:{port}/admin/fleet", timeout=30)
    assert r.status_code == 403, r.text
    msg = r.json()["error"]
    assert "loopback" in msg and "MARK_ADMIN_TOKEN" in msg and addr in msg
    # the inference routes stay open (no API keys), from anywhere
    assert requests.get(f"http://{addr}:{port}/v2/models/identity",
                        timeout=30).status_code in (200, 503)


def _req(ip: str = "127.0.0.1", **headers: str) -> Any:
    return SimpleNamespace(ip=ip, method="GET", path="/admin/fleet", headers=headers)


def test_the_checks_on_minimal_requests() -> None:
    loopback = AdminAuth(None)
    loopback.check(_req("127.0.0.1"))
    loopback.check(_req("::1"))
    for ip in ("10.1.2.3", "192.0.2.7", "", "nonsense"):
        with pytest.raises(Forbidden, match="MARK_ADMIN_TOKEN"):
            loopback.check(_req(ip))
    auth = AdminAuth(TOKEN)
    auth.check(_req("10.1.2.3", authorization=f"Bearer {TOKEN}"))
    auth.check(_req("10.1.2.3", authorization=f"bearer   {TOKEN} "))
    with pytest.raises(CredentialsRequired):
        auth.check(_req("127.0.0.1"))  # a token set: loopback is no excuse
    with pytest.raises(Forbidden):
        auth.check(_req(authorization=f"Bearer {TOKEN}x"))
    with pytest.raises(Forbidden):
        auth.check(_req(authorization="Bearer \u00e9t\u00e9"))  # non-ASCII: refused, no crash
    keys = ApiKeys([])
    assert not keys
    keys = ApiKeys([KEY])
    assert keys
    keys.check(_req(**{"x-api-key": KEY}))
    with pytest.raises(CredentialsRequired):
        keys.check(_req(authorization=f"Basic {KEY}"))


def test_mark_up_says_how_the_admin_api_is_protected(monkeypatch: pytest.MonkeyPatch) -> None:
    from mark.cli.up import admin_notice

    monkeypatch.delenv("MARK_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("MARK_API_KEYS", raising=False)
    assert admin_notice(MarkConfig()).startswith(
        "admin API: loopback only (no admin token set; set MARK_ADMIN_TOKEN)")
    assert admin_notice(MarkConfig()).endswith("inference: open")
    monkeypatch.setenv("MARK_ADMIN_TOKEN", TOKEN)
    monkeypatch.setenv("MARK_API_KEYS", f"{KEY}, {OTHER_KEY}")
    said = admin_notice(MarkConfig())
    assert said == "admin API: bearer token required; inference: 2 API key(s) accepted"
    assert TOKEN not in said
