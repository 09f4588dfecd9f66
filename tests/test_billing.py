"""Billing rules, exactly: EC2 per second with a 60 s minimum; Lambda per ms + per request."""

from __future__ import annotations

import pytest

from mark.core.billing import billed_seconds, instance_cost_usd, lambda_billed_ms, lambda_cost_usd
from mark.core.catalogue import load_catalogue


def test_sixty_second_minimum_and_per_second_rounding() -> None:
    assert billed_seconds(0.0) == 60
    assert billed_seconds(0.4) == 60
    assert billed_seconds(59.9) == 60
    assert billed_seconds(60.0) == 60
    assert billed_seconds(60.2) == 61
    assert billed_seconds(61.0) == 61
    assert billed_seconds(3600.0) == 3600
    assert billed_seconds(3600.000000001) == 3600  # float noise is not a second
    with pytest.raises(ValueError):
        billed_seconds(-1)


def test_instance_cost() -> None:
    assert instance_cost_usd(0.085, 3600) == pytest.approx(0.085)
    assert instance_cost_usd(0.085, 10) == pytest.approx(0.085 * 60 / 3600)
    assert instance_cost_usd(3.6, 90.5) == pytest.approx(3.6 * 91 / 3600)


def test_lambda_per_ms_and_per_request() -> None:
    spec = load_catalogue().lambda_
    assert list(lambda_billed_ms([0.2, 1.0, 1.2, 99.01])) == [1, 1, 2, 100]
    # 1000 invocations of 100 ms at 1024 MB = 100 GB-s
    cost = lambda_cost_usd([100.0] * 1000, 1024, spec)
    assert cost == pytest.approx(100 * 0.0000166667 + 1000 * 0.0000002)
    # 2048 MB doubles the duration part only
    cost2 = lambda_cost_usd([100.0] * 1000, 2048, spec)
    assert cost2 - 1000 * 0.0000002 == pytest.approx(2 * (cost - 1000 * 0.0000002))
    assert lambda_cost_usd([10.4], 1024, spec) == pytest.approx(
        11 / 1000 * 0.0000166667 + 0.0000002)
