"""The latency SLO: ``percentile`` % of requests must finish within ``latency_ms``.

The one place for its defaults (98% under 500 ms, DESIGN.md's example) and for the latency
budget an instance may spend once the network's share is taken off.
"""

from __future__ import annotations

from dataclasses import dataclass

from mark.core.errors import ConfigError

DEFAULT_SLO_LATENCY_MS = 500.0
DEFAULT_SLO_PERCENTILE = 98.0


@dataclass(frozen=True)
class Slo:
    """``percentile`` % of requests must finish within ``latency_ms``."""

    latency_ms: float = DEFAULT_SLO_LATENCY_MS
    percentile: float = DEFAULT_SLO_PERCENTILE

    def __post_init__(self) -> None:
        if not self.latency_ms > 0:
            raise ConfigError(f"SLO latency_ms must be > 0, got {self.latency_ms}")
        if not 0 < self.percentile < 100:
            raise ConfigError(f"SLO percentile must be in (0, 100), got {self.percentile}")

    @property
    def latency_s(self) -> float:
        return self.latency_ms / 1000.0

    def budget_s(self, network_overhead_ms: float = 0.0, margin_ms: float = 0.0) -> float:
        """Latency (s) an instance may spend, queue and service, so the request meets the
        bound: the bound less the network's share and a safety ``margin_ms`` (never < 0)."""
        return max(self.latency_ms - network_overhead_ms - margin_ms, 0.0) / 1000.0
