"""A true lower bound on what serving a trace within its SLO can cost in the simulator.

:func:`lower_bound_usd` is a cost that no plan :func:`mark.sim.simulate` can run goes below
while meeting the SLO (at least ``percentile`` % of the requests within ``latency_ms``).
Unlike the hindsight plan (:mod:`provisioner.oracle`, a strong plan but only a plan), it is
a bound: a relaxation of everything the simulator charges, with the argument below.

What the simulator charges, and the bound of each term from below
------------------------------------------------------------------

- An instance: its price (the market's, times a billing factor >= 1) times its lifetime
  rounded up to the billing granularity, at least the billing minimum; the lifetime runs
  from the launch (boot included) to its end (a drain included). Its batches run one at a
  time, within that lifetime. So an instance costs at least ``price x busy seconds``, its
  busy time being the sum of its batches' service times: a batch of ``b`` costs at least
  ``price(T) x svc_T(b)``. The bound takes the cheapest market the plan may use (spot when
  ``spot``), a billing factor of 1, no minimum, no rounding, no boot, no idle time
  (instant launches; each type at the most it can serve within the SLO).
- A FaaS invocation (one batch of ``b`` at memory ``m``): ``max(1, ceil(billed ms /
  granularity)) x granularity x m/1024 x $/GB-s + $/request``, billed = service (+ the
  cold start when billed, + nothing else). Provisioned concurrency adds a non-negative
  amount. The bound charges ``C(m, b)`` with the service alone, for every integer memory
  size Lambda offers (128..10240 MB), so whatever memory a plan picks is covered.

Which requests must be paid for
-------------------------------

A plan meeting the SLO serves at least ``need = ceil(percentile/100 x N)`` requests within
the latency bound; the others (late, failed) may as well be free. Every in-SLO request ``q``
is a member of one batch (an instance's or a FaaS invocation's) whose cost ``C`` is split
evenly among its in-SLO members, so the plan costs at least the sum of these shares. Let
the batch have ``b`` members, ``n`` of them in SLO. A member finishing within the SLO ``L``
was dispatched after it arrived and its batch ran ``svc(b) <= L``, so

- only configurations with ``svc(b) <= L`` carry in-SLO requests at all (those with
  ``svc(b) > L`` only add cost, which the bound drops);
- all in-SLO members arrived within one window of length ``L`` (each arrived at most
  ``L - svc(b)`` before the dispatch, and none after it), so with ``q`` arriving in second
  ``s``, ``n <= K_s``: the requests of seconds ``s - ceil(L) .. s + ceil(L)``.

Hence ``q``'s share is at least ``C(b) / min(b, K_s)``, and, minimised over every option,
at least ``floor(K_s) = min over types T (cheapest market) and FaaS memories m, and batch
sizes b <= min(K_s, max batch) with svc(b) <= L, of C(b) / b`` (``C(b)/b`` for ``b > K``
is ``C(b)/K >= C(K)/K`` as costs do not fall with ``b``). Each second's requests thus cost
at least ``floor(K_s)`` each, whichever way the plan serves them: the cheapest way to serve
that second's requests. The bound is the sum of the ``need`` smallest of these per-request
floors: the SLO's slack (``N - need`` requests) is dropped for free where it is dearest.

A plan that meets only a share ``a`` < percentile of the SLO costs at least the same sum
over ``ceil(a x N)`` requests: :func:`lower_bound_usd` with ``attainment=a``.

What it leaves out, on purpose (each makes it lower, so it stays a bound): the billing
minimum and granularity, launch delays, idle instance time, queueing, integral fleets,
FaaS cold starts, buffering waits, throttling and provisioned concurrency, the SageMaker
premium. It is therefore well below what a plan pays at low load (where an instance must be
kept for a trickle) and within a modest factor of the hindsight plan at high load.
Caveat: the simulator bills a reclaimed spot instance until the reclaim, while its batches
already dispatched still complete (a few seconds of free service per reclaim).
"""

from __future__ import annotations

import math

import numpy as np

from mark.core.catalogue import Catalogue, lambda_vcpu
from mark.core.instances import Market
from mark.core.profiles import Profile, amdahl_speedup
from mark.core.slo import Slo

__all__ = ["lower_bound_usd", "per_request_floor_usd"]

#: Lambda's memory sizes, MB (every integer size a function may be given)
LAMBDA_MIN_MB = 128
LAMBDA_MAX_MB = 10240


def per_request_floor_usd(catalogue: Catalogue, profile: Profile, slo: Slo, *,
                          spot: bool = False, types: tuple[str, ...] | None = None
                          ) -> np.ndarray:
    """``floor[k]`` ($): the least share of a batch's cost one in-SLO request can carry when
    at most ``k`` in-SLO requests can share a batch (index 0 unused, inf); over instance types
    (cheapest market) and FaaS memories, batch sizes up to ``k`` with service within the SLO.
    The last entry holds for every larger ``k``. inf where nothing serves within the SLO."""
    lim = slo.latency_s
    markets = (Market.ON_DEMAND, Market.SPOT) if spot else (Market.ON_DEMAND,)
    names = types if types is not None else tuple(
        t for t in profile.types if t in catalogue.instances)
    per_batch: list[np.ndarray] = []  # cost per request of a batch of b, index b
    for t in names:
        tab = profile.of(t).table_s()  # the simulator's service table (index 0 unused)
        price = min(catalogue.instance(t).price_usd_per_h(m) for m in markets) / 3600.0
        b = np.arange(tab.size, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            row = np.where((b >= 1) & (tab <= lim), price * tab / np.maximum(b, 1.0), np.inf)
        per_batch.append(row)
    lam = profile.lambda_
    if lam is not None:
        spec = catalogue.lambda_
        pts = lam.points
        mem = np.arange(LAMBDA_MIN_MB, LAMBDA_MAX_MB + 1, dtype=np.float64)
        # LambdaProfile.service_s, vectorised over memory: t(b) x ref / speedup(m)
        ref = amdahl_speedup(lambda_vcpu(lam.memory_mb, spec.mb_per_vcpu, spec.max_vcpu),
                             lam.parallel_fraction)
        share = np.array([lambda_vcpu(m, spec.mb_per_vcpu, spec.max_vcpu) for m in mem])
        speed = np.where(share <= 1.0, np.maximum(share, 1e-6),
                         1.0 / ((1.0 - lam.parallel_fraction)
                                + lam.parallel_fraction / np.maximum(share, 1e-6)))
        gran = spec.billing_granularity_ms
        row = np.full(pts.max_batch + 1, np.inf)
        for nb in range(1, pts.max_batch + 1):
            svc = pts.service_s(nb) * ref / speed  # seconds, per memory size
            # billed units as the simulator rounds them; 1e-6 below its tolerance so a
            # last-bit difference of the vectorised service time cannot round up here
            units = np.maximum(np.ceil(svc * 1000.0 / gran - 1e-6), 1.0)
            cost = units * gran / 1000.0 * mem / 1024.0 * spec.usd_per_gb_s + spec.usd_per_request
            ok = svc <= lim
            if ok.any():
                row[nb] = float(cost[ok].min()) / nb
        per_batch.append(row)
    width = max((r.size for r in per_batch), default=2)
    best = np.full(width, np.inf)
    for r in per_batch:
        padded = np.full(width, np.inf)
        padded[: r.size] = r
        best = np.minimum(best, padded)
    best[0] = np.inf
    return np.minimum.accumulate(best)  # at most k share: any batch size up to k


def lower_bound_usd(trace_counts: np.ndarray, catalogue: Catalogue, profile: Profile,
                    slo: Slo, *, spot: bool = False, types: tuple[str, ...] | None = None,
                    attainment: float | None = None) -> float:
    """The least a plan serving ``trace_counts`` (requests per second) can cost while at
    least ``attainment`` (default: the SLO's percentile / 100) of the requests finish within
    the SLO's latency; see the module docstring for the argument. inf where no option serves
    within the latency bound and some requests must."""
    c = np.asarray(trace_counts, dtype=np.float64)
    c = np.floor(np.maximum(c, 0.0))
    n = float(c.sum())
    share = slo.percentile / 100.0 if attainment is None else float(attainment)
    # 1e-6 under the exact product: float noise may only lower what must be paid for
    need = max(0.0, math.ceil(min(share, 1.0) * n - 1e-6))
    if need <= 0:
        return 0.0
    floor = per_request_floor_usd(catalogue, profile, slo, spot=spot, types=types)
    w = math.ceil(slo.latency_s)  # seconds either side whose requests may share a batch
    cs = np.concatenate(([0.0], np.cumsum(c)))
    lo = np.clip(np.arange(c.size) - w, 0, c.size)
    hi = np.clip(np.arange(c.size) + w + 1, 0, c.size)
    k = (cs[hi] - cs[lo]).astype(np.int64)  # K_s: requests that may share q's batch
    pos = np.flatnonzero(c > 0)
    per = floor[np.minimum(k[pos], floor.size - 1)]
    cnt = c[pos]
    # the need cheapest requests: seconds sorted by their floor, counts accumulated
    order = np.argsort(per, kind="stable")
    taken = np.cumsum(cnt[order])
    last = int(np.searchsorted(taken, need, side="left"))  # the second that completes need
    full = order[:last]
    rest = need - (float(taken[last - 1]) if last else 0.0)
    return float((cnt[full] * per[full]).sum()) + rest * float(per[order[last]])
