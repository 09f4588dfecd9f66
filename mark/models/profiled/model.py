"""A Triton Python-backend model that emulates a profiled one: it takes as long as the profile says.

Each ``execute`` gets one dynamic batch; it sleeps the service time of that batch's size (the
sum of the requests' batch dimensions, capped at the table's largest) on the instance type it
was configured for, then answers OUTPUT0 = INPUT0 (FP32) for each request. The times come from
the model configuration's ``service_ms`` parameter (ms per batch size 1..n, comma-separated),
written by ``mark.models.repository`` from the model's profile; with ``instance_group`` count 1
one batch executes at a time, as on an instance whose cores one batch fills.
"""

import json
import time
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        raw = config["parameters"]["service_ms"]["string_value"]
        # index = batch size; index 0 unused
        self.service_s = [0.0] + [float(x) / 1000.0 for x in raw.split(",")]
        # without batching (max_batch_size 0) a request has no batch dimension: it is one item
        self.batched = int(config.get("max_batch_size", 0)) > 0

    def execute(self, requests: list[Any]) -> list[Any]:
        start = time.perf_counter()
        inputs = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
        batch = sum(int(x.shape[0]) for x in inputs) if self.batched else len(inputs)
        batch = min(max(batch, 1), len(self.service_s) - 1)
        # sleep to the batch's end, so the time spent reading inputs counts as part of it
        left = start + self.service_s[batch] - time.perf_counter()
        if left > 0:
            time.sleep(left)
        return [
            pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("OUTPUT0", x.astype(np.float32))]
            )
            for x in inputs
        ]
