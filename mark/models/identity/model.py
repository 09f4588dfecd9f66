"""A trivial Triton Python-backend model for fast tests: OUTPUT0 = 2 * INPUT0 (FP32). An
adapter of :mod:`mark.models.identity.core`."""

from typing import Any

import triton_python_backend_utils as pb_utils

from mark.models.identity.core import IdentityCore


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        self.core = IdentityCore()

    def execute(self, requests: list[Any]) -> list[Any]:
        inputs = [{"INPUT0": pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()}
                  for r in requests]
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, v) for k, v in out.items()])
            for out in self.core.execute(inputs)
        ]
