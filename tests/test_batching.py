"""Batching policy: used only where it keeps the SLO and beats one-by-one service."""

from __future__ import annotations

import numpy as np
import pytest

from mark.core.catalogue import load_catalogue
from mark.core.profiles import load_profile
from provisioner import BatchConfig, PolicyContext, Slo, capacity_rps, default_serving_plan, latency_quantile
from provisioner.batching import candidate_batches, choose_batching


def table(times_ms: list[float]) -> np.ndarray:
    return np.array([0.0, *times_ms]) / 1000.0


def test_batching_chosen_where_it_pays() -> None:
    svc = table([15.0 + 27.0 / 7 * (b - 1) for b in range(1, 9)])  # MiniLM-like, c5.large
    cfg, cap = choose_batching(svc, Slo(200, 98), 0.2)
    assert cfg.max_batch == 8
    assert cap > 1.5 * capacity_rps(svc, BatchConfig(1), 0.2, 98)


def test_no_batching_when_batches_cost_linear_time() -> None:
    svc = table([10.0 * b for b in range(1, 17)])  # a batch of b takes b times as long
    cfg, _ = choose_batching(svc, Slo(200, 98), 0.2)
    assert cfg == BatchConfig(1, 0.0)


def test_batch_sizes_that_break_the_slo_are_not_used() -> None:
    svc = table([20.0 + 10.0 * (b - 1) for b in range(1, 33)])  # b=32 takes 330 ms
    cfg, cap = choose_batching(svc, Slo(200, 98), 0.2)
    assert cfg.max_batch < 32 and svc[cfg.max_batch] <= 0.2
    assert latency_quantile(svc, cfg, cap, 98) <= 0.2 + 1e-9


def test_capacity_is_the_largest_rate_meeting_the_percentile() -> None:
    svc = table([10.0])
    cap = capacity_rps(svc, BatchConfig(1), 0.05, 98)
    assert latency_quantile(svc, BatchConfig(1), cap, 98) <= 0.05
    assert latency_quantile(svc, BatchConfig(1), cap * 1.03, 98) > 0.05
    assert capacity_rps(table([300.0]), BatchConfig(1), 0.2, 98) == 0.0  # infeasible type


def test_gpu_types_batch_and_serving_plan_is_complete() -> None:
    ctx = PolicyContext(load_catalogue(), load_profile("minilm"), Slo(200, 98))
    plan = default_serving_plan(ctx)
    assert plan.types["g4dn.xlarge"].batch.max_batch > 1
    assert plan.types["g4dn.xlarge"].capacity_rps > 5 * plan.types["c5.large"].capacity_rps
    for ts in plan.types.values():
        # the SLO budget less a spread margin (service times vary, the profile's service_cv)
        assert ts.capacity_rps > 0 and 0.16 < ts.wait_budget_s < 0.2
    assert candidate_batches(12) == [1, 2, 4, 8, 12]


def test_faas_batches_respect_the_payload_limit_and_slo() -> None:
    from provisioner.faas_batching import choose_faas_config, expected_batch

    base = PolicyContext(load_catalogue(), load_profile("minilm"), Slo(200, 98))
    big = choose_faas_config(base, rate_rps=500.0)
    assert big.batch >= 8  # a busy stream is batched
    one = choose_faas_config(base, rate_rps=500.0, batches=(1,), timeouts_s=(0.0,))
    assert big.cost_per_request_usd < one.cost_per_request_usd
    heavy = PolicyContext(load_catalogue(), load_profile("minilm"), Slo(200, 98),
                          request_bytes=1_000_000)
    assert choose_faas_config(heavy, rate_rps=500.0).batch <= 6
    lam = load_profile("minilm").lambda_
    assert lam is not None
    cfg = choose_faas_config(base, rate_rps=5.0)
    assert cfg.timeout_s + lam.service_s(cfg.memory_mb, cfg.batch, 1769, 6) <= 0.2
    assert expected_batch(0.0, 8, 0.1) == 1.0
    assert expected_batch(1e6, 8, 0.1) == pytest.approx(8.0)
