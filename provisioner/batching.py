"""Batching policy: Triton dynamic-batcher settings per instance type.

MArk's rule (Clipper-like): a batch leaves when it holds ``max_batch`` requests or its oldest
waited ``max_queue_delay``; a setting is allowed only if delay + T_b fits the SLO budget, and
batching is used only where it beats one-by-one service. Here "beats" is measured as the
capacity under the SLO (:mod:`provisioner.capacity`): grow ``max_batch`` through 1, 2, 4, ...
while the SLO still holds, keep the setting with the highest capacity, and fall back to no
batching unless batching raises capacity by more than ``min_gain``.

With a known rate share (the requests/s this instance will receive) a queue delay that lets
a batch fill, ``(b - 1) / rate``, is also tried, bounded by half the budget; at delay 0 the
batcher still batches whatever queued while the server was busy.

Service times that vary (``service_cv`` > 0) cost each setting its spread margin
(:func:`provisioner.spill.spread_margin_s`, larger for longer batches): a setting's capacity
is counted at the budget less its margin, the wait budget requests are admitted within, so
the choice weighs a large batch's throughput against the budget its spread takes.
"""

from __future__ import annotations

import numpy as np

from mark.core.slo import Slo
from provisioner.capacity import capacity_rps
from provisioner.records import BatchConfig
from provisioner.spill import spread_margin_s


def candidate_batches(max_batch: int) -> list[int]:
    out, b = [], 1
    while b <= max_batch:
        out.append(b)
        b *= 2
    if out[-1] != max_batch:
        out.append(max_batch)
    return out


def choose_batching(
    svc_s: np.ndarray,
    slo: Slo,
    budget_s: float,
    rate_share_rps: float | None = None,
    min_gain: float = 0.02,
    service_cv: float = 0.0,
    miss_share: float = 1.0,
) -> tuple[BatchConfig, float]:
    """Best (settings, capacity rps) for a type with service table ``svc_s`` (index = batch).

    Each setting's capacity is counted at ``budget_s`` less its spread margin at
    ``service_cv`` and ``miss_share`` (:func:`effective_budget_s`; none at cv 0 or share 1)."""
    max_batch = svc_s.shape[0] - 1

    def cap_of(cfg: BatchConfig) -> float:
        return capacity_rps(svc_s, cfg, effective_budget_s(svc_s, cfg, budget_s, service_cv,
                                                          miss_share), slo.percentile)

    best = BatchConfig(1, 0.0)
    best_cap = cap_of(best)
    base_cap = best_cap
    for b in candidate_batches(max_batch)[1:]:
        full = effective_budget_s(svc_s, BatchConfig(b, 0.0), budget_s, service_cv,
                                  miss_share)
        if svc_s[b] > full:
            break  # a full batch alone would miss the SLO: stop growing
        delays = [0.0]
        if rate_share_rps:
            delays.append(min((b - 1) / rate_share_rps, max(full / 2 - svc_s[b], 0.0)))
        for d in delays:
            cfg = BatchConfig(b, round(d, 4))
            cap = cap_of(cfg)
            if cap > best_cap:
                best, best_cap = cfg, cap
    if best.max_batch > 1 and best_cap < base_cap * (1.0 + min_gain):
        return BatchConfig(1, 0.0), base_cap
    return best, best_cap


def effective_budget_s(svc_s: np.ndarray, batch: BatchConfig, budget_s: float,
                       service_cv: float, miss_share: float) -> float:
    """The wait budget of a setting: ``budget_s`` less its spread margin (never < 0)."""
    return max(budget_s - spread_margin_s(svc_s, batch, budget_s, service_cv, miss_share), 0.0)
