"""The one record of a serving instance, its state words and its markets.

Backends create and update :class:`Instance` records, the front end routes over them, policy
snapshots carry them and the simulator keeps its virtual fleet in them: one vocabulary in
every world.

Life of an instance (``state``)::

    pending --> ready --> notice --> terminated        (spot: reclaim notice, then gone)
                  |  ^        \\
                  v  |         `--> draining --> terminated
               unhealthy            (no new requests; finishes what it holds)

- ``pending``: launched, not yet ready (booting, loading models).
- ``ready``: serves traffic.
- ``notice``: a spot instance told it will be reclaimed (2 minutes on AWS); still serves
  until then, and planners replace it.
- ``draining``: takes no new requests; finishes the ones it holds, then is terminated.
- ``unhealthy``: failed a request or a health check; no traffic until a check passes.
- ``terminated``: gone (ended, reclaimed or died).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class InstanceState(StrEnum):
    PENDING = "pending"
    READY = "ready"
    NOTICE = "notice"
    DRAINING = "draining"
    UNHEALTHY = "unhealthy"
    TERMINATED = "terminated"

    @property
    def serving(self) -> bool:
        """Whether an instance in this state receives new requests."""
        return self in _SERVING


_SERVING = frozenset({InstanceState.READY, InstanceState.NOTICE})


class Market(StrEnum):
    ON_DEMAND = "on_demand"
    SPOT = "spot"


@dataclass
class Instance:
    """One serving instance, as backends, the front end, policies and the simulator see it.

    Times are seconds on the world's clock (wall or virtual). ``capacity_rps`` is what the
    instance sustains under the SLO (the WRR weight). ``extra`` holds backend-specific facts
    (a pid, a log file, an EC2 instance id) that no policy reads.
    """

    id: str
    instance_type: str
    market: Market
    state: InstanceState
    launched_at_s: float
    ready_at_s: float | None = None
    url: str = ""  # base URL of its KServe v2 HTTP endpoint, e.g. http://127.0.0.1:8001
    capacity_rps: float = 1.0
    models: tuple[str, ...] = ()
    ended_at_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # accept the words as plain strings (JSON, hand-built snapshots); keep the enums inside
        self.market = Market(self.market)
        self.state = InstanceState(self.state)

    @property
    def serving(self) -> bool:
        return self.state.serving
