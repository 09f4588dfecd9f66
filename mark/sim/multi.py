"""Several models over one catalogue: each model has its own trace, profile, SLO and plan.

:func:`simulate_models` runs each model's own policy (by default ``"mark"``, FaaS tier
included) through :func:`~mark.sim.simulator.simulate` against the shared catalogue and
sums the bills: a low-traffic model can live entirely on FaaS while a busy one runs a
fleet. Instances are per model (one Triton model per instance, as the front end routes
per model), so the models' fleets do not interact and running them one after another is
exact; what they share is the catalogue's prices and Lambda's settings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mark.core.catalogue import Catalogue, load_catalogue
from mark.core.errors import ConfigError
from mark.core.profiles import Profile
from mark.core.slo import Slo
from mark.sim.metrics import SimResult
from mark.sim.simulator import simulate


@dataclass(frozen=True)
class ModelRun:
    """One model: its per-second ``counts`` (array or Trace), profile, SLO and policy."""

    name: str
    counts: Any
    profile: str | Profile = "minilm"
    slo: Slo | None = None
    policy: str = "mark"
    policy_kw: dict[str, Any] | None = field(default=None, compare=False)
    scale: float = 1.0


@dataclass
class MultiResult:
    models: dict[str, SimResult]

    @property
    def cost_usd(self) -> float:
        return sum(r.cost_usd["total"] for r in self.models.values())

    @property
    def requests(self) -> int:
        return sum(r.requests for r in self.models.values())

    @property
    def slo_attainment(self) -> float:
        """Share of all models' requests that met their own model's SLO bound."""
        n = self.requests
        return (sum(r.slo_attainment * r.requests for r in self.models.values()) / n
                if n else 1.0)

    def to_json(self) -> dict[str, Any]:
        n = self.requests
        return {
            "models": {k: r.to_json() for k, r in self.models.items()},
            "requests": n,
            "cost_usd": round(self.cost_usd, 6),
            "cost_per_million_usd": round(self.cost_usd / n * 1e6, 6) if n else math.nan,
            "slo_attainment": round(self.slo_attainment, 6),
        }


def simulate_models(runs: Sequence[ModelRun], *, catalogue: Catalogue | None = None,
                    spot: bool = False, seed: int = 0, types: tuple[str, ...] | None = None,
                    timeline: bool = False) -> MultiResult:
    """Each model's own plan over the shared ``catalogue``; the bills are summed."""
    cat = catalogue or load_catalogue()
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"model names must be unique, got {names}")
    out: dict[str, SimResult] = {}
    for i, r in enumerate(runs):
        out[r.name] = simulate(r.counts, r.policy, profile=r.profile, catalogue=cat,
                               slo=r.slo, spot=spot, scale=r.scale, seed=seed + i,
                               types=types, policy_kw=r.policy_kw, timeline=timeline,
                               name=f"{r.name}:{r.policy}")
    return MultiResult(out)
