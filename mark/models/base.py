"""What a bundled model computes, apart from where it runs: the contract of a model core.

A core takes the inputs of several requests at once (each a mapping of input name to numpy
array, batch dimension first when the model batches) and returns each request's outputs, in
order. It executes them as one batch, as Triton's ``execute`` does with what its dynamic
batcher formed. The same core serves behind Triton (the ``model.py`` adapters, which only
convert ``pb_utils`` tensors) and inside a function (:mod:`mark.faas.handler`), so an
instance and a function compute exactly the same thing. Cores import no Triton module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

Tensors = Mapping[str, np.ndarray]


class ModelCore(Protocol):
    """One loaded model: ``execute`` runs one batch of requests."""

    def execute(self, requests: Sequence[Tensors]) -> list[dict[str, np.ndarray]]:
        """Outputs of each request in ``requests``, in the same order."""
        ...
