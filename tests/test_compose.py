"""The docker-compose cluster (``docker-compose.yml``): the file is valid and wires what each
service needs, and each service's command, run outside Docker as the file says (hostnames of
the compose network mapped to loopback ports), starts and serves: Redis answers, the function
runtime invokes a function, the provisioner leads and publishes a fleet, and the front end
(several worker processes) serves an inference end to end through that fleet.

There is no Docker engine here: ``docker-compose config`` validates the file (Debian's 1.29; CI
installs it), and the image itself is checked only for what it copies.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3
import pytest
import redis
import requests
import yaml
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from bench.faults import alive, descendants
from mark.backends.local import free_port
from mark.core.config import StateConfig, load_config
from mark.core.state import make_state_store

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker-compose.yml"
MARK_SERVICES = ("faas", "frontend", "provisioner")
TOKEN = "compose-test-token"
BODY = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                    "data": list(range(16))}]}
MARK = Path(sys.executable).with_name("mark")


def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def config_mount(svc: dict[str, Any]) -> tuple[Path, str]:
    """The service's mounted configuration: (the file in the repository, its path inside)."""
    mounts = [v.split(":") for v in svc.get("volumes", []) if isinstance(v, str)]
    found = [(REPO / src, dst) for src, dst, *_ in mounts if dst.endswith((".yaml", ".toml"))]
    assert len(found) == 1, f"one configuration mount expected, got {svc.get('volumes')}"
    return found[0]


# ---- the file ---------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose is not installed (CI installs Debian's docker-compose)")
def test_docker_compose_config_accepts_the_file() -> None:
    """``docker-compose config`` validates the file against its schema and resolves it."""
    env = {**os.environ, "MARK_ADMIN_TOKEN": TOKEN}
    out = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    resolved = yaml.safe_load(out.stdout)
    services = resolved["services"]
    assert set(services) == {"redis", *MARK_SERVICES}
    assert [p["published"] for p in services["frontend"]["ports"]] == [8080]
    assert services["provisioner"]["network_mode"] == "service:frontend"
    for name in MARK_SERVICES:
        svc = services[name]
        assert svc["environment"]["MARK_ADMIN_TOKEN"] == TOKEN  # from the caller's environment
        assert svc["build"]["dockerfile"] == "deploy/docker/Dockerfile"
        assert Path(svc["build"]["context"]) == REPO
    # broken on purpose: the same validation refuses an unknown key
    bad = yaml.safe_load(COMPOSE.read_text())
    bad["services"]["frontend"]["replicaz"] = 2
    out = subprocess.run(["docker-compose", "-f", "-", "config", "-q"], cwd=REPO, env=env,
                         input=yaml.safe_dump(bad), capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "replicaz" in out.stderr


def test_services_are_wired_as_each_needs() -> None:
    doc = compose()
    services = doc["services"]
    assert set(services) == {"redis", *MARK_SERVICES}
    assert services["redis"]["image"].startswith("redis:7")
    commands = {n: services[n]["command"] for n in MARK_SERVICES}
    cfg_src, cfg_dst = config_mount(services["frontend"])
    assert cfg_src == REPO / "deploy/compose/mark.yaml" and cfg_src.is_file()
    for name in MARK_SERVICES:
        assert config_mount(services[name]) == (cfg_src, cfg_dst), name  # one configuration
        assert commands[name][0] == "mark" and commands[name][-2:] == ["--config", cfg_dst]
    assert commands["faas"][1:3] == ["faas", "--gunicorn"]
    assert commands["frontend"][1:3] == ["up", "--frontend-only"]
    assert commands["provisioner"][1] == "provisioner"

    cfg = load_config(cfg_src)
    assert cfg.state.backend == "redis" and urlsplit(cfg.state.url).hostname == "redis"
    assert cfg.fleet.backend == "local"
    assert isinstance(cfg.frontend.workers, int) and cfg.frontend.workers > 1
    assert cfg.frontend.host == "0.0.0.0" and cfg.faas.host == "0.0.0.0"
    assert services["frontend"]["ports"] == [f"{cfg.frontend.port}:{cfg.frontend.port}"]
    faas = urlsplit(cfg.faas.endpoint_url or "")
    assert (faas.hostname, faas.port) == ("faas", cfg.faas.port)
    assert str(cfg.faas.port) in services["faas"]["expose"]
    # the provisioner's admin API and Triton instances listen on its loopback: the front end
    # must share its network namespace to reach them
    assert services["provisioner"]["network_mode"] == "service:frontend"
    assert "ports" not in services["provisioner"]
    assert all(m.kind in ("profiled", "identity") for m in cfg.models)  # cheap to run anywhere

    deps = {n: set(services[n].get("depends_on", {})) for n in services}
    assert deps["frontend"] >= {"redis", "faas"} and deps["provisioner"] >= {"redis", "faas"}
    for name in ("redis", "faas", "frontend"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name


def test_the_image_copies_every_package() -> None:
    """The Dockerfile copies each package pyproject.toml installs (the build would otherwise
    install a mark without it) and the .dockerignore keeps nothing it copies out."""
    dockerfile = (REPO / "deploy/docker/Dockerfile").read_text()
    build = compose()["services"]["frontend"]["build"]
    assert (REPO / build["context"] / build["dockerfile"]).read_text() == dockerfile
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    assert set(packages) <= copied, f"{sorted(set(packages) - copied)} not copied"
    assert {"pyproject.toml", "deploy/compose/mark.yaml"} <= copied
    assert "torch==2.13.0+cpu" in dockerfile
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert ".venv" in ignored and ".git" in ignored
    assert not (ignored & copied), f"{sorted(ignored & copied)} are both copied and ignored"


# ---- each service's command, outside Docker ---------------------------------------------------

def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}``."""
    def one(m: re.Match[str]) -> str:
        name, op, default = m.group(1), m.group(2), m.group(3) or ""
        got = env.get(name)
        if got is None or (op == ":-" and got == ""):
            return default
        return got
    return re.sub(r"\$\{(\w+)(:?-)?([^}]*)\}", one, value)


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    family: set[int] = field(default_factory=set)  # every process it started, seen so far

    def watch(self) -> None:
        self.family |= descendants(self.proc.pid)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@dataclass
class Cluster:
    ports: dict[str, int]   # service -> its loopback port here
    cfg: dict[str, Any]     # the compose configuration, as the test localised it
    services: dict[str, Service]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"


def localise(cfg: dict[str, Any], hosts: dict[str, tuple[int, int]], ports: dict[str, int],
             runtime_dir: Path) -> dict[str, Any]:
    """The compose configuration for processes on this host. ``hosts``: service -> (its port
    inside the compose network, its loopback port here); a URL naming a service goes to
    loopback, on the port here only if it names the service's port (else it stays wrong, as it
    would be in compose). Listeners bind loopback on the test's ports."""
    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, str) and "://" in v and urlsplit(v).hostname in hosts:
            parts = urlsplit(v)
            inside, here = hosts[parts.hostname or ""]
            port = here if parts.port == inside else parts.port
            return urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
        return v

    out: dict[str, Any] = walk(cfg)
    out["frontend"] = {**out["frontend"], "host": "127.0.0.1", "port": ports["frontend"]}
    out["faas"] = {**out["faas"], "host": "127.0.0.1", "port": ports["faas"]}
    out["state"] = {**out["state"], "prefix": f"compose-test-{os.getpid()}:"}
    out["runtime_dir"] = str(runtime_dir)
    return out


def wait_for(what: str, pred: Any, services: dict[str, Service], timeout_s: float = 60.0) -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        for svc in services.values():
            svc.watch()
            assert svc.proc.poll() is None, f"{svc.name} exited:\n{svc.output()}"
        try:
            got = pred()
        except (requests.RequestException, redis.RedisError, BotoCoreError, OSError):
            got = None
        if got:
            return got
        time.sleep(0.2)
    logs = "\n".join(f"--- {s.name}\n{s.output()}" for s in services.values())
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def start_order(services: dict[str, Any]) -> list[str]:
    """Services after those they depend on (compose's start order)."""
    order: list[str] = []

    def visit(name: str) -> None:
        if name not in order:
            for dep in services[name].get("depends_on", {}):
                visit(dep)
            order.append(name)
    for name in services:
        visit(name)
    return order


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (CI installs it)")
    tmp = tmp_path_factory.mktemp("compose")
    doc = compose()
    specs = doc["services"]
    cfg_src, cfg_dst = config_mount(specs["frontend"])
    cfg_doc = yaml.safe_load(cfg_src.read_text())
    ports = {"redis": free_port(), "faas": free_port(), "frontend": free_port()}
    # the ports the services listen on inside the compose network: Redis's default, and the
    # port the faas service exposes
    hosts = {"redis": (6379, ports["redis"]),
             "faas": (int(specs["faas"]["expose"][0]), ports["faas"])}
    shell_env = {**os.environ, "MARK_ADMIN_TOKEN": TOKEN, "MARK_API_KEYS": ""}
    services: dict[str, Service] = {}
    localised: dict[str, Any] = {}
    try:
        for name in start_order(specs):
            spec = specs[name]
            log = tmp / f"{name}.log"
            if name == "redis":  # the image's redis-server, on a loopback port of ours
                argv = [*spec["command"], "--port", str(ports["redis"]), "--bind", "127.0.0.1",
                        "--dir", str(tmp)]
                env = dict(os.environ)
            else:
                localised = localise(cfg_doc, hosts, ports, tmp / f"runtime-{name}")
                cfg_path = tmp / f"{name}.yaml"
                cfg_path.write_text(yaml.safe_dump(localised))
                argv = [str(MARK) if a == "mark" else str(cfg_path) if a == cfg_dst else a
                        for a in spec["command"]]
                env = {**os.environ, **{k: interpolate(str(v), shell_env)
                                        for k, v in spec.get("environment", {}).items()}}
            with log.open("wb") as out:
                proc = subprocess.Popen(argv, cwd=tmp, env=env, stdout=out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
            services[name] = Service(name, proc, log)
            if name == "redis":
                client = redis.Redis(port=ports["redis"])
                wait_for("redis", client.ping, services, 10)
        yield Cluster(ports, localised, services)
    finally:
        stop_all(services)


def stop_all(services: dict[str, Service]) -> None:
    """SIGTERM in reverse start order (as ``docker-compose down``), then whatever is left."""
    for svc in reversed(list(services.values())):
        svc.watch()
        if svc.proc.poll() is None:
            svc.proc.send_signal(signal.SIGTERM)
            try:
                svc.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                svc.proc.kill()
                svc.proc.wait()
    deadline = time.monotonic() + 10
    left = {p for s in services.values() for p in s.family if alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {p for p in left if alive(p)}
    for pid in left:
        os.kill(pid, signal.SIGKILL)


def test_each_service_starts_and_serves(cluster: Cluster) -> None:
    services = cluster.services
    # redis: answers
    assert redis.Redis(port=cluster.ports["redis"]).ping()

    # faas (gunicorn): the model's function answers an invocation
    faas_url = cluster.url("faas")
    lam = boto3.client("lambda", endpoint_url=faas_url, region_name="us-east-1",
                       aws_access_key_id="x", aws_secret_access_key="x",
                       config=Config(retries={"max_attempts": 0}, read_timeout=30))
    model = cluster.cfg["models"][0]["name"]
    body = json.dumps(BODY).encode()
    event = {"model": model, "requests": [{"body_b64": base64.b64encode(body).decode(),
                                           "headers": {"content-type": "application/json"}}]}
    resp = wait_for("an invocation of the faas service", lambda: lam.invoke(
        FunctionName=f"{cluster.cfg['faas'].get('function_prefix', 'mark-')}{model}",
        Payload=json.dumps(event)), services)
    assert resp["StatusCode"] == 200 and "FunctionError" not in resp
    [answer] = json.loads(resp["Payload"].read())["responses"]
    assert answer["status"] == 200, answer
    assert json.loads(base64.b64decode(answer["body_b64"]))["model_name"] == model
    # warm the function's sandboxes, as a running service's are: a cold start outlasts a
    # spilled request's budget on a loaded test host (the runtime's own tests cover them)
    fn_url = (f"{faas_url}/2015-03-31/functions/"
              f"{cluster.cfg['faas'].get('function_prefix', 'mark-')}{model}/invocations")
    warm = int(cluster.cfg["faas"].get("concurrency", 16))
    with ThreadPoolExecutor(warm) as pool:
        assert all(r.status_code == 200 for r in pool.map(lambda _: requests.post(
            fn_url, json={"model": model, "requests": []}, timeout=60), range(warm)))

    # provisioner: leads the store and publishes a fleet with a ready instance, the faas
    # service as its spill target and its admin API
    state = StateConfig.model_validate(cluster.cfg["state"])

    async def read() -> tuple[str | None, dict[str, Any] | None]:
        store = make_state_store(state)
        await store.start()
        try:
            return await store.leader(), await store.get_fleet()
        finally:
            await store.close()

    def published() -> dict[str, Any] | None:
        leader, snap = asyncio.run(read())
        ready = [i for i in (snap or {}).get("instances", []) if i["state"] == "ready"]
        return snap if leader and ready else None

    snap = wait_for("the provisioner's fleet in Redis", published, services, 90)
    assert snap["faas_url"] == faas_url
    assert snap["admin_url"].startswith("http://127.0.0.1:")
    ids = {i["id"] for i in snap["instances"]}

    # frontend: live, with its worker processes, serving inference through the fleet
    front = cluster.url("frontend")
    wait_for("the front end", lambda: requests.get(front + "/v2/health/live",
                                                   timeout=5).status_code == 200, services)
    workers = cluster.cfg["frontend"]["workers"]
    wait_for(f"{workers - 1} front-end worker processes", lambda: sum(
        b"frontend.worker" in Path(f"/proc/{p}/cmdline").read_bytes()
        for p in descendants(services["frontend"].proc.pid)) == workers - 1, services)

    def infer() -> requests.Response | None:
        r = requests.post(f"{front}/v2/models/{model}/infer", json=BODY, timeout=30)
        return r if r.status_code == 200 and r.headers["x-mark-backend"] == "iaas" else None

    function = f"faas:{cluster.cfg['faas'].get('function_prefix', 'mark-')}{model}"
    first = wait_for("an inference through the provisioner's fleet", infer, services)
    # a burst: more than the fleet serves within the SLO, so the front ends spill some to the
    # faas service (the endpoint the provisioner published), the rest go to the fleet
    with ThreadPoolExecutor(32) as pool:
        burst = list(pool.map(lambda _: requests.post(f"{front}/v2/models/{model}/infer",
                                                      json=BODY, timeout=30), range(96)))
    for r in [first, *burst]:
        assert r.status_code == 200, r.text
        assert (r.headers["x-mark-backend"], r.headers["x-mark-instance"] in ids) in {
            ("iaas", True), ("faas", False)}, dict(r.headers)
        if r.headers["x-mark-backend"] == "faas":
            assert r.headers["x-mark-instance"] == function
        [out] = r.json()["outputs"]
        assert out["name"] == "OUTPUT0" and out["data"] == BODY["inputs"][0]["data"]
    backends = Counter(r.headers["x-mark-backend"] for r in burst)
    assert backends["faas"] > 0 and backends["iaas"] > 0, backends
    # the admin API: MARK_ADMIN_TOKEN from the environment guards it (loopback included),
    # and the front end forwards it to the provisioner's
    assert requests.get(front + "/admin/fleet", timeout=10).status_code == 401
    fleet = requests.get(front + "/admin/fleet", timeout=10,
                         headers={"authorization": f"Bearer {TOKEN}"}).json()
    assert {i["id"] for i in fleet} >= ids

    # the file's healthchecks, run here against the same services
    specs = compose()["services"]
    inside = load_config(config_mount(specs["faas"])[0])
    for name, port in (("faas", inside.faas.port), ("frontend", inside.frontend.port)):
        check = [sys.executable if a == "python" else
                 a.replace(f"127.0.0.1:{port}/", f"127.0.0.1:{cluster.ports[name]}/")
                 for a in specs[name]["healthcheck"]["test"][1:]]
        assert subprocess.run(check, timeout=30).returncode == 0, f"{name}: {check}"

    # stopped as compose stops them: each exits on SIGTERM and leaves no process behind
    for svc in services.values():
        svc.watch()
    family = {p for s in services.values() for p in s.family}
    assert len(family) >= workers  # the workers, Triton, the gunicorn worker
    for svc in reversed(list(services.values())):
        svc.proc.send_signal(signal.SIGTERM)
        code = svc.proc.wait(timeout=30)
        assert code in (0, -signal.SIGTERM), f"{svc.name} exited {code}:\n{svc.output()}"
    end = time.monotonic() + 15
    while any(alive(p) for p in family) and time.monotonic() < end:
        time.sleep(0.1)
    assert not [p for p in family if alive(p)], "processes left behind"

