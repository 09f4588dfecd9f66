"""FaaS batching in the manner of BATCH: a buffer in front of Lambda releases a batch at
``B`` requests or after ``T`` seconds, and (B, T, memory) are chosen by exhaustive search to
minimise the expected cost per request subject to the SLO.

Model (deterministic, profiled service times; Poisson arrivals at the planned rate lambda):
a batch opens with a request and collects the arrivals of the next T seconds, so its size is
``1 + min(B - 1, Poisson(lambda T))``. The worst member waits T and then the service of a
full batch: ``T + S(B, memory) <= budget`` is required (warm container). Cost per request =
(billed ms x GB x price + price per request) / expected batch size. Cold starts are left to
the SLO percentile's slack, as in BATCH's fitted model they are rare at steady load.
A batch travels as one invocation, so ``B x request_bytes`` must fit
Lambda's 6 MB synchronous payload limit.
"""

from __future__ import annotations

import math

import numpy as np

from mark.core.billing import lambda_cost_per_invocation_usd
from mark.core.errors import ConfigError
from provisioner.context import PolicyContext
from provisioner.records import FaasConfig

BATCHES = (1, 2, 4, 8, 16, 32)
TIMEOUTS_S = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


def expected_batch(rate_rps: float, batch: int, timeout_s: float) -> float:
    """E[size] of a batch that opens with one request and waits ``timeout_s`` for more."""
    if batch <= 1 or timeout_s <= 0 or rate_rps <= 0:
        return 1.0
    mu = rate_rps * timeout_s
    p = math.exp(-mu)  # P(j arrivals), j = 0
    mean = total = 0.0
    for j in range(batch - 1):
        mean += j * p
        total += p
        p *= mu / (j + 1)
    return 1.0 + mean + (batch - 1) * max(1.0 - total, 0.0)


def choose_faas_config(
    ctx: PolicyContext,
    rate_rps: float,
    batches: tuple[int, ...] = BATCHES,
    timeouts_s: tuple[float, ...] = TIMEOUTS_S,
    memories_mb: tuple[int, ...] | None = None,
) -> FaasConfig:
    """Cheapest (B, T, memory) for the FaaS stream of ``rate_rps`` meeting the SLO."""
    lp = ctx.profile.lambda_
    if lp is None:
        raise ConfigError(f"profile {ctx.profile.model!r} has no 'lambda' section; FaaS needs it")
    spec = ctx.catalogue.lambda_
    budget = ctx.budget_s
    mems = memories_mb or spec.memory_mb
    max_b = max(1, spec.payload_limit_bytes // max(ctx.request_bytes, 1))
    best: FaasConfig | None = None
    fastest: FaasConfig | None = None
    fastest_s = math.inf
    for mem in mems:
        for b in batches:
            if b > lp.points.max_batch or b > max_b:
                continue
            s_full = lp.service_s(mem, b, spec.mb_per_vcpu, spec.max_vcpu)
            if b == 1 and s_full < fastest_s:
                fastest_s, fastest = s_full, FaasConfig(1, 0.0, mem)
            for tmo in timeouts_s:
                if (b == 1) != (tmo == 0.0) or tmo + s_full > budget:
                    continue
                k = expected_batch(rate_rps, b, tmo)
                s_k = float(np.interp(k, [1, b], [lp.service_s(mem, 1, spec.mb_per_vcpu,
                                                               spec.max_vcpu), s_full]))
                cpr = lambda_cost_per_invocation_usd(s_k, mem, spec) / k
                if best is None or cpr < best.cost_per_request_usd:
                    best = FaasConfig(b, tmo, mem, cpr)
    if best is None:  # nothing meets the SLO: use the fastest single-request setting
        assert fastest is not None
        s = fastest_s
        return FaasConfig(1, 0.0, fastest.memory_mb,
                          lambda_cost_per_invocation_usd(s, fastest.memory_mb, spec))
    return best


#: Rate bins of :func:`faas_config_for`: 20 per e-fold, i.e. about 5% wide.
_BINS_PER_E = 20


def faas_config_for(ctx: PolicyContext, rate_rps: float) -> FaasConfig:
    """:func:`choose_faas_config` for a stream of ``rate_rps``, at the centre of its ~5% wide
    rate bin, memoised per context: what every policy calls on its decision path."""
    key = ("faas", round(math.log(max(rate_rps, 1e-3)) * _BINS_PER_E))
    cfg = ctx.memo.get(key)
    if cfg is None:
        cfg = ctx.memo[key] = choose_faas_config(ctx, math.exp(key[1] / _BINS_PER_E))
    assert isinstance(cfg, FaasConfig)
    return cfg
