"""Model profiles: service time per (instance type, batch size), and on Lambda per memory size.

File format (JSON; ``mark profile --json F`` writes the same shape)::

    {
      "model": "minilm",
      "source": "where the numbers come from",
      "instances": {
        "c5.large": {"batch_ms": {"1": 15.0, "8": 42.0, "32": 120.0}, "max_batch": 32,
                     "source": "optional, per type"},
        ...
      },
      "lambda": {"memory_mb": 3008, "batch_ms": {"1": 30.0, ...}, "max_batch": 32,
                 "parallel_fraction": 0.85},
      "service_cv": 0.1
    }

``batch_ms`` maps batch sizes to the time one batch of that size occupies the instance
(compute only, no queueing). Sizes in between are interpolated linearly; sizes above the
largest listed are refused. ``lambda`` is optional; its times are measured at ``memory_mb``
and scaled to other memory sizes with :func:`amdahl_speedup` of the vCPU share.

``service_cv`` (optional): the spread of a batch's actual service time around ``batch_ms``
(coefficient of variation; the simulator draws a lognormal of mean 1 with it). Profiles
without it, the shipped ones included, get :data:`DEFAULT_SERVICE_CV` (0.1: Triton's
compute time of one batch size on a CPU host typically varies by 5-15% run to run); 0
makes service times exactly the profiled means.

Shipped profiles live in ``mark/core/data/profiles/``; :func:`load_profile` accepts a path or a
shipped name (``minilm``, ``inception-v3``, ...).
"""

from __future__ import annotations

import itertools
import json
import os
import stat
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from mark.core.catalogue import lambda_vcpu
from mark.core.errors import ConfigError

PROFILE_DIR = Path(__file__).resolve().parent / "data" / "profiles"
#: spread (coefficient of variation) of actual service times for a profile that gives none
DEFAULT_SERVICE_CV = 0.1


def amdahl_speedup(vcpu: float, parallel_fraction: float) -> float:
    """Speed of one inference on ``vcpu`` cores relative to one core.

    Below one vCPU (a Lambda CPU share) the function is throttled: speed = share.
    """
    if vcpu <= 1.0:
        return max(vcpu, 1e-6)
    return 1.0 / ((1.0 - parallel_fraction) + parallel_fraction / vcpu)


@dataclass(frozen=True)
class TypeProfile:
    """Service times of one instance type: ``batch_ms`` points, interpolated."""

    batches: tuple[int, ...]
    times_ms: tuple[float, ...]
    max_batch: int
    source: str = ""

    def service_s(self, batch: int) -> float:
        if batch < 1 or batch > self.max_batch:
            raise ConfigError(f"batch size {batch} outside 1..{self.max_batch} for this profile")
        return float(np.interp(batch, self.batches, self.times_ms)) / 1000.0

    def table_s(self) -> np.ndarray:
        """Service seconds indexed by batch size (index 0 unused, = 0)."""
        b = np.arange(self.max_batch + 1, dtype=np.float64)
        t = np.interp(b, self.batches, self.times_ms) / 1000.0
        t[0] = 0.0
        return t


@dataclass(frozen=True)
class LambdaProfile:
    memory_mb: float
    points: TypeProfile
    parallel_fraction: float = 0.85

    def service_s(self, memory_mb: float, batch: int, mb_per_vcpu: float = 1769.0,
                  max_vcpu: float = 6.0) -> float:
        """Service time of a batch at ``memory_mb``, scaled from the measured memory size."""
        def share(m: float) -> float:
            return lambda_vcpu(m, mb_per_vcpu, max_vcpu)

        ref = amdahl_speedup(share(self.memory_mb), self.parallel_fraction)
        new = amdahl_speedup(share(memory_mb), self.parallel_fraction)
        return self.points.service_s(batch) * ref / new


@dataclass(frozen=True)
class Profile:
    model: str
    instances: dict[str, TypeProfile]
    lambda_: LambdaProfile | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    service_cv: float = DEFAULT_SERVICE_CV  # spread of actual service times (see above)

    @property
    def types(self) -> list[str]:
        return sorted(self.instances)

    def of(self, instance_type: str) -> TypeProfile:
        try:
            return self.instances[instance_type]
        except KeyError:
            raise ConfigError(
                f"profile {self.model!r} has no entry for instance type {instance_type!r}; "
                f"it has: {self.types}"
            ) from None

    def service_s(self, instance_type: str, batch: int = 1) -> float:
        """Time one batch of ``batch`` requests occupies an instance of ``instance_type``."""
        return self.of(instance_type).service_s(batch)

    def to_json(self) -> dict[str, Any]:
        def tp(p: TypeProfile) -> dict[str, Any]:
            d: dict[str, Any] = {
                "batch_ms": {str(b): round(t, 3) for b, t in zip(p.batches, p.times_ms,
                                                                  strict=True)},
                "max_batch": p.max_batch,
            }
            if p.source:
                d["source"] = p.source
            return d

        out: dict[str, Any] = {"model": self.model, "source": self.source,
                               "instances": {k: tp(v) for k, v in sorted(self.instances.items())}}
        if self.lambda_ is not None:
            lam = tp(self.lambda_.points)
            lam["memory_mb"] = self.lambda_.memory_mb
            lam["parallel_fraction"] = self.lambda_.parallel_fraction
            out["lambda"] = lam
        out["service_cv"] = self.service_cv
        return out


def _type_profile(d: Any, where: str) -> TypeProfile:
    if not isinstance(d, dict) or "batch_ms" not in d:
        raise ConfigError(f"profile: {where} must be an object with 'batch_ms'")
    raw = d["batch_ms"]
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"profile: {where}.batch_ms must map batch sizes to milliseconds")
    try:
        pts = sorted((int(k), float(v)) for k, v in raw.items())
    except (TypeError, ValueError):
        raise ConfigError(f"profile: {where}.batch_ms keys must be integers, values numbers") from None
    if pts[0][0] != 1:
        raise ConfigError(f"profile: {where}.batch_ms must include batch size 1")
    if any(t <= 0 for _, t in pts):
        raise ConfigError(f"profile: {where}.batch_ms times must be > 0 ms")
    if any(b2 <= b1 or t2 < t1 for (b1, t1), (b2, t2) in itertools.pairwise(pts)):
        raise ConfigError(f"profile: {where}.batch_ms times must not fall as the batch grows")
    max_batch = int(d.get("max_batch", pts[-1][0]))
    if max_batch > pts[-1][0] or max_batch < 1:
        raise ConfigError(f"profile: {where}.max_batch must be in 1..{pts[-1][0]} (largest listed)")
    return TypeProfile(tuple(b for b, _ in pts), tuple(t for _, t in pts), max_batch,
                       str(d.get("source", "")))


def parse_profile(raw: Any) -> Profile:
    if not isinstance(raw, dict):
        raise ConfigError("profile: top level must be a JSON object")
    if "model" not in raw or "instances" not in raw:
        raise ConfigError("profile: needs 'model' and 'instances' fields")
    inst = raw["instances"]
    if not isinstance(inst, dict) or not inst:
        raise ConfigError("profile: 'instances' must be a non-empty object keyed by type")
    instances = {k: _type_profile(v, f"instances[{k!r}]") for k, v in inst.items()}
    lam = None
    if raw.get("lambda") is not None:
        ld = raw["lambda"]
        lam = LambdaProfile(float(ld.get("memory_mb", 3008)), _type_profile(ld, "lambda"),
                            float(ld.get("parallel_fraction", 0.85)))
    cv = raw.get("service_cv", DEFAULT_SERVICE_CV)
    if not isinstance(cv, int | float) or isinstance(cv, bool) or not 0 <= cv <= 10:
        raise ConfigError(f"profile: service_cv must be a number in 0..10, got {cv!r}")
    return Profile(str(raw["model"]), instances, lam, str(raw.get("source", "")),
                   service_cv=float(cv))


def profile_from_measurements(
    model: str, instance_type: str, batch_ms: dict[int, float], source: str = "measured",
    max_batch: int | None = None,
) -> Profile:
    """A one-type profile from measured batch times (what ``mark profile`` writes)."""
    raw = {"model": model, "source": source,
           "instances": {instance_type: {"batch_ms": {str(b): float(t) for b, t in
                                                     batch_ms.items()},
                                         "max_batch": max_batch or max(batch_ms)}}}
    return parse_profile(raw)


def shipped_profiles() -> list[str]:
    """Names of the profiles shipped in ``mark/core/data/profiles``."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


def load_profile(path_or_name: str | Path) -> Profile:
    """Load a profile from a JSON path or a shipped name (see :func:`shipped_profiles`)."""
    p = Path(path_or_name)
    if not p.suffix and not p.exists():
        if str(path_or_name) not in shipped_profiles():
            raise ConfigError(
                f"unknown profile {str(path_or_name)!r}; shipped: {shipped_profiles()} "
                "(or give a path to a JSON file)"
            )
        return _load_shipped(str(path_or_name))
    return _load(p)


@lru_cache(maxsize=16)
def _load_shipped(name: str) -> Profile:
    return _load(PROFILE_DIR / f"{name}.json")


# the largest profile file read (bytes); shipped ones are a few KB
MAX_PROFILE_BYTES = 16 * 1024 * 1024


def _load(p: Path) -> Profile:
    """Parse the profile file ``p``: a regular file of at most :data:`MAX_PROFILE_BYTES`
    (a name reaches here from the admin API too: ``/dev/zero`` must not be read for ever,
    nor a FIFO block the loop at open)."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ConfigError(f"profile file not found: {p}") from None
    except OSError as exc:
        raise ConfigError(f"profile {p} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigError(f"profile {p} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(MAX_PROFILE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"profile {p} cannot be read: {exc.strerror}") from None
    if len(data) > MAX_PROFILE_BYTES:
        raise ConfigError(f"profile {p} is larger than {MAX_PROFILE_BYTES} bytes")
    try:
        raw = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"profile {p} is not valid JSON: {exc}") from exc
    return parse_profile(raw)
