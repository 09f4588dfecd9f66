"""KServe v2 inference requests: parsing and validation against a model's metadata.

Validation happens before a request is forwarded, so a bad request costs no instance time
and gets a 400 that names the field and what is accepted. Both body forms are handled:
plain JSON tensors, and the binary-tensor extension (a JSON header of
``Inference-Header-Content-Length`` bytes followed by raw tensor bytes, each input's size in
``parameters.binary_data_size``). The body is never re-serialised; it is forwarded as is.
A compressed body (``Content-Encoding: gzip|deflate``) is validated decompressed, with the
output bounded by the body limit (:func:`decode_body`).
"""

from __future__ import annotations

import asyncio
import math
import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from mark.core.errors import BadRequest, PayloadTooLarge
from mark.core.v2 import split_body

# bytes per element of each fixed-size v2 datatype; BYTES is length-prefixed
DTYPE_SIZES: dict[str, int] = {
    "BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8,
    "INT8": 1, "INT16": 2, "INT32": 4, "INT64": 8,
    "FP16": 2, "BF16": 2, "FP32": 4, "FP64": 8,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class TensorMeta:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 = any size


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    name: str
    inputs: dict[str, TensorMeta]
    outputs: dict[str, TensorMeta]
    raw: dict[str, Any]  # the instance's metadata document, served back to clients
    batched: bool  # first dimension is the batch dimension

    @classmethod
    def from_triton(cls, doc: dict[str, Any]) -> ModelMetadata:
        def tensors(key: str) -> dict[str, TensorMeta]:
            return {
                t["name"]: TensorMeta(t["name"], t["datatype"], tuple(int(d) for d in t["shape"]))
                for t in doc.get(key, [])
            }

        inputs = tensors("inputs")
        batched = bool(inputs) and all(t.shape[:1] == (-1,) for t in inputs.values())
        return cls(doc["name"], inputs, tensors("outputs"), doc, batched)


@dataclass(frozen=True, slots=True)
class InferInfo:
    """What the router needs from a valid request."""

    batch_size: int  # requests' worth of work (rows of the batch dimension)


# output produced between two yields to the event loop while decompressing a request body
DECODE_CHUNK_BYTES = 64 * 1024


async def decode_body(
    body: bytes, encoding: str | None, limit_bytes: int, chunk_bytes: int = DECODE_CHUNK_BYTES,
) -> bytes | bytearray:
    """The body decoded from its ``Content-Encoding``, at most ``limit_bytes`` of it.

    A compressed body may expand a thousandfold, so inflating is bounded as it runs:
    ``chunk_bytes`` of output at a time (``decompressobj`` with ``max_length``), yielding to
    the event loop between chunks so other requests keep being served. A first pass only
    measures the output, holding one chunk at a time, and stops with 413 as soon as it passes
    ``limit_bytes``; only a body found within the limit is inflated again and kept. So a bomb
    costs one chunk of memory and ``limit_bytes`` of inflating, and a good body twice its
    (small) inflating time. Raises ``BadRequest`` for an unknown encoding, corrupt data or
    data after the end of the stream (the body is forwarded as sent, so all of it is checked).
    """
    enc = (encoding or "").strip().lower()
    if not enc or enc == "identity":
        return body
    if enc == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif enc == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise BadRequest(
            f"Content-Encoding {_show(encoding)} not accepted; accepted: gzip, deflate, identity"
        )
    size = 0
    async for piece in _inflate(body, enc, wbits, limit_bytes, chunk_bytes):
        size += len(piece)
    out = bytearray()  # grows in place (realloc), so no second copy at the end
    async for piece in _inflate(body, enc, wbits, size, chunk_bytes):
        out += piece
    return out


async def _inflate(
    body: bytes, enc: str, wbits: int, limit_bytes: int, chunk_bytes: int,
) -> AsyncIterator[bytes]:
    """Pieces of at most ``chunk_bytes`` of ``body`` inflated; 413 past ``limit_bytes``."""
    inflater = zlib.decompressobj(wbits)
    data, produced = body, 0
    while True:
        try:
            piece = inflater.decompress(data, min(chunk_bytes, limit_bytes - produced + 1))
        except zlib.error as exc:
            raise BadRequest(f"body is not valid {enc} data: {exc}") from exc
        produced += len(piece)
        if produced > limit_bytes:
            raise PayloadTooLarge(
                f"request body too large: the {enc} body decompresses to more than "
                f"frontend.max_body_bytes = {limit_bytes} bytes"
            )
        yield piece
        data = inflater.unconsumed_tail
        if inflater.eof or (not data and not piece):
            break
        await asyncio.sleep(0)  # let other requests run between chunks
    if not inflater.eof:
        raise BadRequest(f"body is not valid {enc} data: incomplete or truncated stream")
    # the body is forwarded as sent, so what was validated must be all of it: data after
    # the stream's end (a second gzip member, say) would reach the instance unchecked
    trailing = len(inflater.unused_data) + len(inflater.unconsumed_tail)
    if trailing:
        raise BadRequest(f"body is not valid {enc} data: {trailing} bytes after the end of the "
                         f"{enc} stream (one stream per body)")


# longest repr of a client's value quoted back in an error message (characters)
SHOW_CHARS = 120


def _show(value: Any) -> str:
    """``repr(value)`` cut to :data:`SHOW_CHARS`: an error names what was wrong without
    echoing a megabyte name or shape back (nor building its whole repr first)."""
    if isinstance(value, str | bytes) and len(value) > SHOW_CHARS:
        return f"{value[:SHOW_CHARS]!r}... ({len(value)} long)"
    if isinstance(value, list | dict) and len(value) > 16:
        kind = type(value).__name__
        return f"<a {kind} of {len(value)} items>"
    text = repr(value)
    return text if len(text) <= SHOW_CHARS else f"{text[:SHOW_CHARS]}..."


def _count_json(data: Any, datatype: str, where: str) -> int:
    """Number of scalars in a (possibly nested) JSON list, checking their JSON type.

    Walks the lists in place with a stack of iterators (as deep as the nesting, which the
    JSON parser bounds), so counting costs no copy of the elements."""
    n = 0
    want_str = datatype == "BYTES"
    want_bool = datatype == "BOOL"
    stack = [iter((data,))]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            n += 1
            ok = (
                isinstance(item, str)
                if want_str
                else isinstance(item, bool)
                if want_bool
                else isinstance(item, int | float) and not isinstance(item, bool)
            )
            if not ok:
                kind = "strings" if want_str else "booleans" if want_bool else "numbers"
                raise BadRequest(f"{where}: data for datatype {datatype} must be {kind}, "
                                 f"got {_show(item)}")
        else:
            stack.pop()
    return n


def _count_bytes_elements(buf: memoryview, where: str) -> int:
    """Elements of a BYTES tensor in binary form (4-byte little-endian length prefixes)."""
    n, pos, end = 0, 0, len(buf)
    while pos < end:
        if pos + 4 > end:
            raise BadRequest(f"{where}: truncated BYTES element length prefix")
        (size,) = struct.unpack_from("<I", buf, pos)
        pos += 4 + size
        n += 1
    if pos != end:
        raise BadRequest(f"{where}: BYTES element overruns binary_data_size")
    return n


def parse_infer(
    raw: bytes | bytearray,
    header_length: str | None,
    meta: ModelMetadata,
) -> InferInfo:
    """Validate an infer request body against ``meta``; return what routing needs.

    ``raw`` is the body as sent, or decoded by :func:`decode_body` when it was compressed.
    """
    model = meta.name
    doc, binary = split_body(raw, header_length)
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("'inputs' must be a non-empty list of tensors")

    seen: set[str] = set()
    offset = 0
    batch = 1
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise BadRequest(f"inputs[{i}] must be an object with name, datatype, shape, data")
        name = tensor.get("name")
        expected = meta.inputs.get(name) if isinstance(name, str) else None
        if expected is None or not isinstance(name, str):
            raise BadRequest(
                f"inputs[{i}].name {_show(name)} is not an input of model {model!r}; "
                f"accepted: {sorted(meta.inputs)}"
            )
        if name in seen:
            raise BadRequest(f"input {name!r} given twice")
        seen.add(name)
        where = f"input {name!r}"
        dtype = tensor.get("datatype")
        if dtype != expected.datatype:
            raise BadRequest(
                f"{where}: datatype {_show(dtype)} not accepted; model {model!r} expects "
                f"{expected.datatype}"
            )
        shape = tensor.get("shape")
        if (
            not isinstance(shape, list)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            raise BadRequest(
                f"{where}: shape must be a list of non-negative integers, got {_show(shape)}"
            )
        if len(shape) != len(expected.shape) or any(
            e != -1 and d != e for d, e in zip(shape, expected.shape, strict=True)
        ):
            raise BadRequest(
                f"{where}: shape {_show(shape)} not accepted; model {model!r} expects "
                f"{list(expected.shape)} (-1 = any size)"
            )
        count = math.prod(shape)
        params = tensor.get("parameters") or {}
        if not isinstance(params, dict):
            raise BadRequest(f"{where}: parameters must be an object")
        bsize = params.get("binary_data_size")
        if bsize is not None:
            if not isinstance(bsize, int) or isinstance(bsize, bool) or bsize < 0:
                raise BadRequest(f"{where}: binary_data_size must be a non-negative integer")
            if header_length is None:
                raise BadRequest(
                    f"{where}: binary_data_size given but no Inference-Header-Content-Length header"
                )
            chunk = binary[offset : offset + bsize]
            if len(chunk) != bsize:
                raise BadRequest(
                    f"{where}: binary_data_size {bsize} exceeds the binary data left "
                    f"({len(binary) - offset} bytes)"
                )
            offset += bsize
            if dtype == "BYTES":
                got = _count_bytes_elements(chunk, where)
                if got != count:
                    raise BadRequest(f"{where}: {got} BYTES elements for shape {shape} ({count})")
            elif bsize != count * DTYPE_SIZES[dtype]:
                raise BadRequest(
                    f"{where}: binary_data_size {bsize} does not match shape {shape} of {dtype} "
                    f"({count * DTYPE_SIZES[dtype]} bytes)"
                )
        else:
            if "data" not in tensor:
                raise BadRequest(f"{where}: needs 'data' or parameters.binary_data_size")
            got = _count_json(tensor["data"], dtype, where)
            if got != count:
                raise BadRequest(
                    f"{where}: data has {got} elements but shape {shape} needs {count}"
                )
        if meta.batched and shape:
            batch = max(batch, shape[0])
    if offset != len(binary):
        raise BadRequest(
            f"{len(binary) - offset} bytes of binary data after the last input's binary_data_size"
        )
    missing = sorted(set(meta.inputs) - seen)
    if missing:
        raise BadRequest(f"model {model!r} needs inputs {missing}")
    outputs = doc.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise BadRequest("'outputs' must be a list")
        for j, out in enumerate(outputs):
            oname = out.get("name") if isinstance(out, dict) else None
            if not isinstance(oname, str) or oname not in meta.outputs:  # a list: unhashable
                raise BadRequest(
                    f"outputs[{j}].name {_show(oname)} is not an output of model {model!r}; "
                    f"accepted: {sorted(meta.outputs)}"
                )
    return InferInfo(batch_size=batch)
