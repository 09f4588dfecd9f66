"""The cost ledger: every instance-second billed by the catalogue's rules.

Each instance is billed from its launch (booting is billed, as on EC2) to its end, per
second with the catalogue's minimum (60 s) per lifetime (:mod:`mark.core.billing`), at its
type's price in its market. An instance still running is billed up to ``now`` (its
minimum included). Types the catalogue does not know (``local``) cost nothing. FaaS joins
the ledger from the front-end processes that invoke functions (``faas_sources``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from mark.core.billing import instance_cost_usd
from mark.core.catalogue import Catalogue
from mark.core.instances import Instance, Market


@dataclass
class _Entry:
    instance_type: str
    market: Market
    price_usd_per_h: float
    start_s: float
    end_s: float | None = None


class CostLedger:
    """Instance lifetimes and what they cost; times are on the caller's clock."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self.minimum_s = catalogue.billing_minimum_s
        self.granularity_s = catalogue.billing_granularity_s
        self._entries: dict[str, _Entry] = {}
        self._faas_usd = 0.0
        #: callables giving FaaS spend (USD, cumulative) billed elsewhere: each front-end
        #: process bills the invocations it makes
        self.faas_sources: list[Callable[[], float]] = []

    def price_usd_per_h(self, instance_type: str, market: Market) -> float:
        if instance_type not in self.catalogue.instances:
            return 0.0
        return self.catalogue.instance(instance_type).price_usd_per_h(market.value)

    def start(self, inst: Instance) -> None:
        """Bill ``inst`` from its launch (idempotent)."""
        if inst.id not in self._entries:
            self._entries[inst.id] = _Entry(inst.instance_type, inst.market,
                                            self.price_usd_per_h(inst.instance_type, inst.market),
                                            inst.launched_at_s)

    def stop(self, instance_id: str, at_s: float) -> None:
        """Stop billing ``instance_id`` at ``at_s`` (the first stop counts)."""
        e = self._entries.get(instance_id)
        if e is not None and e.end_s is None:
            e.end_s = max(at_s, e.start_s)

    def add_faas(self, usd: float) -> None:
        self._faas_usd += usd

    def cost_of(self, instance_id: str, now_s: float) -> float:
        e = self._entries.get(instance_id)
        if e is None:
            return 0.0
        end = e.end_s if e.end_s is not None else now_s
        return instance_cost_usd(e.price_usd_per_h, max(end - e.start_s, 0.0), self.minimum_s,
                                 self.granularity_s)

    def totals(self, now_s: float) -> dict[str, float]:
        """USD since start: ``total``, ``on_demand``, ``spot``, ``faas``."""
        by = {Market.ON_DEMAND: 0.0, Market.SPOT: 0.0}
        for iid, e in self._entries.items():
            by[e.market] += self.cost_of(iid, now_s)
        od, sp = by[Market.ON_DEMAND], by[Market.SPOT]
        faas = self._faas_usd + sum(f() for f in self.faas_sources)
        return {"total": od + sp + faas, "on_demand": od, "spot": sp, "faas": faas}

    def instance_seconds(self, now_s: float) -> float:
        return sum((e.end_s if e.end_s is not None else now_s) - e.start_s
                   for e in self._entries.values())
