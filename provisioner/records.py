"""What policies exchange with the worlds that run them: snapshots in, decisions out.

A :class:`Snapshot` is what is observable at ``now_s`` (per-second arrival counts so far and
the fleet, as :class:`~mark.core.instances.Instance` records); a :class:`Decision` carries
launches, terminations and, when it changes, the :class:`ServingPlan`: per instance type the
Triton batching settings, the capacity (the WRR weight, requests/s) and the wait budget the
hot path compares predicted latency with (spill), plus the FaaS batching settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from mark.core.instances import Instance, Market
from mark.core.slo import Slo


@dataclass(frozen=True)
class BatchConfig:
    """Triton dynamic-batcher settings: ``max_batch_size`` and ``max_queue_delay``."""

    max_batch: int = 1
    max_queue_delay_s: float = 0.0


@dataclass(frozen=True)
class FaasConfig:
    """FaaS buffer releasing at ``batch`` requests or after ``timeout_s``; Lambda memory;
    ``provisioned`` containers kept initialised (never cold, billed while held)."""

    batch: int = 1
    timeout_s: float = 0.0
    memory_mb: int = 3008
    cost_per_request_usd: float = 0.0  # the planner's estimate at the rate it planned for
    provisioned: int = 0  # warm containers held by provisioned concurrency (cold-start cover)


@dataclass(frozen=True)
class TypeServing:
    """How one instance type serves: batching, capacity under the SLO, spill wait budget."""

    instance_type: str
    batch: BatchConfig
    capacity_rps: float
    wait_budget_s: float


@dataclass(frozen=True)
class ServingPlan:
    types: Mapping[str, TypeServing]
    faas: FaasConfig
    spill: bool = True


@dataclass(frozen=True)
class Snapshot:
    """What a policy may observe at ``now_s``.

    ``counts[s]`` = requests that arrived in second ``s`` for ``s < now_s`` (the front end's
    request counter); ``fleet`` excludes terminated instances. Policies read, never mutate.
    """

    now_s: float
    counts: np.ndarray
    fleet: tuple[Instance, ...]
    slo: Slo

    def recent(self, window_s: float) -> np.ndarray:
        """The counts of the last ``window_s`` seconds (at least the last one; empty before
        any)."""
        return self.counts[-max(1, int(window_s)):]

    def recent_rate(self, window_s: float) -> float:
        """Mean requests/s over the last ``window_s`` seconds (0 before any)."""
        w = self.recent(window_s)
        return float(w.mean()) if w.size else 0.0


@dataclass(frozen=True)
class LaunchOrder:
    """Launch one instance. ``ready_after_s`` overrides the catalogue's launch delay (a
    managed service that provisions more slowly, e.g. SageMaker endpoints)."""

    instance_type: str
    market: Market = Market.ON_DEMAND
    ready_after_s: float | None = None


@dataclass(frozen=True)
class Decision:
    launch: tuple[LaunchOrder, ...] = ()
    terminate: tuple[str, ...] = ()
    serving: ServingPlan | None = None  # None: keep the current plan
    info: Mapping[str, float] = field(default_factory=dict)  # forecast etc., for plots
