"""Triton Python-backend adapter of the all-MiniLM-L6-v2 sentence encoder
(:mod:`mark.models.minilm.core`).

Triton's dynamic batcher hands ``execute`` several requests at once; the core encodes their
texts as one batch and splits the embeddings back per request.
"""

import json
from typing import Any

import triton_python_backend_utils as pb_utils

from mark.models.minilm.core import MiniLMCore


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        params = json.loads(args["model_config"]).get("parameters", {})
        threads = int(params.get("torch_threads", {}).get("string_value", "2"))
        self.core = MiniLMCore(threads)

    def execute(self, requests: list[Any]) -> list[Any]:
        inputs = [{"TEXT": pb_utils.get_input_tensor_by_name(r, "TEXT").as_numpy()}
                  for r in requests]
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, v) for k, v in out.items()])
            for out in self.core.execute(inputs)
        ]
