"""The per-request hot path against queueing theory, and the event core's determinism."""

from __future__ import annotations

import numpy as np
import pytest

from mark.sim.core import EmptySchedule, Environment
from provisioner import BatchConfig
from provisioner.capacity import single_instance_latencies


@pytest.mark.parametrize("rho", [0.5, 0.7, 0.85])
def test_single_instance_without_batching_matches_md1(rho: float) -> None:
    s = 0.010
    svc = np.array([0.0, s])
    lat = single_instance_latencies(svc, BatchConfig(1, 0.0), rho / s, n=400_000, seed=7)
    wait = lat.mean() - s
    pk = rho * s / (2 * (1 - rho))  # Pollaczek-Khinchine, deterministic service
    assert wait == pytest.approx(pk, rel=0.05)
    assert lat.min() == pytest.approx(s)


def test_batching_raises_throughput_over_one_by_one() -> None:
    # a batch of b takes 5 + 1.25 b ms: at 300 req/s one-by-one (6.25 ms each) saturates
    svc = np.array([0.0] + [0.005 + 0.00125 * b for b in range(1, 9)])
    one = single_instance_latencies(svc, BatchConfig(1, 0.0), 300.0, 50_000, 1)
    many = single_instance_latencies(svc, BatchConfig(8, 0.0), 300.0, 50_000, 1)
    assert np.percentile(one, 99) > 1.0  # unstable queue
    assert np.percentile(many, 99) < 0.05


def test_queue_delay_holds_a_lone_request() -> None:
    svc = np.array([0.0, 0.010, 0.012, 0.014, 0.016])
    lat = single_instance_latencies(svc, BatchConfig(4, 0.050), 0.5, 2_000, 3)
    # at 0.5 req/s nearly every batch is a single request that waits the full delay
    assert np.median(lat) == pytest.approx(0.060, abs=1e-9)


def test_event_core_orders_by_time_priority_then_schedule_order() -> None:
    env = Environment()
    log: list[tuple[float, str]] = []
    env.schedule(2.0, lambda: log.append((env.now, "b")))
    env.schedule(1.0, lambda: log.append((env.now, "a")))
    env.schedule(2.0, lambda: log.append((env.now, "c")))
    env.schedule(2.0, lambda: log.append((env.now, "urgent")), priority=0)
    ev = env.schedule(1.5, lambda: log.append((env.now, "cancelled")))
    env.cancel(ev)
    env.run()
    assert log == [(1.0, "a"), (2.0, "urgent"), (2.0, "b"), (2.0, "c")]
    with pytest.raises(EmptySchedule):
        env.step()
    with pytest.raises(ValueError):
        env.schedule(1.0, lambda: None)
    env.run(until_s=5.0)
    assert env.now == 5.0
