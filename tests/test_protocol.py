"""Validation of v2 infer bodies against model metadata, without servers."""

import json
import struct

import numpy as np
import pytest

from frontend.protocol import ModelMetadata, parse_infer
from mark.core.errors import BadRequest

IDENT = ModelMetadata.from_triton({
    "name": "identity",
    "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 16]}],
    "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 16]}],
})
TEXT = ModelMetadata.from_triton({
    "name": "minilm",
    "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [-1, 1]}],
    "outputs": [{"name": "EMBEDDING", "datatype": "FP32", "shape": [-1, 384]}],
})


def body(**tensor: object) -> bytes:
    t = {"name": "INPUT0", "datatype": "FP32", "shape": [2, 16], "data": [0.5] * 32}
    t.update(tensor)
    return json.dumps({"inputs": [t]}).encode()


def test_valid_json_request_gives_batch_size() -> None:
    assert parse_infer(body(), None, IDENT).batch_size == 2


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"inputs": []}', "non-empty list"),
        (body(name="X"), "accepted: ['INPUT0']"),
        (body(datatype="FP64"), "expects FP32"),
        (body(shape=[2, 8]), "expects [-1, 16]"),
        (body(shape=[2, -3]), "non-negative integers"),
        (body(data=[0.5] * 31), "needs 32"),
        (body(data=["a"] * 32), "must be numbers"),
    ],
)
def test_bad_requests_name_the_field(raw: bytes, needle: str) -> None:
    with pytest.raises(BadRequest) as exc:
        parse_infer(raw, None, IDENT)
    assert needle in exc.value.message


def binary_body(arr: np.ndarray, size: int | None = None) -> tuple[bytes, str]:
    raw = arr.tobytes()
    header = json.dumps({"inputs": [{
        "name": "INPUT0", "datatype": "FP32", "shape": list(arr.shape),
        "parameters": {"binary_data_size": len(raw) if size is None else size},
    }]}).encode()
    return header + raw, str(len(header))


def test_binary_extension_sizes_are_checked() -> None:
    b, hl = binary_body(np.ones((3, 16), np.float32))
    assert parse_infer(b, hl, IDENT).batch_size == 3
    with pytest.raises(BadRequest, match="does not match shape"):
        parse_infer(*binary_body(np.ones((3, 16), np.float32), size=188), IDENT)
    with pytest.raises(BadRequest, match="exceeds the binary data left"):
        parse_infer(b[:-4], hl, IDENT)
    with pytest.raises(BadRequest, match="outside the body"):
        parse_infer(b, str(len(b) + 1), IDENT)
    with pytest.raises(BadRequest, match="after the last input"):
        parse_infer(b + b"xx", hl, IDENT)


def test_binary_bytes_tensor_counts_elements() -> None:
    items = [b"hello", b"world"]
    raw = b"".join(struct.pack("<I", len(s)) + s for s in items)
    header = json.dumps({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [2, 1],
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    assert parse_infer(header + raw, str(len(header)), TEXT).batch_size == 2
    bad = json.dumps({"inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [3, 1],
                                  "parameters": {"binary_data_size": len(raw)}}]}).encode()
    with pytest.raises(BadRequest, match="2 BYTES elements"):
        parse_infer(bad + raw, str(len(bad)), TEXT)


def test_unknown_output_is_refused() -> None:
    doc = json.loads(body())
    doc["outputs"] = [{"name": "NOPE"}]
    with pytest.raises(BadRequest, match="accepted: \\['OUTPUT0'\\]"):
        parse_infer(json.dumps(doc).encode(), None, IDENT)
