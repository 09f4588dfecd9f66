"""Cost rules: what AWS charges for an instance lifetime and for Lambda invocations.

- EC2 (on-demand and spot, Linux): per second, with a 60-second minimum per instance
  lifetime. A lifetime of 0.4 s costs 60 s; 61.2 s costs 62 s (rounded up to the second).
- Lambda: duration rounded up to 1 ms, times the configured memory in GB (MB / 1024), times
  the price per GB-s, plus a price per request.

Pure functions of numbers; the catalogue supplies the prices.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from mark.core.catalogue import LambdaSpec


def billed_seconds(lifetime_s: float, minimum_s: float = 60.0, granularity_s: float = 1.0) -> float:
    """Seconds billed for one instance that ran ``lifetime_s`` (rounded up, minimum applied)."""
    if lifetime_s < 0:
        raise ValueError(f"lifetime_s must be >= 0, got {lifetime_s}")
    # tolerance so that 61.000000001 s from float arithmetic is not billed as 62 s
    units = math.ceil(lifetime_s / granularity_s - 1e-9)
    return max(minimum_s, units * granularity_s)


def instance_cost_usd(
    price_usd_per_h: float,
    lifetime_s: float,
    minimum_s: float = 60.0,
    granularity_s: float = 1.0,
) -> float:
    """Cost of one instance lifetime at ``price_usd_per_h`` (per second, 60 s minimum)."""
    return price_usd_per_h / 3600.0 * billed_seconds(lifetime_s, minimum_s, granularity_s)


def lambda_billed_ms(duration_ms: npt.ArrayLike, granularity_ms: float = 1.0) -> np.ndarray:
    """Billed milliseconds per invocation: rounded up to ``granularity_ms`` (at least one unit)."""
    d = np.asarray(duration_ms, dtype=np.float64)
    units = np.maximum(np.ceil(d / granularity_ms - 1e-9), 1.0)
    return np.asarray(units * granularity_ms)


def lambda_cost_usd(duration_ms: npt.ArrayLike, memory_mb: float, spec: LambdaSpec) -> float:
    """Cost of invocations with these durations (ms) at ``memory_mb`` (duration + requests)."""
    billed = lambda_billed_ms(duration_ms, spec.billing_granularity_ms)
    gb_s = float(billed.sum()) / 1000.0 * (memory_mb / 1024.0)
    return gb_s * spec.usd_per_gb_s + billed.size * spec.usd_per_request


def lambda_cost_per_invocation_usd(duration_s: float, memory_mb: float, spec: LambdaSpec) -> float:
    """Expected cost of one invocation lasting ``duration_s`` (planning helper)."""
    return lambda_cost_usd([duration_s * 1000.0], memory_mb, spec)
