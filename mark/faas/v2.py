"""KServe v2 inference bodies inside a function: requests decoded to numpy, responses encoded
as Triton writes them (so ``tritonclient.http``'s ``InferResult`` parses them unchanged).

Both body forms, each way: plain JSON tensors, and the binary-tensor extension (a JSON
header of ``Inference-Header-Content-Length`` bytes, then each tensor's raw bytes, its size
in ``parameters.binary_data_size``; BYTES elements are 4-byte little-endian length-prefixed).
Which outputs come back, and in which form, follows Triton: the request's ``outputs`` list
(each binary when its ``parameters.binary_data`` is true), else every output of the model,
binary when the request's ``parameters.binary_data_output`` is true.

Every malformed body raises ``BadRequest`` naming the field and what is accepted.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from mark.core.config import ModelConfig
from mark.core.errors import BadRequest
from mark.core.v2 import split_body
from mark.models.repository import MODEL_SPECS, TensorSpec, v2_datatype

# v2 datatype -> numpy dtype; BYTES is an object array of bytes
NUMPY_TYPES: dict[str, Any] = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    "BYTES": np.object_,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True, slots=True)
class V2Request:
    """A decoded, validated inference request."""

    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: tuple[RequestedOutput, ...]
    batch_size: int  # rows of the batch dimension (1 without batching)


def _flatten(data: Any, datatype: str, where: str) -> list[Any]:
    """The scalars of a (possibly nested) JSON list in row-major order, type-checked."""
    out: list[Any] = []
    stack = [data]
    want_str, want_bool = datatype == "BYTES", datatype == "BOOL"
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
            continue
        ok = (isinstance(item, str) if want_str else isinstance(item, bool) if want_bool
              else isinstance(item, int | float) and not isinstance(item, bool))
        if not ok:
            kind = "strings" if want_str else "booleans" if want_bool else "numbers"
            raise BadRequest(f"{where}: data for datatype {datatype} must be {kind}, got {item!r}")
        out.append(item.encode("utf-8") if want_str else item)
    return out


def _bytes_elements(buf: bytes | memoryview, where: str) -> list[bytes]:
    items, pos, end = [], 0, len(buf)
    while pos < end:
        if pos + 4 > end:
            raise BadRequest(f"{where}: truncated BYTES element length prefix")
        (size,) = struct.unpack_from("<I", buf, pos)
        if pos + 4 + size > end:
            raise BadRequest(f"{where}: BYTES element overruns binary_data_size")
        items.append(bytes(buf[pos + 4 : pos + 4 + size]))
        pos += 4 + size
    return items


def _expected_shape(spec: TensorSpec, batched: bool) -> list[int]:
    return ([-1] if batched else []) + list(spec.dims)


def _decode_tensor(tensor: Any, i: int, specs: Mapping[str, TensorSpec], model: ModelConfig,
                   binary: memoryview, offset: int) -> tuple[str, np.ndarray, int]:
    """One input: (name, array, offset past its binary data)."""
    if not isinstance(tensor, dict):
        raise BadRequest(f"inputs[{i}] must be an object with name, datatype, shape, data")
    name = tensor.get("name")
    spec = specs.get(name) if isinstance(name, str) else None
    if spec is None or not isinstance(name, str):
        raise BadRequest(f"inputs[{i}].name {name!r} is not an input of model {model.name!r}; "
                         f"accepted: {sorted(specs)}")
    where = f"input {name!r}"
    want = v2_datatype(spec)
    if tensor.get("datatype") != want:
        raise BadRequest(f"{where}: datatype {tensor.get('datatype')!r} not accepted; model "
                         f"{model.name!r} expects {want}")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise BadRequest(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    expected = _expected_shape(spec, model.max_batch_size > 0)
    if len(shape) != len(expected) or any(e != -1 and d != e for d, e in zip(shape, expected,
                                                                                strict=True)):
        raise BadRequest(f"{where}: shape {shape} not accepted; model {model.name!r} expects "
                         f"{expected} (-1 = any size)")
    count = math.prod(shape)
    params = tensor.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest(f"{where}: parameters must be an object")
    size = params.get("binary_data_size")
    if size is None:
        if "data" not in tensor:
            raise BadRequest(f"{where}: needs 'data' or parameters.binary_data_size")
        flat = _flatten(tensor["data"], want, where)
        if len(flat) != count:
            raise BadRequest(f"{where}: data has {len(flat)} elements but shape {shape} "
                             f"needs {count}")
        try:
            arr = np.array(flat, dtype=NUMPY_TYPES[want]).reshape(shape)
        except (OverflowError, ValueError) as exc:
            raise BadRequest(f"{where}: data does not fit datatype {want}: {exc}") from exc
        return name, arr, offset
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BadRequest(f"{where}: binary_data_size must be a non-negative integer")
    chunk = binary[offset : offset + size]
    if len(chunk) != size:
        raise BadRequest(f"{where}: binary_data_size {size} exceeds the binary data left "
                         f"({len(binary) - offset} bytes)")
    if want == "BYTES":
        items = _bytes_elements(chunk, where)
        if len(items) != count:
            raise BadRequest(f"{where}: {len(items)} BYTES elements for shape {shape} ({count})")
        arr = np.empty(count, dtype=np.object_)
        arr[:] = items
        return name, arr.reshape(shape), offset + size
    dtype = np.dtype(NUMPY_TYPES[want]).newbyteorder("<")
    if size != count * dtype.itemsize:
        raise BadRequest(f"{where}: binary_data_size {size} does not match shape {shape} of "
                         f"{want} ({count * dtype.itemsize} bytes)")
    return name, np.frombuffer(chunk, dtype=dtype).reshape(shape), offset + size


def _requested_outputs(doc: dict[str, Any], model: ModelConfig) -> tuple[RequestedOutput, ...]:
    known = [t.name for t in MODEL_SPECS[model.kind].outputs]
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise BadRequest("'parameters' must be an object")
    outputs = doc.get("outputs")
    if outputs is None:
        binary = params.get("binary_data_output", False) is True
        return tuple(RequestedOutput(n, binary) for n in known)
    if not isinstance(outputs, list):
        raise BadRequest("'outputs' must be a list")
    wanted: list[RequestedOutput] = []
    for j, out in enumerate(outputs):
        name = out.get("name") if isinstance(out, dict) else None
        if name not in known or not isinstance(out, dict) or not isinstance(name, str):
            raise BadRequest(f"outputs[{j}].name {name!r} is not an output of model "
                             f"{model.name!r}; accepted: {known}")
        oparams = out.get("parameters") or {}
        if not isinstance(oparams, dict):
            raise BadRequest(f"output {name!r}: parameters must be an object")
        if oparams.get("classification"):
            raise BadRequest(f"output {name!r}: the classification extension is not supported")
        wanted.append(RequestedOutput(name, oparams.get("binary_data", False) is True))
    return tuple(wanted)


def decode_request(body: bytes, header_length: str | None, model: ModelConfig) -> V2Request:
    """Decode and validate an infer request ``body`` for ``model``.

    ``header_length`` is the ``Inference-Header-Content-Length`` header (None: all JSON).
    Batch sizes above the model's ``max_batch_size`` are refused, as Triton refuses them.
    """
    doc, binary = split_body(body, header_length)
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("'inputs' must be a non-empty list of tensors")
    specs = {t.name: t for t in MODEL_SPECS[model.kind].inputs}
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for i, tensor in enumerate(raw_inputs):
        name, arr, offset = _decode_tensor(tensor, i, specs, model, binary, offset)
        if name in inputs:
            raise BadRequest(f"input {name!r} given twice")
        inputs[name] = arr
    if offset != len(binary):
        raise BadRequest(f"{len(binary) - offset} bytes of binary data after the last input's "
                         f"binary_data_size")
    missing = sorted(set(specs) - set(inputs))
    if missing:
        raise BadRequest(f"model {model.name!r} needs inputs {missing}")
    batch = 1
    if model.max_batch_size > 0:
        rows = {int(a.shape[0]) for a in inputs.values()}
        if len(rows) != 1:
            raise BadRequest(f"inputs disagree on the batch dimension: {sorted(rows)}")
        batch = rows.pop()
        if not 1 <= batch <= model.max_batch_size:
            raise BadRequest(f"batch size {batch} not accepted; model {model.name!r} takes "
                             f"1..{model.max_batch_size} (max_batch_size)")
    request_id = doc.get("id")
    return V2Request(request_id if isinstance(request_id, str) else None, inputs,
                     _requested_outputs(doc, model), batch)


def _json_data(arr: np.ndarray, datatype: str) -> Any:
    flat = arr.reshape(-1)
    if datatype == "BYTES":
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in flat]
    return flat.tolist()


def _binary_data(arr: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for x in arr.reshape(-1):
            b = x if isinstance(x, bytes) else str(x).encode("utf-8")
            parts.append(struct.pack("<I", len(b)) + b)
        return b"".join(parts)
    dtype = np.dtype(NUMPY_TYPES[datatype]).newbyteorder("<")
    return np.ascontiguousarray(arr, dtype=dtype).tobytes()


def encode_response(model: ModelConfig, request: V2Request,
                    outputs: Mapping[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers (content-type, and
    inference-header-content-length when any output is binary), as Triton writes them."""
    types = {t.name: v2_datatype(t) for t in MODEL_SPECS[model.kind].outputs}
    doc: dict[str, Any] = {"model_name": model.name, "model_version": "1"}
    if request.id is not None:
        doc["id"] = request.id
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for want in request.outputs:
        arr = np.asarray(outputs[want.name])
        dt = types[want.name]
        t: dict[str, Any] = {"name": want.name, "datatype": dt, "shape": list(arr.shape)}
        if want.binary:
            blob = _binary_data(arr, dt)
            t["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            t["data"] = _json_data(arr, dt)
        tensors.append(t)
    doc["outputs"] = tensors
    header = orjson.dumps(doc)
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {"content-type": "application/octet-stream",
                                      "inference-header-content-length": str(len(header))}
