"""The HTTP API fuzzed from its own OpenAPI document (schemathesis over hypothesis).

The document is fetched from the running front end (``GET /openapi.json``), and every
operation in it gets generated requests, valid ones and broken ones (schemathesis's positive
and negative modes: wrong types, missing fields, values out of range, odd strings in paths,
queries and headers), sent with the admin token, without it and with a wrong one:

- ``inference``: a front end over a real Triton instance of the ``identity`` model, control
  loop off (the admin model routes answer 409 there; drains and notices name instance ids no
  generator guesses);
- ``control``: the control loop on, a ``profiled`` model and the ``fake`` fleet backend, so
  ``POST /admin/models`` with a valid body registers a model whose instances exist only in
  memory, and ``DELETE`` drains them: the admin model routes are reached for real without
  launching a process.

Every reply must be: below 500, or 502/503/504 carrying ``{"error": reason}``; any error
status carries ``{"error": str}``; admin routes without the token 401, with a wrong one 403;
each reply within CASE_TIMEOUT_S (no hang); and the front end still answers its health check
after each operation (no crash). Failures are collected, not shrunk, and reported together.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from mark.cluster import ClusterThread
from mark.core.config import (
    AdminConfig,
    ControlConfig,
    FleetConfig,
    FrontendConfig,
    FunctionsConfig,
    MarkConfig,
    ModelConfig,
)

pytestmark = pytest.mark.triton
REPO = Path(__file__).resolve().parents[1]

TOKEN = "fuzz-admin-token-0123456789"
CASE_TIMEOUT_S = 15.0  # a reply later than this is a hang (deadlines are 2-30 s)
# generated cases per operation and auth variant: 24 operations x (60 + 8 + 8) on the
# inference cluster, 10 admin operations x 30 (+ the v2 ones x 6) on the control cluster
WITH_TOKEN = 60
WITHOUT_TOKEN = 8
CONTROL_ADMIN = 30
CONTROL_V2 = 6
MIN_CASES = 1000
ALLOWED_5XX = {502, 503, 504}


@pytest.fixture(scope="module")
def clean_env() -> Iterator[None]:
    saved = {k: os.environ.pop(k) for k in ("MARK_ADMIN_TOKEN", "MARK_API_KEYS")
             if k in os.environ}
    yield
    os.environ.update(saved)


@pytest.fixture(scope="module")
def inference_cluster(tmp_path_factory: pytest.TempPathFactory,
                      clean_env: None) -> Iterator[ClusterThread]:
    cfg = MarkConfig(
        models=[ModelConfig(name="identity", kind="identity")],
        control=ControlConfig(enabled=False),
        fleet=FleetConfig(instances=1),
        frontend=FrontendConfig(port=0, workers=1, max_body_bytes=1 << 20),
        admin=AdminConfig(token=TOKEN),
        runtime_dir=tmp_path_factory.mktemp("fuzz-inference"),
    )
    c = ClusterThread(cfg)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def control_cluster(tmp_path_factory: pytest.TempPathFactory,
                    clean_env: None) -> Iterator[ClusterThread]:
    cfg = MarkConfig(
        models=[ModelConfig(name="base", kind="profiled", profile="inception-v3",
                            max_batch_size=16)],
        # instances exist only in memory (their URLs refuse connections: 502 when used);
        # health checks rare, so they are not replaced over and over
        fleet=FleetConfig(backend="fake", instances=1, launch_delay_s=0.0,
                          health_interval_s=3600.0),
        control=ControlConfig(interval_s=3600.0, types=["c5.xlarge"], min_instances=1),
        faas=FunctionsConfig(enabled=False),
        frontend=FrontendConfig(port=0, workers=1),
        admin=AdminConfig(token=TOKEN),
        runtime_dir=tmp_path_factory.mktemp("fuzz-control"),
    )
    c = ClusterThread(cfg)
    yield c
    c.stop()


@dataclass
class Tally:
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    by_operation: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def fail(self, what: str) -> None:
        if len(self.failures) < 30:
            self.failures.append(what)


def _describe(case: Any, resp: requests.Response | None, why: str) -> str:
    req = resp.request if resp is not None else None
    body = req.body if req is not None else case.body
    shown = repr(body)[:300] if body is not None else ""
    got = f"{resp.status_code} {resp.text[:300]!r}" if resp is not None else "no reply"
    url = req.url if req is not None else case.formatted_path
    return f"{why}: {case.method} {url} headers={dict(case.headers or {})} body={shown} -> {got}"


def _check(case: Any, resp: requests.Response, auth: str, tally: Tally) -> None:
    status = resp.status_code
    tally.statuses[status] += 1
    admin = case.path.startswith("/admin")
    if status >= 500 and status not in ALLOWED_5XX:
        tally.fail(_describe(case, resp, "5xx"))
        return
    if status >= 400:
        try:
            doc = resp.json()
        except ValueError:
            doc = None
        if not (isinstance(doc, dict) and isinstance(doc.get("error"), str) and doc["error"]):
            tally.fail(_describe(case, resp, 'an error without {"error": reason}'))
            return
    if admin and auth != "token" and status != 404:  # 404: the path did not route
        want = 401 if auth == "none" else 403
        if status != want:
            tally.fail(_describe(case, resp, f"admin route, {auth} token: not {want}"))


def _alive(url: str) -> bool:
    try:
        return requests.get(url + "/v2/health/live", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _strategy(op: Any, model: str) -> st.SearchStrategy[Any]:
    """Valid and broken cases of ``op`` (an operation without inputs has no broken ones),
    half of them, where the path names a model, for the model served (random names mostly
    stop at 404 before the body is read)."""
    pinned = {"path_parameters": {"model": model}} if "{model}" in op.path else None
    strategies = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for extra in ({}, pinned) if pinned else ({},):
            try:
                strategies.append(op.as_strategy(mode, **extra))
            except Exception:  # nothing to break here: no broken cases of it
                continue
    return st.one_of(strategies)


def _fuzz_operation(op: Any, strategy: st.SearchStrategy[Any], url: str,
                    headers: dict[str, str], examples: int, auth: str, tally: Tally) -> None:
    label = f"{op.method.upper()} {op.path}"

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def send(case: Any) -> None:
        case_headers = {k: v for k, v in (case.headers or {}).items()
                        if k.lower() != "authorization"}
        case.headers = {**case_headers, **headers}
        tally.cases += 1
        tally.by_operation[label] += 1
        try:
            resp = case.call(base_url=url, timeout=CASE_TIMEOUT_S)
        except requests.Timeout:
            tally.fail(_describe(case, None, f"no reply within {CASE_TIMEOUT_S} s"))
            return
        except requests.ConnectionError as exc:
            tally.fail(_describe(case, None, f"connection failed ({exc})"))
            return
        _check(case, resp, auth, tally)

    send()


def fuzz(url: str, tally: Tally, examples: int, auth: str, model: str,
         only: Any = lambda op: True) -> None:
    """Send ``examples`` generated cases of each operation that ``only`` keeps."""
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    headers = {"token": {"authorization": f"Bearer {TOKEN}"},
               "wrong": {"authorization": "Bearer not-the-token"},
               "none": {}}[auth]
    for result in schema.get_all_operations():
        op = result.ok()
        if not only(op):
            continue
        _fuzz_operation(op, _strategy(op, model), url, headers, examples, auth, tally)
        if not _alive(url):
            tally.fail(f"no health check reply after {op.method.upper()} {op.path} ({auth})")
            return


def _report(name: str, tally: Tally) -> None:
    print(f"\n{name}: {tally.cases} cases over {len(tally.by_operation)} operations; "
          f"statuses {dict(sorted(tally.statuses.items()))}")
    assert not tally.failures, f"{len(tally.failures)} bad replies:\n" + "\n".join(
        tally.failures)


TALLIES: dict[str, Tally] = {}


def test_inference_cluster_survives_fuzzing(inference_cluster: ClusterThread) -> None:
    url = inference_cluster.url
    tally = TALLIES.setdefault("inference", Tally())
    fuzz(url, tally, WITH_TOKEN, "token", "identity")
    fuzz(url, tally, WITHOUT_TOKEN, "none", "identity")
    fuzz(url, tally, WITHOUT_TOKEN, "wrong", "identity")
    _report("inference cluster", tally)
    assert _alive(url)
    # the model is still served: the fuzzing drained nothing and broke nothing
    doc = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                       "data": list(range(16))}]}
    r = requests.post(url + "/v2/models/identity/infer", json=doc, timeout=10)
    assert r.status_code == 200, r.text
    assert len(tally.by_operation) >= 24  # every documented operation was reached
    assert tally.statuses[200] > 0 and tally.statuses[400] > 0


def _hostile_bodies() -> list[tuple[str, bytes, dict[str, str], str]]:
    """(what, body, headers, words the 400 must contain): what the parser's property tests
    (test_fuzz_protocol.py) found, sent end to end."""
    ok = {"name": "INPUT0", "datatype": "FP32", "shape": [1, 16], "data": list(range(16))}
    good = json.dumps({"inputs": [ok]}).encode()
    gz = {"content-encoding": "gzip", "content-type": "application/json"}
    return [
        ("an output named by a list (was 500: unhashable)",
         json.dumps({"inputs": [ok], "outputs": [{"name": ["OUTPUT0"]}]}).encode(), {},
         "is not an output"),
        ("a second gzip member after the first (was forwarded unchecked)",
         gzip.compress(good) + gzip.compress(b"x" * 100_000), gz, "after the end of the gzip"),
        ("a header length with a sign (was read as 12)", good,
         {"inference-header-content-length": "+12"}, "ASCII digits"),
        ("a header length with an underscore (was read as 10)", good,
         {"inference-header-content-length": "1_0"}, "ASCII digits"),
        ("a 500 KB input name (was echoed whole)",
         json.dumps({"inputs": [{**ok, "name": "n" * 500_000}]}).encode(), {}, "long)"),
    ]


def test_what_the_parser_fuzzing_found_is_400_end_to_end(
        inference_cluster: ClusterThread) -> None:
    for what, body, headers, words in _hostile_bodies():
        r = requests.post(inference_cluster.url + "/v2/models/identity/infer", data=body,
                          headers=headers, timeout=10)
        assert r.status_code == 400, (what, r.status_code, r.text[:300])
        error = r.json()["error"]
        assert words in error and len(error) < 1000, (what, error[:300])


def test_control_cluster_admin_routes_survive_fuzzing(control_cluster: ClusterThread) -> None:
    url = control_cluster.url
    tally = TALLIES.setdefault("control", Tally())
    fuzz(url, tally, CONTROL_ADMIN, "token", "base",
         only=lambda op: op.path.startswith("/admin"))
    fuzz(url, tally, CONTROL_V2, "token", "base",
         only=lambda op: not op.path.startswith("/admin"))
    _report("control cluster", tally)
    assert _alive(url)
    # the registry was reached: registrations were refused with reasons (what schemathesis
    # makes of a free-form name is mostly not a valid one; see the test below for 201s)
    assert tally.statuses[400] > 0
    auth = {"authorization": f"Bearer {TOKEN}"}
    for path in ("/admin/models", "/admin/fleet", "/admin/cost", "/admin/decisions"):
        r = requests.get(url + path, headers=auth, timeout=10)
        assert r.status_code == 200, (path, r.text)


KNOWN_TYPES = ["c5.xlarge", "c5.2xlarge", "m5.large", "g4dn.xlarge"]
_floats = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from([0, -1, 1e-9, 1e308, 500, 99.9]))
_fields = {
    "kind": st.sampled_from(["minilm", "profiled", "identity", "bogus", ""]),
    # paths on the server too ("/dev/zero" once read until memory ran out: see
    # test_profile_paths_are_read_bounded, which tries it in a process with a memory cap)
    "profile": st.one_of(st.none(), st.sampled_from(["inception-v3", "minilm", "nope", "",
                                                     "../../etc/passwd", "/etc", "/proc/self/mem"])),
    "slo_latency_ms": _floats,
    "slo_percentile": _floats,
    "capacity_rps": _floats,
    "max_batch_size": st.integers(-5, 1 << 40),
    "max_queue_delay_us": st.integers(-5, 1 << 40),
    "instance_types": st.one_of(st.none(), st.lists(
        st.one_of(st.sampled_from(KNOWN_TYPES), st.text(max_size=12)), max_size=4)),
    "markets": st.one_of(st.none(), st.lists(
        st.sampled_from(["on_demand", "spot", "reserved", ""]), max_size=3)),
    "faas_memory_mb": st.one_of(st.none(), st.integers(-5, 1 << 20)),
    "torch_threads": st.integers(-1, 1 << 10),
    "dynamic_batching": st.one_of(st.booleans(), st.integers(0, 2)),
}


@st.composite
def _model_docs(draw: st.DrawFn) -> dict[str, Any]:
    """Registrations near a valid one: a valid name mostly, some fields drawn from values
    valid, extreme or wrong."""
    doc: dict[str, Any] = {"name": draw(st.one_of(
        st.from_regex(r"[a-z][a-z0-9_.-]{0,12}", fullmatch=True),
        st.text(max_size=70), st.sampled_from(["base", "a" * 65, "../x", "x/y"])))}
    doc["kind"] = draw(st.sampled_from(["profiled", "minilm"]))
    if doc["kind"] == "profiled":
        doc["profile"] = "inception-v3"
    for key in draw(st.lists(st.sampled_from(sorted(_fields)), max_size=4, unique=True)):
        doc[key] = draw(_fields[key])
    return doc


def test_control_cluster_registers_updates_and_deletes_fuzzed_models(
        control_cluster: ClusterThread) -> None:
    """Near-valid bodies for POST, PUT and DELETE /admin/models: models are registered for
    real (in-memory instances), changed and deleted; every refusal is a 400 or 409 with a
    reason, and the registry and the fleet answer afterwards."""
    url = control_cluster.url
    tally = TALLIES.setdefault("models", Tally())
    auth = {"authorization": f"Bearer {TOKEN}"}

    def call(method: str, path: str, body: Any = None) -> requests.Response | None:
        tally.cases += 1
        tally.by_operation[f"{method} {path.rsplit('/', 1)[0]}"] += 1
        try:
            return requests.request(method, url + path, json=body, headers=auth,
                                    timeout=CASE_TIMEOUT_S)
        except requests.RequestException as exc:
            tally.fail(f"{method} {path} {body!r}: {exc}")
            return None

    def judge(method: str, path: str, body: Any, r: requests.Response | None) -> None:
        if r is None:
            return
        tally.statuses[r.status_code] += 1
        ok = r.status_code in (200, 201, 202, 400, 404, 405, 409)  # 405: PUT /admin/models/
        if ok and r.status_code >= 400:
            try:
                doc = r.json()
            except ValueError:
                doc = None
            ok = isinstance(doc, dict) and isinstance(doc.get("error"), str)
        if not ok:
            tally.fail(f"{method} {path} {str(body)[:300]} -> {r.status_code} {r.text[:300]}")

    @settings(max_examples=120, deadline=None, derandomize=True, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(doc=_model_docs(), update=st.fixed_dictionaries({}, optional={
        k: v for k, v in _fields.items()}), delete=st.booleans())
    def scenario(doc: dict[str, Any], update: dict[str, Any], delete: bool) -> None:
        judge("POST", "/admin/models", doc, call("POST", "/admin/models", doc))
        name = requests.utils.quote(str(doc["name"]), safe="")
        path = f"/admin/models/{name}"
        judge("PUT", path, update, call("PUT", path, update))
        if delete:
            judge("DELETE", path, None, call("DELETE", path))

    scenario()
    _report("model registry", tally)
    assert tally.statuses[201] >= 10 and tally.statuses[202] >= 5, tally.statuses
    assert _alive(url)
    for path in ("/admin/models", "/admin/fleet", "/admin/cost", "/admin/decisions"):
        r = requests.get(url + path, headers=auth, timeout=10)
        assert r.status_code == 200, (path, r.text)


def test_profile_paths_are_read_bounded(control_cluster: ClusterThread, tmp_path: Path) -> None:
    """Found by the fuzzing above: a registration naming ``/dev/zero`` as its profile was
    read until the front end's memory ran out (a MemoryError, 500, or the OOM killer). A
    profile is now a regular file of bounded size: a device, a directory or a FIFO is a 400
    that says so. The loader is tried in a process with a 2 GiB memory cap first, so a
    regression fails this test rather than the machine."""
    fifo = tmp_path / "profile.fifo"
    os.mkfifo(fifo)
    probe = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "from mark.core.errors import ConfigError\n"
        "from mark.core.profiles import load_profile\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        load_profile(path)\n"
        "    except ConfigError as exc:\n"
        "        print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, "/dev/zero", "/etc", str(fifo)],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("is not a regular file") == 3, out.stdout
    # through the admin API they are not even read: outside admin.model_paths (none here)
    auth = {"authorization": f"Bearer {TOKEN}"}
    for path in ("/dev/zero", "/etc", str(fifo)):
        r = requests.post(control_cluster.url + "/admin/models", headers=auth, timeout=30,
                          json={"name": "zero", "kind": "profiled", "profile": path})
        assert r.status_code == 400, r.text
        assert "is outside the directories" in r.json()["error"], r.text


def test_at_least_a_thousand_cases_in_all() -> None:
    total = sum(t.cases for t in TALLIES.values())
    if len(TALLIES) < 2:
        pytest.skip("needs both fuzzing tests of this module")
    print(f"\nfuzzing: {total} cases in all")
    assert total >= MIN_CASES
