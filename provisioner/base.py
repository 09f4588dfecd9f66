"""The policy plug point: snapshots in, decisions (and new policy state) out.

A provisioning policy is a small object with one job: given a :class:`Snapshot` of what is
observable now (the clock's ``now_s``, per-second arrival counts so far, the fleet) and its
own state, return a :class:`Decision` and its new state. It does no I/O and never reads a
clock; the live control loop and the simulator build the snapshot and execute the decision,
and call the very same objects.

Besides launches and terminations a decision may carry a :class:`ServingPlan`: per instance
type the Triton batching settings, the capacity (the WRR weight, requests/s) and the wait
budget the hot path compares predicted latency with (spill), plus the FaaS batching settings.
The hot path applies these numbers per request; the policy never sees single requests.

Policies are registered by name (:func:`register_policy`) and built with
:func:`make_policy`, which raises :class:`~mark.core.errors.ConfigError` listing the registered
names for an unknown one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mark.core.catalogue import Catalogue
from mark.core.errors import ConfigError
from mark.core.profiles import Profile
from mark.core.registry import Registry

ON_DEMAND = "on_demand"
SPOT = "spot"
MARKETS = (ON_DEMAND, SPOT)


@dataclass(frozen=True)
class Slo:
    """``percentile`` % of requests must finish within ``latency_ms``."""

    latency_ms: float = 200.0
    percentile: float = 98.0

    def __post_init__(self) -> None:
        if not self.latency_ms > 0:
            raise ConfigError(f"SLO latency_ms must be > 0, got {self.latency_ms}")
        if not 0 < self.percentile < 100:
            raise ConfigError(f"SLO percentile must be in (0, 100), got {self.percentile}")

    @property
    def latency_s(self) -> float:
        return self.latency_ms / 1000.0


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
class InstanceView:
    """One instance as a policy sees it. ``state``: pending, ready or notice (spot reclaim)."""

    id: str
    instance_type: str
    market: str
    state: str
    launched_at_s: float
    ready_at_s: float


@dataclass(frozen=True)
class Snapshot:
    """What a policy may observe at ``now_s``.

    ``counts[s]`` = requests that arrived in second ``s`` for ``s < now_s`` (the front end's
    request counter); ``fleet`` excludes terminated instances.
    """

    now_s: float
    counts: np.ndarray
    fleet: tuple[InstanceView, ...]
    slo: Slo


@dataclass(frozen=True)
class LaunchOrder:
    """Launch one instance. ``ready_after_s`` overrides the catalogue's launch delay (a
    managed service that provisions more slowly, e.g. SageMaker endpoints)."""

    instance_type: str
    market: str = ON_DEMAND
    ready_after_s: float | None = None


@dataclass(frozen=True)
class Decision:
    launch: tuple[LaunchOrder, ...] = ()
    terminate: tuple[str, ...] = ()
    serving: ServingPlan | None = None  # None: keep the current plan
    info: Mapping[str, float] = field(default_factory=dict)  # forecast etc., for plots


@dataclass(frozen=True)
class PolicyContext:
    """Static configuration every policy is built from (not observed state).

    ``trace_counts`` is given only to policies that are allowed to know the future
    (the oracle) or a configured peak (MArk as released).
    """

    catalogue: Catalogue
    profile: Profile
    slo: Slo = Slo()
    spot: bool = False
    types: tuple[str, ...] | None = None
    trace_counts: np.ndarray | None = field(default=None, compare=False)
    network_overhead_ms: float = 0.0
    request_bytes: int = 4096  # payload of one request; caps FaaS batches (6 MB limit)

    @cached_property
    def instance_types(self) -> tuple[str, ...]:
        """Types usable here: in the catalogue and in the profile (or as configured)."""
        if self.types is not None:
            for t in self.types:
                self.catalogue.instance(t)
                self.profile.of(t)
            return tuple(self.types)
        return tuple(t for t in self.profile.types if t in self.catalogue.instances)

    @property
    def markets(self) -> tuple[str, ...]:
        return MARKETS if self.spot else (ON_DEMAND,)

    @cached_property
    def serving(self) -> ServingPlan:
        """Default serving plan: batching and capacity per type, spill budget, FaaS config."""
        from provisioner.capacity import default_serving_plan

        return default_serving_plan(self)

    def price_usd_per_h(self, instance_type: str, market: str) -> float:
        return self.catalogue.instance(instance_type).price_usd_per_h(market)


@runtime_checkable
class ProvisioningPolicy(Protocol):
    """A provisioning policy. ``interval_s``: how often the control loop calls ``decide``.

    ``instant_launch``: only the oracle sets it; the world then makes launches ready at once.
    A policy may also carry ``price_factor`` (float): the world bills its instances at that
    multiple of the catalogue price (SageMaker's ml.* premium).
    """

    name: str
    interval_s: float
    instant_launch: bool

    def initial_state(self) -> Any: ...

    def decide(self, snap: Snapshot, state: Any) -> tuple[Decision, Any]: ...


PolicyFactory = Callable[..., ProvisioningPolicy]
POLICIES: Registry[PolicyFactory] = Registry("policy")


def register_policy(name: str) -> Callable[[PolicyFactory], PolicyFactory]:
    return POLICIES.register(name)


def make_policy(name: str, ctx: PolicyContext, **kwargs: Any) -> ProvisioningPolicy:
    """Build the policy registered as ``name`` from ``ctx`` (and policy-specific options)."""
    import provisioner  # noqa: F401  (registers the built-in policies)

    return POLICIES.lookup(name)(ctx, **kwargs)


def fleet_by_state(fleet: tuple[InstanceView, ...], *states: str) -> list[InstanceView]:
    return [i for i in fleet if i.state in states]
