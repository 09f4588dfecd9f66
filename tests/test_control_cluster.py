"""The cluster's control plane with the in-memory backend: health replacement, the floor,
and the admin API's loopback rule (no processes: fast)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from frontend.admin import Forbidden, _loopback_only
from mark.backends import FakeBackend
from mark.cluster import LocalCluster
from mark.core.config import (
    ControlConfig,
    FleetConfig,
    FrontendConfig,
    FunctionsConfig,
    MarkConfig,
    ModelConfig,
)


def config(tmp_path: Any, **control: Any) -> MarkConfig:
    return MarkConfig(
        models=[ModelConfig(name="identity", kind="identity", profile="inception-v3")],
        fleet=FleetConfig(backend="fake", instances=1, launch_delay_s=0.05,
                          health_interval_s=0.05),
        control=ControlConfig(interval_s=0.5, types=["c5.xlarge"], health_failures=3,
                              **control),
        frontend=FrontendConfig(port=0, workers=1),
        faas=FunctionsConfig(enabled=False),
        runtime_dir=tmp_path,
    )


async def test_an_instance_failing_health_checks_is_replaced(tmp_path: Any) -> None:
    # fake instances live at unreachable urls: every health check fails
    cluster = LocalCluster(config(tmp_path))
    await cluster.start()
    try:
        assert isinstance(cluster.backend, FakeBackend) and cluster.control is not None
        first = cluster.backend.launched[0]
        for _ in range(100):
            await asyncio.sleep(0.05)
            if first in cluster.backend.terminated:
                break
        assert first in cluster.backend.terminated, "the failing instance was not replaced"
        second = cluster.backend.instances[cluster.backend.launched[1]]
        assert second.instance_type == cluster.backend.instances[first].instance_type
        events = [e for mc in cluster.control.models.values() for e in mc.events]
        events += [e for d in cluster.control.decisions for e in d["events"]]
        assert any(e["event"] == "replacing" and e["instance"] == first
                   and "3 consecutive failed health checks" in e["reason"] for e in events)
    finally:
        await cluster.stop()


async def test_the_floor_keeps_an_instance_when_the_plan_wants_none(tmp_path: Any) -> None:
    cluster = LocalCluster(config(tmp_path, policy_options={"hold_s": 0.5}))
    await cluster.start()
    try:
        assert cluster.control is not None
        await asyncio.sleep(2.5)  # no load at all: the plan holds no instance
        plans = [d["info"].get("planned_instances") for d in cluster.control.decisions]
        assert plans and plans[-1] == 0.0
        live = [i for i in cluster.fleet.instances.values() if i.state.value != "terminated"]
        assert len(live) >= 1  # control.min_instances = 1
    finally:
        await cluster.stop()


def test_the_admin_api_answers_only_loopback_clients() -> None:
    _loopback_only(SimpleNamespace(ip="127.0.0.1"))  # type: ignore[arg-type]
    _loopback_only(SimpleNamespace(ip="::1"))  # type: ignore[arg-type]
    for ip in ("10.1.2.3", "192.168.0.7", "", "nonsense"):
        with pytest.raises(Forbidden, match="loopback"):
            _loopback_only(SimpleNamespace(ip=ip))  # type: ignore[arg-type]
