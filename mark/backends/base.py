"""The backend plug point: where instances come from.

A backend launches and terminates serving instances and reports interruption notices.
Implementations: ``local`` (real tritonserver processes on loopback), later ``aws`` (EC2 via
boto3) and the simulator's virtual instances. All methods are async; none blocks the loop.

Contract:
- ``launch(spec)`` returns at once with a PENDING instance; ``wait_ready`` resolves when the
  instance's health endpoint says ready (or raises ``ServiceUnavailable`` on timeout/death).
- ``terminate(id)`` stops the instance and reaps it; terminating an unknown or already
  terminated instance is a no-op.
- ``list_instances()`` is the backend's view of every instance it launched and has not
  forgotten, with its current state.
- ``interruption_notices()`` returns notices (spot reclaim) not yet returned before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from mark.registry import Registry


class InstanceState(StrEnum):
    PENDING = "pending"
    READY = "ready"
    UNHEALTHY = "unhealthy"  # failed a request or a health check; no traffic until healthy
    DRAINING = "draining"
    TERMINATED = "terminated"


class Market(StrEnum):
    ON_DEMAND = "on_demand"
    SPOT = "spot"


@dataclass(frozen=True)
class LaunchSpec:
    """What to launch: an instance type from the catalogue, its market, the models it serves."""

    instance_type: str = "local"
    market: Market = Market.ON_DEMAND
    models: tuple[str, ...] = ()


@dataclass
class Instance:
    """One serving instance as the control plane sees it."""

    id: str
    url: str  # base URL of its KServe v2 HTTP endpoint, e.g. http://127.0.0.1:8001
    instance_type: str
    market: Market
    state: InstanceState
    launched_at_s: float
    ready_at_s: float | None = None
    capacity_rps: float = 1.0  # requests/s it sustains under the SLO; the WRR weight
    models: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InterruptionNotice:
    instance_id: str
    reclaim_at_s: float  # when the instance will be taken (2-minute notice on AWS spot)


@runtime_checkable
class Backend(Protocol):
    name: str

    async def launch(self, spec: LaunchSpec) -> Instance: ...

    async def wait_ready(self, instance_id: str, timeout_s: float) -> Instance: ...

    async def terminate(self, instance_id: str) -> None: ...

    async def list_instances(self) -> list[Instance]: ...

    async def interruption_notices(self) -> list[InterruptionNotice]: ...

    async def close(self) -> None:
        """Terminate everything this backend launched."""
        ...


BackendFactory = Callable[..., Backend]
BACKENDS: Registry[BackendFactory] = Registry("backend")


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    return BACKENDS.register(name)


def make_backend(name: str, **kwargs: Any) -> Backend:
    return BACKENDS.lookup(name)(**kwargs)
