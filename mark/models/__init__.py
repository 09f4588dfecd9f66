"""Bundled models and the writer of Triton model repositories for them."""

from mark.models.repository import (
    MODEL_SPECS,
    ModelSpec,
    TensorSpec,
    launch_batching,
    variant_repository,
    write_model_repository,
)

__all__ = [
    "MODEL_SPECS",
    "ModelSpec",
    "TensorSpec",
    "launch_batching",
    "variant_repository",
    "write_model_repository",
]
