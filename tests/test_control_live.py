"""The control loop live on loopback: real Triton processes serving the ``profiled`` model
(Inception-v3's service times on c5.xlarge), two front-end processes, load through HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from mark.cluster import ClusterThread
from mark.core.config import (
    ControlConfig,
    FleetConfig,
    FrontendConfig,
    FunctionsConfig,
    MarkConfig,
    ModelConfig,
)
from mark.loadgen import LoadClient

MODEL = "incep"
HOLD_S = 8.0
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterThread]:
    cfg = MarkConfig(
        models=[ModelConfig(name=MODEL, kind="profiled", profile="inception-v3",
                            max_batch_size=16)],
        fleet=FleetConfig(instances=1, launch_delay_s=2.0, health_interval_s=0.5,
                          spot_notice_s=30.0, spot_interruption_scale=0.0),
        control=ControlConfig(
            interval_s=2.0, spot=True, types=["c5.xlarge"],
            policy_options={"hold_s": HOLD_S, "horizon_s": 60.0, "forecast": "recent-peak",
                            "forecast_kw": {"window_s": 20, "smooth_s": 5}},
        ),
        # a generous deadline: what this test counts is requests lost, not slow ones
        frontend=FrontendConfig(port=0, workers=2, attempt_timeout_slo_factor=60.0),
        faas=FunctionsConfig(enabled=False),  # the loop as issue 17 left it: no spill
        runtime_dir=tmp_path_factory.mktemp("control-live"),
    )
    c = ClusterThread(cfg)
    try:
        yield c
    finally:
        c.stop()


async def admin(session: aiohttp.ClientSession, url: str, method: str = "GET") -> Any:
    async with session.request(method, url) as r:
        return r.status, await r.json()


def ready_capacity(fleet: list[dict[str, Any]]) -> float:
    return sum(i["weight"] for i in fleet if i["state"] in ("ready", "notice"))


def test_admin_routes_refuse_bad_targets_with_clear_errors(cluster: ClusterThread) -> None:
    async def run() -> None:
        async with aiohttp.ClientSession() as s:
            status, body = await admin(s, f"{cluster.url}/admin/instances/nope/drain", "POST")
            assert status == 404 and "known ids" in body["error"]
            _, fleet = await admin(s, f"{cluster.url}/admin/fleet")
            od = next(i for i in fleet if i["market"] == "on_demand")  # the starting one
            status, body = await admin(
                s, f"{cluster.url}/admin/instances/{od['id']}/notice", "POST")
            assert status == 409 and "on_demand" in body["error"]
            status, body = await admin(s, f"{cluster.url}/admin/decisions?since=soon")
            assert status == 400 and "since" in body["error"]
            status, cost = await admin(s, f"{cluster.url}/admin/cost")
            assert status == 200 and set(cost) == {"total", "on_demand", "spot", "faas"}

    for _ in range(4):  # two processes share the port: reach both (one proxies)
        asyncio.run(run())


def test_the_fleet_follows_a_load_step_a_notice_and_the_fall(cluster: ClusterThread) -> None:
    url = cluster.url

    async def run() -> dict[str, Any]:
        out: dict[str, Any] = {"timeline": []}
        async with aiohttp.ClientSession() as s:
            _, fleet0 = await admin(s, f"{url}/admin/fleet")
            start_cap = ready_capacity(fleet0)
            assert len(fleet0) == 1 and start_cap > 0
            out["start_cap"] = start_cap
            rate = 3.0 * start_cap
            step_s = 45.0
            rng = np.random.default_rng(1)
            arrivals = np.sort(rng.uniform(0.0, step_s, rng.poisson(rate * step_s)))
            t0 = time.monotonic()

            async def watch() -> None:
                noticed = False
                while True:
                    _, fleet = await admin(s, f"{url}/admin/fleet")
                    t = time.monotonic() - t0
                    out["timeline"].append((t, ready_capacity(fleet), fleet))
                    spot = [i for i in fleet if i["market"] == "spot" and i["state"] == "ready"]
                    if not noticed and t > 15.0 and spot:
                        status, body = await admin(
                            s, f"{url}/admin/instances/{spot[0]['id']}/notice", "POST")
                        assert status == 202, body
                        out["noticed"], out["noticed_at"] = spot[0]["id"], t
                        noticed = True
                    await asyncio.sleep(0.5)

            watcher = asyncio.create_task(watch())
            async with LoadClient(url, MODEL, timeout_s=60.0) as client:
                c0 = await client.cost_usd()
                out["load"] = (await client.open_loop(arrivals)).to_json()
                out["step_end"] = time.monotonic() - t0
                # the fall: no load; capacity must come back down after the hold
                deadline = time.monotonic() + 90.0
                while time.monotonic() < deadline:
                    await asyncio.sleep(1.0)
                    if out["timeline"][-1][1] <= start_cap + 1e-9:
                        break
                c1 = await client.cost_usd()
            watcher.cancel()
            out["cost"] = (c0, c1)
            _, out["decisions"] = await admin(s, f"{url}/admin/decisions?since=0")
        return out

    res = asyncio.run(run())
    load = res["load"]
    assert load["lost"] == 0 and load["errors"] == 0, load
    start_cap = res["start_cap"]
    during = [c for t, c, _ in res["timeline"] if t <= res["step_end"]]
    assert max(during) >= 2.0 * start_cap, (max(during), start_cap)
    after = [(t, c) for t, c, _ in res["timeline"] if t > res["step_end"]]
    assert after[-1][1] < max(during), "capacity did not come back down once the load stopped"
    # not before the hold: the plan still needed the capacity right after the load ended
    assert all(c >= after[0][1] for t, c in after if t < res["step_end"] + HOLD_S / 2)

    # the notice: that instance drained and left; a replacement was launched after it
    assert "noticed" in res, "no spot instance was launched to be noticed"
    victim, noticed_at = res["noticed"], res["noticed_at"]
    later = [fleet for t, _, fleet in res["timeline"] if t > noticed_at]
    assert any(victim not in {i["id"] for i in f} for f in later), "the noticed one never left"
    before_ids = {i["id"] for t, _, f in res["timeline"] if t <= noticed_at for i in f}
    assert any(i["id"] not in before_ids for f in later for i in f), "no replacement launched"
    events = [e for d in res["decisions"] for e in d["events"]]
    kinds = [e["event"] for e in events if e.get("instance") == victim]
    assert "notice" in kinds and "draining" in kinds and "terminated" in kinds

    # decisions carry the step's forecast and capacity by market; counts reached the loop
    # from both front-end processes (the forecast saw the whole load, not half of it)
    peak_forecast = max(d["forecast_rps"] or 0.0 for d in res["decisions"])
    assert peak_forecast >= 0.8 * 3.0 * start_cap
    assert all({"on_demand", "spot"} == set(d["capacity_rps"]) for d in res["decisions"])
    c0, c1 = res["cost"]
    assert c0 is not None and c1 is not None and c1 > c0


def test_mark_load_reports_the_cost_of_the_run(cluster: ClusterThread, tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    subprocess.run([sys.executable, "-m", "mark", "load", "--url", cluster.url, "--model",
                    MODEL, "--rate", "4", "--duration", "3", "--json", str(out)],
                   check=True, cwd=REPO, capture_output=True, timeout=120)
    doc = json.loads(out.read_text())
    assert doc["lost"] == 0 and doc["cost_usd"] is not None and doc["cost_usd"] > 0
