"""A Triton Python-backend model that emulates a profiled one: it takes as long as the profile
says, then answers OUTPUT0 = INPUT0 (FP32). An adapter of :mod:`mark.models.profiled.core`.

The times come from the model configuration's ``service_ms`` parameter (ms per batch size
1..n, comma-separated) and their spread from ``service_cv``, written by
``mark.models.repository`` from the model's profile for the instance's type; with
``instance_group`` count 1 one batch executes at a time, as on an
instance whose cores one batch fills.
"""

import json
import time
from typing import Any

import triton_python_backend_utils as pb_utils

from mark.models.profiled.core import ProfiledCore


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        raw = config["parameters"]["service_ms"]["string_value"]
        table_s = [0.0] + [float(x) / 1000.0 for x in raw.split(",")]
        # without batching (max_batch_size 0) a request has no batch dimension: it is one item
        params = config["parameters"]
        cv = float(params["service_cv"]["string_value"]) if "service_cv" in params else 0.0
        self.core = ProfiledCore(table_s, batched=int(config.get("max_batch_size", 0)) > 0,
                                 cv=cv)

    def execute(self, requests: list[Any]) -> list[Any]:
        start = time.perf_counter()
        inputs = [{"INPUT0": pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy()}
                  for r in requests]
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, v) for k, v in out.items()])
            for out in self.core.execute(inputs, started_at=start)
        ]
