"""FaaS as a planned tier: its price per request, the crossover with instances, and the
cold-start cover when the plan has no instance (scale to zero).

Price per request of the FaaS tier at a planned rate ``r`` (:func:`faas_tier_cost_per_request`):
the BATCH-style settings' cost per request (memory GB x ms-billed service time x $/GB-s +
the per-request fee, divided by the expected batch) plus cold starts amortised over the
warm concurrency: with invocations arriving at ``r / E[batch]`` per second, an invocation
finds no warm container when the previous one ended more than the keep-alive ago
(probability ``exp(-rate_inv x keep_alive)`` for a Poisson stream, one container), and
then pays the billed INIT (``cold_start_s``) at its memory size. Cold starts from
concurrency growth (a second container) are left out: at the profiled service times the
warm concurrency is a few containers, each cold once per keep-alive.

Crossover (:func:`crossover_rps`): an instance of type i at P_i $/h and capacity C_i costs
``P_i / 3600 / r`` per request at a rate r < C_i; FaaS costs ``c_f`` per request, so
instances pay from ``r* = min_i P_i / 3600 / c_f`` (a type whose r* exceeds its capacity
never beats FaaS with one instance).

Cold-start cover (:func:`cold_start_cover`): when the plan has no instance, a cold start
(``cold_start_s`` + service of one request) longer than the SLO budget misses the bound.
If the share of requests that would meet a cold container (estimated from the observed
history: arrivals after an idle gap longer than the keep-alive) exceeds the percentile's
slack, the plan is covered by the cheaper of

- ``k`` warm containers held by Lambda **provisioned concurrency** (priced per GB-s held,
  the catalogue's ``provisioned_usd_per_gb_s``; keep-alive pings are not used: AWS does
  not promise a pinged container stays warm), ``k`` = the concurrency the rate needs at
  the SLO percentile, at least one; or
- one instance of the cheapest type kept running.

The choice and its reason are returned as :class:`Cover` and recorded by the planner in
``Decision.info`` as numbers (``COVER_*`` and ``REASON_*`` codes below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mark.core.instances import Market
from provisioner.context import PolicyContext
from provisioner.faas_batching import expected_batch
from provisioner.records import FaasConfig, ServingPlan
from provisioner.serving import default_serving_plan

# Decision.info["faas_cover"]
COVER_NONE = 0.0  # no cover: FaaS alone (or instances planned anyway)
COVER_WARM = 1.0  # k warm containers (provisioned concurrency)
COVER_INSTANCE = 2.0  # one instance kept
COVERS = {COVER_NONE: "none", COVER_WARM: "warm-containers", COVER_INSTANCE: "instance"}
# Decision.info["faas_cover_reason"]
REASON_INSTANCES_PLANNED = 0.0  # the plan has instances: nothing to cover
REASON_COLD_FITS_SLO = 1.0  # cold start + service fits the SLO budget
REASON_FEW_COLD = 2.0  # cold requests within the percentile's slack
REASON_COLD_BREAKS_SLO = 3.0  # cover needed: the cheaper option was taken
REASON_IDLE = 4.0  # no request in the history window: nobody to cover
REASONS = {
    REASON_INSTANCES_PLANNED: "instances planned",
    REASON_COLD_FITS_SLO: "cold start fits the SLO budget",
    REASON_FEW_COLD: "cold-start share within the percentile's slack",
    REASON_COLD_BREAKS_SLO: "cold starts would break the SLO percentile",
    REASON_IDLE: "no recent requests",
}


def _gb(memory_mb: float) -> float:
    return memory_mb / 1024.0


def cold_start_cost_usd(ctx: PolicyContext, memory_mb: float) -> float:
    """What one cold start adds to the bill (the billed INIT at ``memory_mb``)."""
    spec = ctx.catalogue.lambda_
    if not spec.init_billed:
        return 0.0
    return spec.cold_start_s * _gb(memory_mb) * spec.usd_per_gb_s


def cold_probability(rate_inv_per_s: float, keep_alive_s: float) -> float:
    """P(an invocation finds no warm container): previous gap > keep-alive (Poisson)."""
    if rate_inv_per_s <= 0:
        return 1.0
    return math.exp(-rate_inv_per_s * keep_alive_s)


def faas_tier_cost_per_request(ctx: PolicyContext, cfg: FaasConfig, rate_rps: float) -> float:
    """FaaS price per request at ``rate_rps`` under ``cfg``, cold starts amortised."""
    k = expected_batch(rate_rps, cfg.batch, cfg.timeout_s)
    p = cold_probability(rate_rps / k, ctx.catalogue.lambda_.keep_alive_s)
    return cfg.cost_per_request_usd + p * cold_start_cost_usd(ctx, cfg.memory_mb) / k


def crossover(ctx: PolicyContext, faas_cpr_usd: float, serving: ServingPlan | None = None
              ) -> tuple[float, str | None, str | None]:
    """(rate, type, market) of :func:`crossover_rps`; ``(inf, None, None)`` when none."""
    plan = serving or default_serving_plan(ctx)
    best: tuple[float, str | None, str | None] = (math.inf, None, None)
    for t, ts in plan.types.items():
        for m in ctx.markets:
            r = ctx.price_usd_per_h(t, m) / 3600.0 / faas_cpr_usd
            if r <= ts.capacity_rps and r < best[0]:
                best = (r, t, m)
    return best


def crossover_rps(ctx: PolicyContext, faas_cpr_usd: float, serving: ServingPlan | None = None
                  ) -> float:
    """Closed form: the lowest rate at which one instance is cheaper than FaaS per request,
    ``min_i P_i / 3600 / c_f`` over types (and markets) whose crossover is within their
    capacity; ``inf`` when no instance ever beats FaaS. The planner keeps a running
    instance above this rate; from zero instances it launches one above this rate times
    its ``first_launch_margin``."""
    return crossover(ctx, faas_cpr_usd, serving)[0]


@dataclass(frozen=True)
class Cover:
    """The cold-start cover chosen for a zero-instance plan (see the module docstring)."""

    kind: float  # COVER_* code
    reason: float  # REASON_* code
    warm: int = 0  # provisioned-concurrency containers (kind == COVER_WARM)
    usd_per_h: float = 0.0  # what the cover costs while held
    instance_type: str | None = None  # kind == COVER_INSTANCE
    market: Market | None = None
    cold_share: float = 0.0  # estimated share of requests meeting a cold container
    alternative_usd_per_h: float = 0.0  # the option not taken

    def info(self) -> dict[str, float]:
        return {"faas_cover": self.kind, "faas_cover_reason": self.reason,
                "faas_cover_warm": float(self.warm), "faas_cover_usd_per_h": self.usd_per_h,
                "faas_cold_share": self.cold_share}


def observed_cold_share(counts: np.ndarray, keep_alive_s: float, window_s: int) -> float:
    """Share of the last ``window_s`` seconds' requests that arrived after an idle gap
    longer than ``keep_alive_s`` (they meet a cold container); nan when there were none."""
    w = np.asarray(counts[-window_s:], dtype=np.float64)
    total = float(w.sum())
    if total <= 0:
        return math.nan
    idx = np.flatnonzero(w > 0)
    gaps = np.diff(idx)
    cold = float(w[idx[1:][gaps > keep_alive_s]].sum())
    return cold / total


def warm_containers_needed(rate_rps: float, service_s: float, percentile: float) -> int:
    """Concurrency of a Poisson stream of ``rate_rps`` x ``service_s`` at the percentile."""
    mu = rate_rps * service_s
    q = percentile / 100.0
    k, p, cdf = 0, math.exp(-mu), 0.0
    while True:
        cdf += p
        if cdf >= q or k > 1000:
            return max(1, k)
        k += 1
        p *= mu / k


def cold_start_cover(ctx: PolicyContext, cfg: FaasConfig, counts: np.ndarray, rate_rps: float,
                     window_s: int = 6 * 3600, serving: ServingPlan | None = None,
                     slack_use: float = 0.5) -> Cover:
    """Cover for a plan with no instance: none, ``k`` warm containers or one instance.

    ``counts``: the observed per-second history; the cold share is estimated over its last
    ``window_s`` seconds and compared with ``slack_use`` x the percentile's slack.
    ``rate_rps``: the rate the cover must carry (sizes ``k``; picks an instance type).
    """
    spec = ctx.catalogue.lambda_
    lp = ctx.profile.lambda_
    plan = serving or default_serving_plan(ctx)
    svc = (lp.service_s(cfg.memory_mb, 1, spec.mb_per_vcpu, spec.max_vcpu)
           if lp is not None else 0.0)
    budget = ctx.budget_s
    if spec.cold_start_s + svc + cfg.timeout_s <= budget:
        return Cover(COVER_NONE, REASON_COLD_FITS_SLO)
    share = observed_cold_share(counts, spec.keep_alive_s, window_s)
    if math.isnan(share):
        return Cover(COVER_NONE, REASON_IDLE)
    slack = (100.0 - ctx.slo.percentile) / 100.0
    if share <= slack_use * slack:
        return Cover(COVER_NONE, REASON_FEW_COLD, cold_share=share)
    k = warm_containers_needed(rate_rps, svc, ctx.slo.percentile)
    warm_h = k * _gb(cfg.memory_mb) * spec.provisioned_usd_per_gb_s * 3600.0
    inst: tuple[float, str, Market] | None = None
    for t, ts in plan.types.items():
        for m in ctx.markets:
            price = ctx.price_usd_per_h(t, m)
            fits = ts.capacity_rps >= rate_rps
            key = (0 if fits else 1, price)
            if inst is None or key < ((0 if plan.types[inst[1]].capacity_rps >= rate_rps
                                       else 1), inst[0]):
                inst = (price, t, m)
    if inst is None or warm_h <= inst[0]:
        return Cover(COVER_WARM, REASON_COLD_BREAKS_SLO, k, warm_h, cold_share=share,
                     alternative_usd_per_h=inst[0] if inst else math.inf)
    return Cover(COVER_INSTANCE, REASON_COLD_BREAKS_SLO, 0, inst[0], inst[1], inst[2], share,
                 warm_h)
