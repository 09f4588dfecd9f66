"""The profiled model's computation: it takes as long as a profile says, then OUTPUT0 = INPUT0.

One ``execute`` is one batch: it sleeps the service time of the batch's size (the sum of the
requests' batch dimensions, or the request count without batching, capped at the table's
largest) and answers each request its own INPUT0 (FP32). Behind Triton the table is the
instance type's (the ``service_ms`` parameter of its config.pbtxt); in a function it is the
profile's Lambda times at the function's memory size (:func:`lambda_table_s`).
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


class ProfiledCore:
    """Sleeps ``table_s[batch]`` per batch (index = batch size, index 0 unused).

    ``batched``: requests carry a batch dimension (max_batch_size > 0); without it each
    request is one item.
    """

    def __init__(self, table_s: Sequence[float], batched: bool = True) -> None:
        if len(table_s) < 2:
            raise ConfigError("a profiled model needs service times for batch size 1 at least")
        self.table_s = [0.0, *(float(t) for t in table_s[1:])]
        self.batched = batched

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
        left = start + self.table_s[self.batch_size(requests)] - time.perf_counter()
        if left > 0:
            time.sleep(left)
        return [{"OUTPUT0": np.asarray(r["INPUT0"]).astype(np.float32)} for r in requests]
