"""``GET /dashboard`` in headless Chromium against a running cluster with the control loop.

The page gets the admin token from its ``#token=`` fragment (and drops it from the URL), then
shows, from ``/admin/fleet`` and ``/metrics``: the instances ``/admin/fleet`` lists, the
arrival rate, the cost, and the latency percentiles against the SLO. A screenshot goes to the
test's tmp dir and to ``/tmp/dashboard.png``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

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
from tests.servers import warm_functions

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MODEL = "dash-incep"  # unique in the test process: series are told apart by model
TOKEN = "dashboard-test-token"
BODY = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                               "data": [1.0] * 16}]}).encode()

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterThread]:
    cfg = MarkConfig(
        models=[ModelConfig(name=MODEL, kind="profiled", profile="inception-v3",
                            max_batch_size=16, slo_latency_ms=500.0)],
        fleet=FleetConfig(instances=1, health_interval_s=0.5),
        control=ControlConfig(interval_s=3600.0, types=["c5.xlarge"], min_instances=1),
        faas=FunctionsConfig(enabled=True, port=0, concurrency=16, keep_alive_s=600.0),
        frontend=FrontendConfig(port=0, workers=1),
        admin=AdminConfig(token=TOKEN),
        runtime_dir=tmp_path_factory.mktemp("dashboard"),
    )
    c = ClusterThread(cfg, warm_start={MODEL: np.full(300, 4, dtype=np.int64)})
    try:
        yield c
    finally:
        c.stop()


class Load:
    """Bursts beyond the instance until one spills, then requests at a few per second in a
    thread, so the last 10 s always saw some.

    A burst is repeated (up to ``bursts`` times, a second apart) because a front end spills
    only once the control loop's plan (the instance's batch times, the model's FaaS tier)
    has reached it: on a loaded host the first burst can come before."""

    def __init__(self, url: str, every_s: float = 0.25, bursts: int = 30) -> None:
        self.url, self.every_s, self.bursts = url, every_s, bursts
        self.stop = threading.Event()
        self.statuses: list[int] = []
        self.backends: list[str] = []
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as s:
            async def one() -> None:
                async with s.post(f"{self.url}/v2/models/{MODEL}/infer", data=BODY) as r:
                    await r.read()
                    self.statuses.append(r.status)
                    self.backends.append(r.headers.get("x-mark-backend", ""))

            for _ in range(self.bursts):
                await asyncio.gather(*(one() for _ in range(24)))
                if "faas" in self.backends or self.stop.is_set():
                    break
                await asyncio.sleep(1.0)
            while not self.stop.is_set():
                await one()
                await asyncio.sleep(self.every_s)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def admin_fleet(url: str) -> list[dict[str, Any]]:
    req = urllib.request.Request(f"{url}/admin/fleet",
                                 headers={"authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_the_dashboard_shows_fleet_rates_cost_and_latency(cluster: ClusterThread,
                                                          tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    assert cluster.cluster.runtime is not None
    asyncio.run(warm_functions(cluster.cluster.runtime.url, MODEL, 16))  # a burst's spill finds them warm
    load = Load(cluster.url)
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1400,1500"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        fleet = admin_fleet(cluster.url)
        ids = {i["id"] for i in fleet}
        assert ids, "the cluster has no instance"
        driver.get(f"{cluster.url}/dashboard#token={TOKEN}")
        model_sel = f'[data-model="{MODEL}"]'

        def value(metric: str) -> float | None:
            raw = driver.execute_script(
                "const e = document.querySelector(arguments[0]);"
                " return e ? e.getAttribute('data-value') : null;",
                f'[data-metric="{metric}"]{model_sel}')
            return float(raw) if raw else None

        arrivals_seen: list[float] = []  # the rate covers the last 10 s: it may fall back
                                         # to 0 before the page has drawn enough points

        def shown(_: Any) -> bool:
            rows = driver.find_elements(By.CSS_SELECTOR, "#fleet-body tr[data-instance-id]")
            listed = {r.get_attribute("data-instance-id") for r in rows}
            cost = driver.find_element(By.ID, "cost-total").get_attribute("data-value")
            p = [value(q) for q in ("p50", "p98", "p99")]
            arrival = value("arrival_rps")
            if arrival:
                arrivals_seen.append(arrival)
            card = driver.find_elements(By.CSS_SELECTOR, f"section.model{model_sel}")
            points = int(card[0].get_attribute("data-points") or 0) if card else 0
            return (ids <= listed and bool(cost) and float(cost or 0) > 0 and points >= 5
                    and bool(arrivals_seen) and (value("spill_share") or 0) > 0
                    and all(x is not None and x > 0 for x in p))

        try:
            # the page re-renders every 2 s: an element read mid-render goes stale
            WebDriverWait(driver, 60, poll_frequency=0.5,
                          ignored_exceptions=(StaleElementReferenceException,)).until(shown)
        finally:
            shot = tmp_path / "dashboard.png"
            driver.save_screenshot(str(shot))
            shutil.copy(shot, "/tmp/dashboard.png")
        # what the page shows is what the service says
        # (read in one script: a re-render between reads cannot leave them stale)
        rows = driver.execute_script(
            "return [...document.querySelectorAll('#fleet-body tr[data-instance-id]')].map("
            "r => ({id: r.dataset.instanceId, market: r.dataset.market, state: r.dataset.state,"
            " text: r.innerText}))")
        by_id = {r["id"]: r for r in rows}
        for inst in fleet:
            row = by_id[inst["id"]]
            assert row["market"] == inst["market"]
            assert row["state"] in {"pending", "ready", "notice", "draining", "unhealthy"}
            assert inst["instance_type"] in row["text"]
        p50, p98, p99 = (value(q) for q in ("p50", "p98", "p99"))
        assert p50 is not None and p98 is not None and p99 is not None
        assert 100 <= p50 <= p98 <= p99  # ms; the model takes 132 ms at batch 1
        assert value("slo_ms") == 500.0
        assert value("slo_percentile") == 98.0
        assert value("capacity_rps") is not None and value("capacity_rps") > 0  # type: ignore[operator]
        assert value("forecast_rps") == pytest.approx(4.0, rel=0.5)
        assert "faas" in load.backends, "no burst spilled: the plan never reached the front end"
        spilled = value("spill_share")
        assert spilled is not None and 0 < spilled < 100  # % of replies served by FaaS
        per_hour = driver.find_element(By.ID, "cost-per-hour").get_attribute("data-value")
        assert per_hour and float(per_hour) >= 0.17  # one c5.xlarge on demand, at least
        # the token came from the fragment, stays in the tab, and left the address bar
        assert "token" not in driver.current_url
        assert driver.execute_script("return sessionStorage.getItem('mark.adminToken')") == TOKEN
        status = driver.find_element(By.ID, "status")
        assert "error" not in (status.get_attribute("class") or ""), status.text
        assert len(driver.find_elements(By.CSS_SELECTOR, "svg.rates path[data-series]")) >= 2
        assert driver.find_elements(By.CSS_SELECTOR, "svg.latency path[data-series='p99']")
    finally:
        driver.quit()
        load.close()
    assert load.statuses and set(load.statuses) == {200}, set(load.statuses)


def test_without_the_token_the_page_says_so(cluster: ClusterThread) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        driver.get(f"{cluster.url}/dashboard")
        WebDriverWait(driver, 20, poll_frequency=0.3).until(
            lambda d: "401" in d.find_element(By.ID, "status").text)
        assert "admin token" in driver.find_element(By.ID, "status").text
        # typed in, it is used from the next refresh on
        driver.find_element(By.ID, "token").send_keys(TOKEN + "\n")
        WebDriverWait(driver, 20, poll_frequency=0.3).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#fleet-body tr[data-instance-id]"))
    finally:
        driver.quit()
