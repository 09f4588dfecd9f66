"""Shared fixtures: real clusters (Triton processes + the Sanic front end) on loopback.

Clusters are started once per session (or module) and run on their own event loop in a
thread, so blocking clients such as ``tritonclient`` can talk to them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mark.cluster import ClusterThread
from mark.core.config import ControlConfig, FleetConfig, FrontendConfig, MarkConfig, ModelConfig

REPO = Path(__file__).resolve().parents[1]

MAIN_WEIGHTS = [1.0, 2.0, 3.0]
MAX_BODY = 1 << 20


@pytest.fixture(scope="session")
def main_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterThread]:
    """Three instances serving the real model and the tiny one, WRR weights 1:2:3."""
    cfg = MarkConfig(
        models=[ModelConfig(), ModelConfig(name="identity", kind="identity")],
        control=ControlConfig(enabled=False),
        fleet=FleetConfig(instances=3, weights=MAIN_WEIGHTS),
        frontend=FrontendConfig(port=0, max_body_bytes=MAX_BODY),
        runtime_dir=tmp_path_factory.mktemp("main-cluster"),
    )
    c = ClusterThread(cfg)
    yield c
    c.stop()


@pytest.fixture(scope="session")
def empty_frontend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterThread]:
    """A front end whose model has no instance at all."""
    cfg = MarkConfig(
        models=[ModelConfig(name="identity", kind="identity")],
        control=ControlConfig(enabled=False),
        fleet=FleetConfig(instances=0),
        frontend=FrontendConfig(port=0, workers=1),
        runtime_dir=tmp_path_factory.mktemp("empty"),
    )
    c = ClusterThread(cfg)
    yield c
    c.stop()
