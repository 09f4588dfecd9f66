"""Write Triton model repositories (config.pbtxt + model.py) for the configured models.

One repository per launch variant (:func:`variant_repository`): the instance type (a
``profiled`` model sleeps that type's service times from its profile, written into its
config.pbtxt as the ``service_ms`` parameter) and the dynamic-batching settings the launch
asks for (None: the model configuration's). A variant is written once into
``<root>/<key>/``, where the key names the variant and ends in a hash of the files, and
reused by every later launch of the same variant (by any process sharing ``root``); it is
written into a temporary directory and renamed into place, so concurrent launches never see
or clobber half-written files.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mark.core.config import ModelConfig
from mark.core.errors import ConfigError
from mark.core.profiles import TypeProfile, load_profile

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
    # sleeps its profile's service time per batch; the identity model's tensors
    "profiled": ModelSpec(
        "profiled",
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


def type_profile(model: ModelConfig, instance_type: str) -> TypeProfile:
    """A ``profiled`` model's service times on ``instance_type`` (``ConfigError`` naming the
    profile's types when it has none for that type)."""
    if model.profile is None:
        raise ConfigError(f"model {model.name!r}: kind 'profiled' needs `profile`")
    return load_profile(model.profile).of(instance_type)


def launch_batching(model: ModelConfig, instance_type: str, max_batch_size: int | None = None,
                    max_queue_delay_us: int | None = None) -> tuple[int, int]:
    """The (max_batch_size, max_queue_delay_us) an instance of ``instance_type`` serves
    ``model`` with: the launch's settings, None taking the model configuration's.

    A ``profiled`` model cannot batch beyond its profile's largest batch on that type: the
    configured size is clamped to it; a larger size asked for by the launch is a
    ``ConfigError``.
    """
    mbs = model.max_batch_size if max_batch_size is None else max_batch_size
    delay = model.max_queue_delay_us if max_queue_delay_us is None else max_queue_delay_us
    if mbs < 0 or delay < 0:
        raise ConfigError(f"launch of {model.name!r}: max_batch_size ({mbs}) and "
                          f"max_queue_delay_us ({delay}) must be >= 0")
    if model.kind == "profiled":
        top = type_profile(model, instance_type).max_batch
        if mbs > top:
            if max_batch_size is not None:
                raise ConfigError(
                    f"launch of {model.name!r} on {instance_type}: max_batch_size {mbs} exceeds "
                    f"the largest batch of profile {model.profile!r} on that type ({top})"
                )
            mbs = top
    return mbs, delay


def _parameter(key: str, value: str) -> str:
    value = value.replace("\\", "\\\\").replace('"', '\\"')  # a profile path may hold either
    return f'parameters: {{ key: "{key}" value: {{ string_value: "{value}" }} }}\n'


def config_pbtxt(model: ModelConfig, instance_type: str = "local",
                 max_batch_size: int | None = None, max_queue_delay_us: int | None = None) -> str:
    """``model``'s config.pbtxt for an instance of ``instance_type`` with these batching
    settings (None: the model configuration's; see :func:`launch_batching`)."""
    spec = MODEL_SPECS[model.kind]
    mbs, delay = launch_batching(model, instance_type, max_batch_size, max_queue_delay_us)
    text = f'name: "{model.name}"\nbackend: "python"\nmax_batch_size: {mbs}\n'
    text += _tensor_block("input", spec.inputs) + _tensor_block("output", spec.outputs)
    if model.dynamic_batching and mbs > 0:
        text += f"dynamic_batching {{ max_queue_delay_microseconds: {delay} }}\n"
    # one execution at a time: a batch has the instance's cores (profiled: its service time)
    text += "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
    text += _parameter("torch_threads", str(model.torch_threads))
    if model.kind == "profiled":
        table_ms = type_profile(model, instance_type).table_s()[1:] * 1000.0
        text += _parameter("service_ms", ",".join(f"{t:.3f}" for t in table_ms))
        text += _parameter("service_cv", f"{load_profile(str(model.profile)).service_cv:g}")
        text += _parameter("instance_type", instance_type)
        text += _parameter("profile", str(model.profile))
    return text


def _model_files(models: list[ModelConfig], instance_type: str, max_batch_size: int | None,
                 max_queue_delay_us: int | None) -> dict[str, str]:
    files: dict[str, str] = {}
    for model in models:
        if model.repository is not None:  # served from its own repository: linked, not written
            files[f"{model.name}.link"] = str(source_dir(model))
            continue
        files[f"{model.name}/config.pbtxt"] = config_pbtxt(
            model, instance_type, max_batch_size, max_queue_delay_us)
        files[f"{model.name}/1/model.py"] = (_HERE / model.kind / "model.py").read_text()
    return files


def source_dir(model: ModelConfig) -> Path:
    """The model's folder in its own repository (``repository``/``name``); ConfigError naming
    the field when it is not a Triton model folder."""
    assert model.repository is not None
    folder = Path(model.repository).expanduser().resolve() / model.name
    if not (folder / "config.pbtxt").is_file():
        raise ConfigError(f"model {model.name!r}: repository: {model.repository!r} must be a "
                          f"Triton model repository holding {model.name}/config.pbtxt "
                          f"(looked for {folder / 'config.pbtxt'})")
    return folder


def _write_files(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        if rel.endswith(".link"):  # a model folder of the user's repository
            (root / rel.removesuffix(".link")).symlink_to(text, target_is_directory=True)
            continue
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def write_model_repository(root: Path, models: list[ModelConfig],
                           instance_type: str = "local") -> Path:
    """(Re)write ``root`` as a model repository holding ``models`` with their configured
    batching, for instances of ``instance_type``; returns ``root``."""
    files = _model_files(models, instance_type, None, None)
    if root.exists():
        shutil.rmtree(root)
    _write_files(root, files)
    return root


def variant_key(instance_type: str, max_batch_size: int | None = None,
                max_queue_delay_us: int | None = None, digest: str = "") -> str:
    """The directory name of a repository variant, e.g. ``c5.large-b16-d2000-<hash>``
    (``b-``/``d-``: each model's configured value)."""
    safe_type = re.sub(r"[^A-Za-z0-9._-]", "_", instance_type) or "_"
    b = "-" if max_batch_size is None else str(max_batch_size)
    d = "-" if max_queue_delay_us is None else str(max_queue_delay_us)
    key = f"{safe_type}-b{b}-d{d}"
    return f"{key}-{digest}" if digest else key


def variant_repository(root: Path, models: list[ModelConfig], instance_type: str,
                       max_batch_size: int | None = None,
                       max_queue_delay_us: int | None = None) -> Path:
    """The model repository for a launch of ``models`` on ``instance_type`` with these
    batching settings: ``root/<variant_key>``, written now unless it exists already.

    Raises ``ConfigError`` when a ``profiled`` model's profile lacks ``instance_type`` (the
    message names its types) or the launch asks for a batch larger than the profile's.
    """
    files = _model_files(models, instance_type, max_batch_size, max_queue_delay_us)
    h = hashlib.sha256()
    for rel in sorted(files):
        h.update(rel.encode() + b"\0" + files[rel].encode() + b"\0")
    final = root / variant_key(instance_type, max_batch_size, max_queue_delay_us,
                               h.hexdigest()[:12])
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.tmp-"))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would keep the repository from other users
        _write_files(tmp, files)
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():  # not another writer that won the race with the same files
            raise
    finally:
        if tmp.exists():
            with contextlib.suppress(OSError):
                shutil.rmtree(tmp)
    return final


def model_metadata(model: ModelConfig) -> dict[str, object]:
    """The KServe v2 model metadata Triton answers for ``model`` (``GET /v2/models/{m}``),
    known without an instance: a front end with no instance of a model (FaaS alone) still
    validates its requests."""
    spec = MODEL_SPECS[model.kind]
    lead = [-1] if model.max_batch_size > 0 else []

    def tensors(ts: tuple[TensorSpec, ...]) -> list[dict[str, object]]:
        return [{"name": t.name, "datatype": v2_datatype(t), "shape": [*lead, *t.dims]}
                for t in ts]

    return {"name": model.name, "versions": ["1"], "platform": "python",
            "inputs": tensors(spec.inputs), "outputs": tensors(spec.outputs)}



# Triton config type -> v2 datatype, where the names differ
_V2_OF_CONFIG = {"TYPE_STRING": "BYTES", "TYPE_BOOL": "BOOL"}


def v2_datatype(spec: TensorSpec) -> str:
    """The v2 datatype of a tensor of the model configuration (``TYPE_FP32`` -> ``FP32``)."""
    return _V2_OF_CONFIG.get(spec.triton_type, spec.triton_type.removeprefix("TYPE_"))
