"""Write a Triton model repository (config.pbtxt + model.py) for the configured models."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from mark.core.config import ModelConfig

_HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class TensorSpec:
    name: str
    triton_type: str  # TYPE_FP32, TYPE_STRING, ...
    dims: tuple[int, ...]  # without the batch dimension


@dataclass(frozen=True)
class ModelSpec:
    kind: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


MODEL_SPECS: dict[str, ModelSpec] = {
    "minilm": ModelSpec(
        "minilm",
        inputs=(TensorSpec("TEXT", "TYPE_STRING", (1,)),),
        outputs=(TensorSpec("EMBEDDING", "TYPE_FP32", (384,)),),
    ),
    "identity": ModelSpec(
        "identity",
        inputs=(TensorSpec("INPUT0", "TYPE_FP32", (16,)),),
        outputs=(TensorSpec("OUTPUT0", "TYPE_FP32", (16,)),),
    ),
}


def _tensor_block(kind: str, tensors: tuple[TensorSpec, ...]) -> str:
    items = ",\n".join(
        f'  {{ name: "{t.name}" data_type: {t.triton_type} dims: [ {", ".join(map(str, t.dims))} ] }}'
        for t in tensors
    )
    return f"{kind} [\n{items}\n]\n"


def config_pbtxt(model: ModelConfig) -> str:
    spec = MODEL_SPECS[model.kind]
    text = f'name: "{model.name}"\nbackend: "python"\nmax_batch_size: {model.max_batch_size}\n'
    text += _tensor_block("input", spec.inputs) + _tensor_block("output", spec.outputs)
    if model.dynamic_batching:
        text += f"dynamic_batching {{ max_queue_delay_microseconds: {model.max_queue_delay_us} }}\n"
    text += "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
    text += (
        'parameters: { key: "torch_threads" value: { string_value: "'
        + str(model.torch_threads)
        + '" } }\n'
    )
    return text


def write_model_repository(root: Path, models: list[ModelConfig]) -> Path:
    """(Re)write ``root`` as a model repository holding ``models``; returns ``root``."""
    if root.exists():
        shutil.rmtree(root)
    for model in models:
        mdir = root / model.name
        (mdir / "1").mkdir(parents=True)
        (mdir / "config.pbtxt").write_text(config_pbtxt(model))
        shutil.copy2(_HERE / model.kind / "model.py", mdir / "1" / "model.py")
    return root
