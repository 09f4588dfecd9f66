"""The profiled model's computation: it takes as long as a profile says, then OUTPUT0 = INPUT0.

One ``execute`` is one batch: it sleeps the service time of the batch's size (the sum of the
requests' batch dimensions, or the request count without batching, capped at the table's
largest) and answers each request its own INPUT0 (FP32). Behind Triton the table is the
instance type's (the ``service_ms`` parameter of its config.pbtxt); in a function it is the
profile's Lambda times at the function's memory size (:func:`lambda_table_s`).

Behind Triton a batch's time varies as the simulator's does (the profile's ``service_cv``,
the ``service_cv`` parameter): its mean times a lognormal factor of mean 1, truncated at
``Z_MAX`` log-sds, so that live and simulated instances see the same spread and the front
end's spill prediction (which uses the means) can be wrong, as it is on a real model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from mark.core.errors import ConfigError
from mark.core.profiles import Profile
from mark.models.base import Tensors


def lambda_table_s(profile: Profile, memory_mb: float) -> list[float]:
    """Service seconds of a function with ``memory_mb`` per batch size (index 0 unused):
    the profile's Lambda times scaled to that memory (``LambdaProfile.service_s``)."""
    lam = profile.lambda_
    if lam is None:
        raise ConfigError(f"profile {profile.model!r} has no 'lambda' section: a function "
                          f"cannot emulate it; add one (memory_mb, batch_ms)")
    return [0.0] + [lam.service_s(memory_mb, b) for b in range(1, lam.points.max_batch + 1)]


#: factors are truncated at this many log-sds either side (as mark.core.queueing's)
Z_MAX = 3.0


class ProfiledCore:
    """Sleeps ``table_s[batch]`` per batch (index = batch size, index 0 unused), times a
    lognormal factor of mean 1 and coefficient of variation ``cv`` (0: exactly the table).

    ``batched``: requests carry a batch dimension (max_batch_size > 0); without it each
    request is one item.
    """

    def __init__(self, table_s: Sequence[float], batched: bool = True, cv: float = 0.0,
                 seed: int | None = None) -> None:
        if len(table_s) < 2:
            raise ConfigError("a profiled model needs service times for batch size 1 at least")
        if not 0.0 <= cv <= 10.0:
            raise ConfigError(f"a profiled model's service_cv must be in 0..10, got {cv}")
        self.table_s = [0.0, *(float(t) for t in table_s[1:])]
        self.batched = batched
        self.sigma = float(np.sqrt(np.log1p(cv * cv)))
        self._rng = np.random.default_rng(seed)

    def factor(self) -> float:
        """The next batch's service-time factor (1.0 without spread)."""
        if self.sigma == 0.0:
            return 1.0
        z = min(max(float(self._rng.standard_normal()), -Z_MAX), Z_MAX)
        return float(np.exp(self.sigma * z - 0.5 * self.sigma * self.sigma))

    def batch_size(self, requests: Sequence[Tensors]) -> int:
        """The batch the table is read at: clamped to 1..largest listed."""
        xs = [np.asarray(r["INPUT0"]) for r in requests]
        n = sum(int(x.shape[0]) if x.ndim else 1 for x in xs) if self.batched else len(xs)
        return min(max(n, 1), len(self.table_s) - 1)

    def execute(self, requests: Sequence[Tensors],
                started_at: float | None = None) -> list[dict[str, np.ndarray]]:
        """Sleeps to ``started_at`` (a ``time.perf_counter`` reading; default now) plus the
        batch's service time, so that reading the inputs counts as part of the batch."""
        start = time.perf_counter() if started_at is None else started_at
        left = start + self.table_s[self.batch_size(requests)] * self.factor() - time.perf_counter()
        if left > 0:
            time.sleep(left)
        return [{"OUTPUT0": np.asarray(r["INPUT0"]).astype(np.float32)} for r in requests]
