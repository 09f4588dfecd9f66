"""Spill policy: send a request to FaaS when its instance would not meet the SLO.

The decision is a comparison the front end and the simulator make per request: the
predicted latency at the chosen instance (front-end queue and instance backlog, the batch in
flight, the batch it would join and the profile's service time for the grown batch, see
:func:`predict_latency_s`) against the type's *wait budget* from :meth:`SpillPolicy.wait_budget_s`.
The budget is the SLO bound less the network overhead and a safety margin, so every request
kept on IaaS meets the bound when the prediction is right; the percentile's slack is left to
the FaaS side (cold starts). ``mark/core/queueing.py`` applies exactly this rule in bulk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mark.core.slo import Slo
from provisioner.records import BatchConfig


@dataclass(frozen=True)
class SpillPolicy:
    """``margin_ms``: kept back from the budget for prediction error (0 in the simulator)."""

    margin_ms: float = 0.0

    def wait_budget_s(self, slo: Slo, network_overhead_ms: float = 0.0) -> float:
        return slo.budget_s(network_overhead_ms, self.margin_ms)

    @staticmethod
    def should_spill(predicted_latency_s: float, oldest_wait_s: float, budget_s: float) -> bool:
        """Spill if the request, or the oldest member of the batch it joins, would miss."""
        return predicted_latency_s > budget_s or oldest_wait_s > budget_s


def predict_latency_s(
    now_s: float,
    busy_until_s: float,
    open_batch_first_s: float | None,
    open_batch_count: int,
    batch: BatchConfig,
    svc_s: np.ndarray,
) -> tuple[float, float]:
    """(latency of a request arriving now, completion minus the open batch's first arrival).

    ``busy_until_s``: when the instance finishes what it has dispatched (batch in flight and
    backlog); the open batch holds ``open_batch_count`` requests, the first at
    ``open_batch_first_s``. Same arithmetic as ``serve_segment``.
    """
    d = batch.max_queue_delay_s
    if open_batch_count > 0 and open_batch_first_s is not None:
        disp = max(busy_until_s, open_batch_first_s + d)
        if now_s < disp:
            c = open_batch_count + 1
            start = max(busy_until_s, now_s) if c == batch.max_batch else disp
            done = start + float(svc_s[c])
            return done - now_s, done - open_batch_first_s
        busy_until_s = disp + float(svc_s[open_batch_count])
    wait = 0.0 if batch.max_batch == 1 else d
    done = max(busy_until_s, now_s + wait) + float(svc_s[1])
    return done - now_s, done - now_s
