"""Instance headroom for what FaaS cannot absorb: its concurrency limit and scaling rate.

Spill is the planner's fallback at burst onsets, while new instances boot. But FaaS takes
at most ``min(concurrency limit, scaling burst)`` new environments at once (Lambda: 1,000
concurrent executions per account by default, and 1,000 new environments per 10 s per
function); a spill stream beyond what those environments serve builds a backlog that every
later spilled request waits behind, so *all* of it misses the SLO, not only the excess. So
the fleet holds ``m`` x the current rate, with ``m`` the smallest multiplier such that,
replayed over the recent history with instances that lag the rate by the launch delay, the
spill of the 5-second windows where it exceeds ``utilisation`` x FaaS's rate stays within a
share of the SLO's slack (the rest of the slack is left to cold starts and prediction
error). At small scale FaaS absorbs every burst and ``m`` is 0
(no floor); at MArk's scale it is what keeps the SLO at burst onsets. If no ``m`` up to
``max_multiplier`` gets there, the plan accepts throttling and says so (``Decision.info``).

Pure functions of the observed counts and the context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from provisioner.context import PolicyContext
from provisioner.records import FaasConfig

RESOLUTION_S = 5  # rates are judged on 5-second means (cheap; Poisson noise smoothed)


def faas_absorb_rps(ctx: PolicyContext, cfg: FaasConfig) -> float:
    """Requests/s FaaS takes at a burst onset under ``cfg``: the environments it can start at
    once (the concurrency limit, or the scaling burst if smaller), each serving full batches
    back to back at the warm service time."""
    spec, lp = ctx.catalogue.lambda_, ctx.profile.lambda_
    if lp is None:
        return 0.0
    envs = min(spec.concurrency_limit, spec.scaling_per_10s)
    svc = lp.service_s(cfg.memory_mb, max(cfg.batch, 1), spec.mb_per_vcpu, spec.max_vcpu)
    return envs * max(cfg.batch, 1) / (svc + cfg.timeout_s)


@dataclass(frozen=True)
class Headroom:
    multiplier: float  # the fleet holds at least this x the current rate (0: no floor)
    unabsorbed_share: float  # of requests in the history, at that multiplier
    absorb_rps: float  # what FaaS takes at a burst onset
    accepted_throttling: bool  # no multiplier up to the maximum kept within the allowance

    def info(self) -> dict[str, float]:
        return {"headroom_x": self.multiplier, "faas_absorb_rps": self.absorb_rps,
                "expected_unabsorbed_share": self.unabsorbed_share,
                "throttling_accepted": float(self.accepted_throttling)}


UTILISATION = 0.8  # FaaS is planned to run at most this busy at a burst onset


def _rates(counts: np.ndarray, lag_s: float, level_s: int) -> tuple[np.ndarray, np.ndarray]:
    """5-second rates and, aligned with them, the rate a plan made ``lag_s`` earlier saw."""
    n = counts.size // RESOLUTION_S
    r = counts[-n * RESOLUTION_S:].reshape(n, RESOLUTION_S).mean(axis=1) if n else np.zeros(0)
    per = max(1, level_s // RESOLUTION_S)
    k = n // per
    lvl = np.repeat(r[n - k * per:].reshape(k, per).mean(axis=1), per) if k else np.zeros(0)
    r = r[n - k * per:]
    shift = per + math.ceil(lag_s / RESOLUTION_S)  # the plan saw the previous minute, lag ago
    if r.size <= shift:
        return np.zeros(0), np.zeros(0)
    return r[shift:], lvl[:-shift]


def _share(r: np.ndarray, lvl: np.ndarray, absorb_rps: float, m: float) -> float:
    """Share of the requests spilled, by a fleet holding ``m`` x the lagged level, in the
    windows where the spill exceeds ``UTILISATION`` x what FaaS takes (``absorb_rps``)."""
    total = float(r.sum())
    if total <= 0:
        return 0.0
    spill = np.maximum(r - m * lvl, 0.0)
    return float(spill[spill > UTILISATION * absorb_rps].sum() / total)


def plan_headroom(ctx: PolicyContext, cfg: FaasConfig, counts: np.ndarray, lag_s: float,
                  window_s: int, slack_use: float = 0.5, max_multiplier: float = 8.0
                  ) -> Headroom:
    """The smallest multiplier whose unabsorbed share over the last ``window_s`` seconds is
    within ``slack_use`` x the SLO percentile's slack (see the module docstring)."""
    absorb = faas_absorb_rps(ctx, cfg)
    r, lvl = _rates(np.asarray(counts[-window_s:], dtype=np.float64), lag_s, 60)
    allowed = slack_use * (100.0 - ctx.slo.percentile) / 100.0
    if _share(r, lvl, absorb, 0.0) <= allowed:
        return Headroom(0.0, _share(r, lvl, absorb, 0.0), absorb, False)
    top = _share(r, lvl, absorb, max_multiplier)
    if top > allowed:
        return Headroom(max_multiplier, top, absorb, True)
    lo, hi = 0.0, max_multiplier
    while hi - lo > 0.02:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if _share(r, lvl, absorb, mid) <= allowed else (mid, hi)
    return Headroom(hi, _share(r, lvl, absorb, hi), absorb, False)
