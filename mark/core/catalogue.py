"""The catalogue: instance types, markets and Lambda, with prices and delays.

The shipped file is ``mark/core/data/catalogue.json`` (us-east-1, dated; its ``sources`` block says
where every number comes from). :func:`load_catalogue` validates a file of that shape and
raises :class:`~mark.core.errors.ConfigError` naming the offending field.

Units are in the names: ``_usd_per_h``, ``_s``, ``_mb``, ``_gib``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from mark.core.errors import ConfigError

DEFAULT_CATALOGUE = Path(__file__).resolve().parent / "data" / "catalogue.json"
HOURS_PER_MONTH = 730.0


@dataclass(frozen=True)
class SpotModel:
    """Spot market of one type: flat discount off on-demand and a Poisson interruption process."""

    discount: float  # fraction off the on-demand price, 0..1
    interruptions_per_month: float  # probability an instance is reclaimed within a month
    notice_s: float = 120.0  # AWS gives a 2-minute interruption notice

    @property
    def interruption_rate_per_s(self) -> float:
        """Poisson rate that gives ``interruptions_per_month`` within 730 hours."""
        p = min(max(self.interruptions_per_month, 0.0), 0.999999)
        return -math.log1p(-p) / (HOURS_PER_MONTH * 3600.0)


@dataclass(frozen=True)
class InstanceType:
    name: str
    vcpu: int
    memory_gib: float
    gpu: str | None
    on_demand_usd_per_h: float
    launch_delay_s: float  # launch request to ready: boot plus model load
    spot: SpotModel
    burstable_baseline: float | None = None  # t3: sustained CPU share per vCPU

    @property
    def is_gpu(self) -> bool:
        return self.gpu is not None

    def price_usd_per_h(self, market: str = "on_demand") -> float:
        """Hourly price in ``market`` ("on_demand" or "spot")."""
        if market == "on_demand":
            return self.on_demand_usd_per_h
        if market == "spot":
            return self.on_demand_usd_per_h * (1.0 - self.spot.discount)
        raise ConfigError(f"unknown market {market!r}; accepted: 'on_demand', 'spot'")


def lambda_vcpu(memory_mb: float, mb_per_vcpu: float = 1769.0, max_vcpu: float = 6.0,
                max_memory_mb: float = 10240.0) -> float:
    """Lambda's CPU share grows with memory: proportional up to 1 vCPU at ``mb_per_vcpu``
    (1769 MB), then linearly to ``max_vcpu`` (6) at the largest size (10240 MB)."""
    if memory_mb <= mb_per_vcpu:
        return memory_mb / mb_per_vcpu
    frac = (memory_mb - mb_per_vcpu) / (max_memory_mb - mb_per_vcpu)
    return min(1.0 + frac * (max_vcpu - 1.0), max_vcpu)


@dataclass(frozen=True)
class LambdaSpec:
    usd_per_gb_s: float
    usd_per_request: float
    billing_granularity_ms: float
    memory_mb: tuple[int, ...]
    mb_per_vcpu: float
    max_vcpu: float
    cold_start_s: float
    keep_alive_s: float
    concurrency_limit: int
    payload_limit_bytes: int
    init_billed: bool = True
    # provisioned concurrency: $ per GB-s a pre-initialised container is held (x86)
    provisioned_usd_per_gb_s: float = 0.0000041667
    # scaling rate: new execution environments per 10 s per function, refilled continuously
    # (a token bucket of that size refilling at a tenth of it per second); beyond it, 429
    scaling_per_10s: int = 1000

    @property
    def scaling_per_s(self) -> float:
        """New execution environments per second once the burst allowance is spent."""
        return self.scaling_per_10s / 10.0

    def vcpu(self, memory_mb: float) -> float:
        """CPU share at ``memory_mb``: see :func:`lambda_vcpu`."""
        return lambda_vcpu(memory_mb, self.mb_per_vcpu, self.max_vcpu)


@dataclass(frozen=True)
class Catalogue:
    region: str
    priced_on: str
    instances: dict[str, InstanceType]
    lambda_: LambdaSpec
    billing_minimum_s: float = 60.0
    billing_granularity_s: float = 1.0
    sagemaker_premium: float = 1.4
    sources: dict[str, str] = field(default_factory=dict)

    def instance(self, name: str) -> InstanceType:
        try:
            return self.instances[name]
        except KeyError:
            raise ConfigError(
                f"unknown instance type {name!r}; catalogue has: {sorted(self.instances)}"
            ) from None


def _req(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ConfigError(f"catalogue: {where} lacks required field {key!r}")
    return d[key]


def _num(d: dict[str, Any], key: str, where: str, lo: float = 0.0) -> float:
    v = _req(d, key, where)
    if not isinstance(v, int | float) or isinstance(v, bool) or v < lo:
        raise ConfigError(f"catalogue: {where}.{key} must be a number >= {lo}, got {v!r}")
    return float(v)


def parse_catalogue(raw: dict[str, Any]) -> Catalogue:
    """Validate a catalogue mapping (the JSON file's content)."""
    if not isinstance(raw, dict):
        raise ConfigError("catalogue: top level must be a JSON object")
    insts_raw = _req(raw, "instances", "catalogue")
    if not isinstance(insts_raw, dict) or not insts_raw:
        raise ConfigError("catalogue: 'instances' must be a non-empty object keyed by type name")
    instances: dict[str, InstanceType] = {}
    for name, d in insts_raw.items():
        where = f"instances[{name!r}]"
        spot_raw = d.get("spot") or {"discount": 0.0, "interruptions_per_month": 0.0}
        discount = _num(spot_raw, "discount", where + ".spot")
        if discount >= 1.0:
            raise ConfigError(f"catalogue: {where}.spot.discount must be < 1, got {discount}")
        instances[name] = InstanceType(
            name=name,
            vcpu=int(_num(d, "vcpu", where, 1)),
            memory_gib=_num(d, "memory_gib", where),
            gpu=d.get("gpu"),
            on_demand_usd_per_h=_num(d, "on_demand_usd_per_h", where),
            launch_delay_s=_num(d, "launch_delay_s", where),
            spot=SpotModel(discount, _num(spot_raw, "interruptions_per_month", where + ".spot")),
            burstable_baseline=d.get("burstable_baseline"),
        )
    lam = _req(raw, "lambda", "catalogue")
    mems = tuple(int(m) for m in _req(lam, "memory_mb", "lambda"))
    if not mems or min(mems) < 128 or max(mems) > 10240:
        raise ConfigError(f"catalogue: lambda.memory_mb must lie in 128..10240 MB, got {mems}")
    lambda_ = LambdaSpec(
        usd_per_gb_s=_num(lam, "usd_per_gb_s", "lambda"),
        usd_per_request=_num(lam, "usd_per_request", "lambda"),
        billing_granularity_ms=_num(lam, "billing_granularity_ms", "lambda", 1),
        memory_mb=mems,
        mb_per_vcpu=_num(lam, "mb_per_vcpu", "lambda", 1),
        max_vcpu=_num(lam, "max_vcpu", "lambda", 1),
        cold_start_s=_num(lam, "cold_start_s", "lambda"),
        keep_alive_s=_num(lam, "keep_alive_s", "lambda"),
        concurrency_limit=int(_num(lam, "concurrency_limit", "lambda", 1)),
        payload_limit_bytes=int(_num(lam, "payload_limit_bytes", "lambda", 1)),
        init_billed=bool(lam.get("init_billed", True)),
        provisioned_usd_per_gb_s=_num(lam, "provisioned_usd_per_gb_s", "lambda")
        if "provisioned_usd_per_gb_s" in lam else 0.0000041667,
        scaling_per_10s=int(_num(lam, "scaling_per_10s", "lambda", 1))
        if "scaling_per_10s" in lam else 1000,
    )
    billing = raw.get("billing", {})
    return Catalogue(
        region=str(raw.get("region", "unknown")),
        priced_on=str(raw.get("priced_on", "unknown")),
        instances=instances,
        lambda_=lambda_,
        billing_minimum_s=float(billing.get("minimum_s", 60.0)),
        billing_granularity_s=float(billing.get("granularity_s", 1.0)),
        sagemaker_premium=float(raw.get("sagemaker_premium", 1.4)),
        sources=dict(raw.get("sources", {})),
    )


def load_catalogue(path: str | Path | None = None) -> Catalogue:
    """Load and validate a catalogue JSON file (default: the shipped us-east-1 one)."""
    if path is None:
        return _default_catalogue()
    return _load(Path(path))


@lru_cache(maxsize=1)
def _default_catalogue() -> Catalogue:
    return _load(DEFAULT_CATALOGUE)


def _load(p: Path) -> Catalogue:
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"catalogue file not found: {p}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"catalogue {p} is not valid JSON: {exc}") from exc
    return parse_catalogue(raw)
