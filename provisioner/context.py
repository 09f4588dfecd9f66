"""The static configuration every policy is built from (not observed state)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from mark.core.catalogue import Catalogue
from mark.core.instances import Market
from mark.core.profiles import Profile
from mark.core.slo import Slo


@dataclass(frozen=True)
class PolicyContext:
    """Catalogue, model profile, SLO and options a policy plans with.

    ``trace_counts`` is given only to policies that are allowed to know the future
    (the oracle) or a configured peak (MArk as released). ``memo`` caches what is derived
    from the context alone (the default serving plan, FaaS settings per rate bin); it is
    a cache of pure functions, never policy state.
    """

    catalogue: Catalogue
    profile: Profile
    slo: Slo = field(default_factory=Slo)
    spot: bool = False
    types: tuple[str, ...] | None = None
    trace_counts: np.ndarray | None = field(default=None, compare=False)
    network_overhead_ms: float = 0.0
    request_bytes: int = 4096  # payload of one request; caps FaaS batches (6 MB limit)
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

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
    def markets(self) -> tuple[Market, ...]:
        return (Market.ON_DEMAND, Market.SPOT) if self.spot else (Market.ON_DEMAND,)

    @property
    def budget_s(self) -> float:
        """Latency an instance may spend so a request meets the SLO (network share off)."""
        return self.slo.budget_s(self.network_overhead_ms)

    def price_usd_per_h(self, instance_type: str, market: str) -> float:
        return self.catalogue.instance(instance_type).price_usd_per_h(market)
