"""The identity model's computation: OUTPUT0 = 2 * INPUT0 (FP32), request by request."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mark.models.base import Tensors


class IdentityCore:
    """Doubles ``INPUT0``; nothing to load, so its cold start is the process's alone."""

    def execute(self, requests: Sequence[Tensors]) -> list[dict[str, np.ndarray]]:
        return [{"OUTPUT0": (np.asarray(r["INPUT0"]) * 2).astype(np.float32)} for r in requests]
