"""Spill policy: send a request to FaaS when its instance would not meet the SLO.

The decision is a comparison the front end and the simulator make per request: the
predicted latency at the chosen instance (front-end queue and instance backlog, the batch in
flight, the batch it would join and the profile's service time for the grown batch, see
:func:`predict_latency_s`) against the type's *wait budget* from :meth:`SpillPolicy.wait_budget_s`.
The budget is the SLO bound less the network overhead, a safety margin and a *spread
margin* (:func:`spread_margin_s`): the prediction uses the profiled mean service times
while actual batches vary around them (the profile's ``service_cv``), so a request predicted
right at the SLO bound would miss whenever a batch it waits for runs long. The spread
margin is what keeps the share of an overloaded instance's requests that miss within part
of the SLO's slack; with ``service_cv`` = 0 it is 0 and the prediction is exact. The
percentile's slack is left to the FaaS side (cold starts). ``mark/core/queueing.py`` applies
exactly this rule in bulk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mark.core.queueing import Z_MAX, log_sd
from mark.core.slo import Slo
from provisioner.records import BatchConfig

#: of the share of requests the SLO lets miss, what an overloaded instance may lose to the
#: spread of its service times (see :func:`spread_margin_s`)
SPREAD_SLACK_SHARE = 0.5


def spread_margin_s(svc_s: np.ndarray, batch: BatchConfig, budget_s: float,
                    service_cv: float, miss_share: float) -> float:
    """What to keep back from ``budget_s`` for the spread of actual service times (s), so
    that at most ``miss_share`` of the requests an overloaded instance keeps miss the bound.

    *The error.* A request is kept when its predicted completion fits the wait budget; the
    prediction counts every batch not yet seen back at its profiled mean (the front end
    cannot know better, see :mod:`mark.core.queueing`). So the completion of a request
    predicted near the budget is off by the summed errors of the batches on its path: its
    own and every one ahead of it still out (the one in flight and the backlog behind it).
    Those fill the budget: at most ``n = ceil((budget - max_queue_delay) / s)`` batches of
    ``s = svc[max_batch]`` (full batches, the longest, whose errors weigh most: n batches
    of ``s`` spread by ``cv s sqrt(n)``, about ``cv sqrt(s x budget)``). With ``max_batch``
    1 that is several batches (Inception-v3 on a c5.xlarge: 4 of 132 ms in 500 ms), not
    the request's own alone. Each batch's time is its mean times the simulator's lognormal
    factor (mean 1, log-sd :func:`mark.core.queueing.log_sd` of ``service_cv``); the sum,
    ``n s`` times the mean of n factors, is taken as lognormal with the same mean and
    variance (Fenton-Wilkinson: coefficient of variation ``cv / sqrt(n)``, exact for n = 1;
    the truncation at ``Z_MAX`` log-sds is left out but for the margin's upper bound).

    *The criterion.* Requests predicted well inside the budget have slack; those at risk
    are kept where the load outruns an instance. There its queue is pinned at the wait
    budget: a request is kept as soon as its prediction fits, so the kept ones are
    predicted within the last batch time ``s`` below the budget, about evenly, and a
    request predicted ``u`` below it misses when the error exceeds ``margin + u``. The
    margin is the least for which the share of those that miss, ``(1/s) x integral over u
    in [0, s] of P(error > margin + u)``, is at most ``miss_share``; the default plan takes
    half the SLO's slack (:data:`SPREAD_SLACK_SHARE`: 1% at a 98% SLO, so an instance
    overloaded for a whole surge still serves 99% of what it keeps within the bound,
    the benches' target, and half the slack is left for the FaaS side's cold starts).

    ``n`` is counted at ``budget_s``, not at the smaller wait budget: up to one batch too
    many, on the safe side.

    Put as a quantile, a request predicted right at the wait budget then meets the bound
    with probability 0.87-0.92 on the CPU types (a batch time of 40-230 ms against an error
    spread of 13-26 ms averages the risk down) and up to 0.96 where batches are short
    against it (a p3.2xlarge's 6.5 ms MiniLM batches, 31 on the path). Monte Carlo with
    the simulator's own factors gives a pinned miss share of 0.9-1.07% for every shipped
    profile and type at a 1% target. A fixed quantile would not hold the miss share: 0.9
    lets 2.6% of a pinned GPU's requests miss, and 0.99 costs every CPU type capacity for
    a tail few requests reach (mark's bill +11% on a Twitter day at x1, Inception-v3 CPU
    types, against +5% for this rule). With ``service_cv`` = 0 the margin is 0.
    """
    path = _path(svc_s, batch, budget_s, service_cv)
    if path is None or miss_share >= 1.0:
        return 0.0
    s, n, _ = path
    s1 = log_sd(service_cv)
    most = n * s * math.expm1(Z_MAX * s1 - 0.5 * s1 * s1)  # the truncated factors' largest
    if pinned_miss_share(svc_s, batch, budget_s, service_cv, 0.0) <= miss_share:
        return 0.0
    lo, hi = 0.0, most
    while hi - lo > 1e-6:
        mid = 0.5 * (lo + hi)
        if pinned_miss_share(svc_s, batch, budget_s, service_cv, mid) > miss_share:
            lo = mid
        else:
            hi = mid
    return hi


def pinned_miss_share(svc_s: np.ndarray, batch: BatchConfig, budget_s: float,
                      service_cv: float, margin_s: float) -> float:
    """The share of the requests an instance pinned at its wait budget (``budget_s`` less
    ``margin_s``) keeps that miss ``budget_s``, as :func:`spread_margin_s` models it."""
    path = _path(svc_s, batch, budget_s, service_cv)
    if path is None:
        return 0.0
    s, n, sigma = path
    return (_excess(n * s, sigma, margin_s) - _excess(n * s, sigma, margin_s + s)) / s


def _path(svc_s: np.ndarray, batch: BatchConfig, budget_s: float,
          service_cv: float) -> tuple[float, int, float] | None:
    """(batch time ``s``, batches ``n`` on the path, log-sd of their mean factor); None
    where nothing spreads."""
    if service_cv <= 0.0 or not math.isfinite(budget_s):
        return None
    mb = max(1, min(batch.max_batch, svc_s.shape[0] - 1))
    s = float(svc_s[mb])
    if s <= 0.0:
        return None
    n = max(1, math.ceil((budget_s - batch.max_queue_delay_s) / s - 1e-9))
    return s, n, log_sd(service_cv / math.sqrt(n))


def _excess(a: float, sigma: float, k: float) -> float:
    """``E[(a (Y - 1) - k)+]`` for ``Y`` lognormal of mean 1 and log-sd ``sigma``."""
    kk = 1.0 + k / a
    if kk <= 0.0:
        return -k  # always positive: the mean of a (Y - 1) - k
    lk = math.log(kk)
    d1 = (0.5 * sigma * sigma - lk) / sigma
    return a * (_phi(d1) - kk * _phi(d1 - sigma))


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


@dataclass(frozen=True)
class SpillPolicy:
    """``margin_ms``: kept back from the budget for prediction error beyond the service-time
    spread (0 in the simulator); ``spread_slack_share``: the share of the SLO's slack an
    overloaded instance may lose to that spread (see :func:`spread_margin_s`)."""

    margin_ms: float = 0.0
    spread_slack_share: float = SPREAD_SLACK_SHARE

    def miss_share(self, slo: Slo) -> float:
        """The share of its kept requests an overloaded instance may lose to the spread."""
        return self.spread_slack_share * (100.0 - slo.percentile) / 100.0

    def wait_budget_s(self, slo: Slo, network_overhead_ms: float = 0.0,
                      spread_margin_s: float = 0.0) -> float:
        """The SLO budget less the network's share, ``margin_ms`` and ``spread_margin_s``."""
        return max(slo.budget_s(network_overhead_ms, self.margin_ms) - spread_margin_s, 0.0)

    def spread_margin_s(self, svc_s: np.ndarray, batch: BatchConfig, budget_s: float,
                        slo: Slo, service_cv: float) -> float:
        """:func:`spread_margin_s` at this policy's share of ``slo``'s slack."""
        return spread_margin_s(svc_s, batch, budget_s, service_cv, self.miss_share(slo))

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
