"""Capacity of an instance type: the largest Poisson arrival rate (requests/s) at which
queueing + service under its batching settings still meets the SLO percentile.

Computed by bisection on the rate, evaluating each rate with the simulator's own per-request
kernel on a seeded Poisson stream (so planning and simulation agree by construction). No
spill is applied while measuring. Results are cached per (service table, settings, SLO).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from mark.core import queueing
from provisioner.records import BatchConfig

N_REQUESTS = 20_000
SEED = 20190710  # MArk's ATC'19 presentation day: any fixed seed will do


def latency_quantile(
    svc_s: np.ndarray, batch: BatchConfig, rate_rps: float, q: float, n: int = N_REQUESTS,
    seed: int = SEED,
) -> float:
    """The ``q``-th percentile latency (s) of one instance under Poisson(``rate_rps``)."""
    lat = single_instance_latencies(svc_s, batch, rate_rps, n, seed)
    return float(np.percentile(lat, q))


def single_instance_latencies(
    svc_s: np.ndarray, batch: BatchConfig, rate_rps: float, n: int, seed: int
) -> np.ndarray:
    """Per-request latencies (s) of one instance without spill, Poisson arrivals."""
    rng = np.random.default_rng(seed)
    arr = np.cumsum(rng.exponential(1.0 / rate_rps, size=n))
    mb = min(batch.max_batch, svc_s.shape[0] - 1)
    svc = np.ascontiguousarray(svc_s[None, : mb + 1], dtype=np.float64)
    fstate = np.zeros((1, queueing.N_FSTATE))
    istate = np.zeros((1, queueing.N_ISTATE), dtype=np.int64)
    done = np.zeros(n + 1)
    size = np.zeros(n + 1, dtype=np.int32)
    bid = np.empty(n, dtype=np.int64)
    nb = queueing.serve_segment(
        arr, np.zeros(n, dtype=np.int32), svc, np.array([mb], dtype=np.int32),
        np.array([batch.max_queue_delay_s]), np.array([np.inf]), fstate, istate, done, size, 0,
        bid, np.zeros(1),
    )
    queueing.flush_instance(0, svc, np.array([batch.max_queue_delay_s]), fstate, istate, done,
                           size, np.zeros(1))
    del nb
    return done[bid] - arr


@lru_cache(maxsize=4096)
def _capacity(svc_key: tuple[float, ...], max_batch: int, delay_s: float, budget_s: float,
              q: float) -> float:
    svc = np.array(svc_key)
    mb = min(max_batch, len(svc_key) - 1)
    if delay_s + svc[1] > budget_s or svc[1] > budget_s:
        return 0.0
    hi = max(b / svc[b] for b in range(1, mb + 1))  # saturation throughput
    lo = 0.0
    for _ in range(22):
        mid = 0.5 * (lo + hi)
        if latency_quantile(svc, BatchConfig(mb, delay_s), mid, q) <= budget_s:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-3 * hi:
            break
    return lo


def capacity_rps(svc_s: np.ndarray, batch: BatchConfig, budget_s: float, percentile: float) -> float:
    """Max Poisson rate meeting ``percentile`` latency <= ``budget_s`` (0 when infeasible)."""
    return _capacity(tuple(float(x) for x in svc_s), batch.max_batch, batch.max_queue_delay_s,
                     budget_s, percentile)


def saturation_rps(svc_s: np.ndarray, batch: BatchConfig) -> float:
    """Requests/s one instance serves back to back under ``batch`` (full batches): what it
    takes in an overload, when the spill test keeps its queue within the wait budget and
    sends the rest on (at least its capacity under the SLO, usually more: the capacity is
    for Poisson arrivals at the SLO percentile, with idle gaps)."""
    mb = min(batch.max_batch, svc_s.shape[0] - 1)
    return max((b / float(svc_s[b]) for b in range(1, mb + 1) if svc_s[b] > 0), default=0.0)
