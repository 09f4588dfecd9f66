"""A true lower bound on what serving a trace within its SLO can cost in the simulator.

:func:`lower_bound_usd` is a cost that no plan :func:`mark.sim.simulate` can run goes below
while meeting the SLO (at least ``percentile`` % of the requests within ``latency_ms``).
Unlike the hindsight plan (:mod:`provisioner.oracle`, a strong plan but only a plan), it is
a bound: a relaxation of everything the simulator charges, with the argument below.

What the simulator charges, and the bound of each term from below
------------------------------------------------------------------

- An instance: its price (the market's, times a billing factor >= 1) times its lifetime
  ``l`` rounded up to the billing granularity, at least the billing minimum ``M``; the
  lifetime runs from the launch (boot included) to its end (a drain included). Its batches
  run one at a time, within that lifetime. So it costs at least ``p x max(M, l)`` and at
  least ``p x busy seconds``, ``p`` being the cheapest market's price the plan may use
  (spot when ``spot``; a billing factor of 1), and a batch of ``b`` keeps it busy at least
  ``svc_T(b)``: the profiled mean times the least factor the simulator's service-time
  spread draws (:func:`mark.core.queueing.factor_floor`; its lognormal is truncated, so no
  batch runs faster than that).
- A FaaS invocation (one batch of ``b`` at memory ``m``): ``max(1, ceil(billed ms /
  granularity)) x granularity x m/1024 x $/GB-s + $/request``, billed = service (+ the
  cold start when billed). Provisioned concurrency adds a non-negative amount. The bound
  charges ``C(m, b)`` with the service alone, for every integer memory size Lambda offers
  (128..10240 MB), so whatever memory a plan picks is covered.

Which requests must be paid for, and how much each
--------------------------------------------------

A plan meeting the SLO serves at least ``need = ceil(percentile/100 x N)`` requests within
the latency bound ``L``; the others (late, failed) may as well be free. Split the cost of
every server (a batch, an instance, an invocation) evenly among the in-SLO requests it
served: the plan costs at least the sum of these shares, and so at least the sum of the
``need`` smallest lower bounds on them (the SLO's slack is dropped where it is dearest).
A request ``q`` arriving in second ``s`` carries at least ``floor_s``, the least share of
any way to serve it, found as follows (all counts are per second of the trace).

*Per batch* (bound ``B1``: instances split by batch, FaaS by invocation). A member of a
batch that finishes within ``L`` was dispatched after it arrived, and its batch ran
``svc(b) <= L``, so only configurations with ``svc(b) <= L`` carry in-SLO requests, and
all in-SLO members arrived within one window of length ``L``: at most ``K_s`` of them, the
requests of seconds ``s - ceil(L) .. s + ceil(L)``. The share is then at least
``C(b) / min(b, K_s)``, at least ``min over options and b <= K_s of C(b)/b`` (costs do not
fall as ``b`` grows) with ``C(b) = p x svc_T(b)`` on an instance.

*Per instance* (bound ``B2``: instances split over their lifetime, FaaS as in ``B1``). An
instance living ``l`` seconds serves only requests arriving within its lifetime: if ``q``
is one of them, at most ``A_s(l)``, the most requests in ``ceil(l) + 1`` consecutive seconds
that include ``s``; and at most ``mu_T x l`` (its busiest rate within the SLO, over batch
sizes). So its share is at least ``p x max(M, l) / min(A_s(l), mu_T l)`` >= ``p x max(1 /
mu_T, H_s)`` with ``H_s = min over l of max(M, l) / A_s(l)``, taken over a geometric grid
of ``l`` (for ``l`` between two grid points ``l_i < l <= l_j``: ``max(M, l_i) / A_s(l_j)``).
At low load this is what an instance really costs: it is paid for while requests trickle.

Both are lower bounds, so their maximum is one: :func:`lower_bound_usd` returns
``max(B1, B2)``. A plan that meets only a share ``a`` < percentile of the SLO costs at least
the same over ``ceil(a x N)`` requests: :func:`lower_bound_usd` with ``attainment=a``.

What it leaves out (each makes it lower, so it stays a bound): billing granularity, launch
delays, integral fleets, queueing, FaaS cold starts, buffering waits, throttling and
provisioned concurrency, the SageMaker premium, spot interruptions.
Caveat: the simulator bills a reclaimed spot instance until the reclaim, while its batches
already dispatched still complete (a few seconds of unbilled service per reclaim).
"""

from __future__ import annotations

import math

import numpy as np

from mark.core.catalogue import Catalogue, lambda_vcpu
from mark.core.instances import Market
from mark.core.profiles import Profile, amdahl_speedup
from mark.core.queueing import factor_floor
from mark.core.slo import Slo

__all__ = ["lifetime_floor_s", "lower_bound_usd", "per_request_floor_usd"]

#: Lambda's memory sizes, MB (every integer size a function may be given)
LAMBDA_MIN_MB = 128
LAMBDA_MAX_MB = 10240


def _rows(catalogue: Catalogue, profile: Profile, slo: Slo, spot: bool,
          types: tuple[str, ...] | None, service_cv: float | None
          ) -> tuple[list[tuple[float, np.ndarray]], np.ndarray | None]:
    """Per instance type, (price $/s, cost per request of a batch of ``b`` at index ``b``:
    ``p x svc_T(b) / b``, inf where ``svc_T(b) > L``); and FaaS's row, ``min over memory of
    C(m, b) / b`` (None without a Lambda profile)."""
    lim = slo.latency_s
    fast = factor_floor(profile.service_cv if service_cv is None else service_cv)
    markets = (Market.ON_DEMAND, Market.SPOT) if spot else (Market.ON_DEMAND,)
    names = types if types is not None else tuple(
        t for t in profile.types if t in catalogue.instances)
    inst: list[tuple[float, np.ndarray]] = []
    for t in names:
        # the simulator's service table (index 0 unused), at its fastest draw
        tab = profile.of(t).table_s() * fast
        price = min(catalogue.instance(t).price_usd_per_h(m) for m in markets) / 3600.0
        b = np.arange(tab.size, dtype=np.float64)
        row = np.where((b >= 1) & (tab <= lim), price * tab / np.maximum(b, 1.0), np.inf)
        inst.append((price, row))
    lam = profile.lambda_
    if lam is None:
        return inst, None
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
    faas = np.full(pts.max_batch + 1, np.inf)
    for nb in range(1, pts.max_batch + 1):
        svc = pts.service_s(nb) * ref / speed  # seconds, per memory size
        # billed units as the simulator rounds them; 1e-6 below its tolerance so a
        # last-bit difference of the vectorised service time cannot round up here
        units = np.maximum(np.ceil(svc * 1000.0 / gran - 1e-6), 1.0)
        cost = units * gran / 1000.0 * mem / 1024.0 * spec.usd_per_gb_s + spec.usd_per_request
        ok = svc <= lim
        if ok.any():
            faas[nb] = float(cost[ok].min()) / nb
    return inst, faas


def _up_to(rows: list[np.ndarray]) -> np.ndarray:
    """``out[k]``: the least of ``rows`` over batch sizes ``1..k`` (index 0: inf); the last
    entry holds for every larger ``k``."""
    width = max((r.size for r in rows), default=2)
    best = np.full(width, np.inf)
    for r in rows:
        best[: r.size] = np.minimum(best[: r.size], r)
    best[0] = np.inf
    return np.minimum.accumulate(best)


def per_request_floor_usd(catalogue: Catalogue, profile: Profile, slo: Slo, *,
                          spot: bool = False, types: tuple[str, ...] | None = None,
                          service_cv: float | None = None) -> np.ndarray:
    """``floor[k]`` ($): the least share of a batch's cost one in-SLO request can carry when
    at most ``k`` in-SLO requests can share a batch (index 0 unused, inf); over instance types
    (cheapest market) and FaaS memories, batch sizes up to ``k`` with service within the SLO.
    The last entry holds for every larger ``k``. inf where nothing serves within the SLO.
    ``service_cv``: the spread of instance service times (None: the profile's)."""
    inst, faas = _rows(catalogue, profile, slo, spot, types, service_cv)
    return _up_to([r for _, r in inst] + ([] if faas is None else [faas]))


#: lifetimes are bounded on a geometric grid of this ratio (the bound loses at most this)
LIFE_GRID = 1.1


def lifetime_floor_s(counts: np.ndarray, minimum_s: float) -> np.ndarray:
    """``H_s`` (seconds of an instance's price per request) for every second: the least
    ``max(M, l) / A_s(l)`` over lifetimes ``l``, ``A_s(l)`` the most requests in
    ``ceil(l) + 1`` consecutive seconds including ``s`` (see the module docstring)."""
    from scipy.ndimage import maximum_filter1d

    c = np.asarray(counts, dtype=np.float64)
    n = c.size
    cs = np.concatenate(([0.0], np.cumsum(c)))
    total = float(cs[-1])

    def most(m: int) -> np.ndarray:  # A_s for lifetimes up to m seconds
        if m >= n:
            return np.full(n, total)
        w = cs[np.minimum(np.arange(n) + m + 1, n)] - cs[:n]  # seconds j .. j+m
        return np.asarray(maximum_filter1d(w, size=m + 1, mode="constant", cval=0.0,
                                           origin=m // 2))  # the max over j in s-m .. s

    with np.errstate(divide="ignore", invalid="ignore"):  # seconds without requests: unused
        m = max(1, math.ceil(minimum_s))
        h = minimum_s / most(m)  # l in (0, m]: billed at least M
        while m < n:
            nxt = max(m + 1, math.ceil(m * LIFE_GRID))
            h = np.minimum(h, m / most(nxt))  # l in (m, nxt]
            m = nxt
        h = np.minimum(h, m / max(total, 1.0))  # l beyond: every request of the trace
    return h


def _cheapest(c: np.ndarray, per: np.ndarray, need: float) -> float:
    """The sum of the ``need`` smallest per-request floors, ``c[s]`` requests at ``per[s]``."""
    order = np.argsort(per, kind="stable")
    taken = np.cumsum(c[order])
    last = int(np.searchsorted(taken, need, side="left"))  # the second that completes need
    full = order[:last]
    rest = need - (float(taken[last - 1]) if last else 0.0)
    return float((c[full] * per[full]).sum()) + rest * float(per[order[last]])


def lower_bound_usd(trace_counts: np.ndarray, catalogue: Catalogue, profile: Profile,
                    slo: Slo, *, spot: bool = False, types: tuple[str, ...] | None = None,
                    attainment: float | None = None, service_cv: float | None = None) -> float:
    """The least a plan serving ``trace_counts`` (requests per second) can cost while at
    least ``attainment`` (default: the SLO's percentile / 100) of the requests finish within
    the SLO's latency: ``max(B1, B2)`` of the module docstring. inf where no option serves
    within the latency bound and some requests must. ``service_cv``: the spread of instance
    service times the simulator draws (None: the profile's ``service_cv``)."""
    c = np.asarray(trace_counts, dtype=np.float64)
    c = np.floor(np.maximum(c, 0.0))
    n = float(c.sum())
    share = slo.percentile / 100.0 if attainment is None else float(attainment)
    # 1e-6 under the exact product: float noise may only lower what must be paid for
    need = max(0.0, math.ceil(min(share, 1.0) * n - 1e-6))
    if need <= 0:
        return 0.0
    inst, faas = _rows(catalogue, profile, slo, spot, types, service_cv)
    w = math.ceil(slo.latency_s)  # seconds either side whose requests may share a batch
    cs = np.concatenate(([0.0], np.cumsum(c)))
    idx = np.arange(c.size)
    k_all = (cs[np.clip(idx + w + 1, 0, c.size)] - cs[np.clip(idx - w, 0, c.size)])
    pos = np.flatnonzero(c > 0)
    cnt = c[pos]

    def at(floor: np.ndarray) -> np.ndarray:  # floor[K_s] for the seconds with requests
        return floor[np.minimum(k_all[pos].astype(np.int64), floor.size - 1)]

    # B1: every server split by batch
    b1 = _cheapest(cnt, at(_up_to([r for _, r in inst] + ([] if faas is None else [faas]))),
                   need)
    # B2: instances split over their lifetime (billing minimum, requests within it)
    life = lifetime_floor_s(c, catalogue.billing_minimum_s)[pos]
    per2 = at(_up_to([faas])) if faas is not None else np.full(pos.size, np.inf)
    for price, row in inst:
        best = float(row[1:].min()) if row.size > 1 else math.inf  # p / mu_T
        per2 = np.minimum(per2, np.maximum(best, price * life))
    b2 = _cheapest(cnt, per2, need)
    return max(b1, b2)
