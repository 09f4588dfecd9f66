"""Property-based tests (hypothesis) of the v2 body parser (``frontend.protocol``), in process.

Valid bodies (JSON and binary-tensor forms, over models of every datatype family) are
generated, then broken the ways a client or an attacker breaks them: truncated binary
sections, ``Inference-Header-Content-Length`` past the body or not a number, sizes that do not
fit the datatype, BYTES length prefixes that overflow, shapes whose element count overflows,
bytes that are not UTF-8, compressed bodies that expand past the limit or carry data after
their stream. Each must be a ``BadRequest`` (400) or ``PayloadTooLarge`` (413) whose message
names the problem, is short, and serialises as the JSON error body; no other exception
escapes; and memory stays within a small multiple of the body (tracemalloc).

The HTTP-level bomb tests are in ``test_frontend_decompress.py``; these add the properties
of :func:`decode_body` over arbitrary payloads, limits and chunk sizes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import multiprocessing
import struct
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from frontend.protocol import ModelMetadata, decode_body, parse_infer
from mark.core.errors import BadRequest, MarkError, PayloadTooLarge

# allocations that are not the decoder's (an event loop's first run, a cache filled once)
SLACK_BYTES = 64 * 1024
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

# one input per datatype family, batched (first dimension -1), plus a fixed-shape one
MULTI = ModelMetadata.from_triton({
    "name": "multi",
    "inputs": [{"name": "F", "datatype": "FP32", "shape": [-1, 3]},
               {"name": "I", "datatype": "INT64", "shape": [-1, 2]},
               {"name": "H", "datatype": "FP16", "shape": [-1, 1]},
               {"name": "B", "datatype": "BOOL", "shape": [-1, 2]},
               {"name": "S", "datatype": "BYTES", "shape": [-1, 1]}],
    "outputs": [{"name": "OUT", "datatype": "FP32", "shape": [-1, 3]}],
})
FIXED = ModelMetadata.from_triton({
    "name": "fixed",
    "inputs": [{"name": "X", "datatype": "UINT8", "shape": [4, 4]}],
    "outputs": [{"name": "Y", "datatype": "UINT8", "shape": [4, 4]}],
})
MAX_MESSAGE = 1000  # characters: an error names the problem, it does not echo the body


def check_error(exc: MarkError, *needles: str) -> None:
    """``exc`` is a client error whose message names one of ``needles``, is short, and can
    be written as the ``{"error": msg}`` body."""
    assert 400 <= exc.status < 500, exc
    msg = exc.message
    assert len(msg) <= MAX_MESSAGE, f"{len(msg)}-character message: {msg[:200]}..."
    orjson.dumps({"error": msg})  # what the front end's error handler writes
    if needles:
        assert any(n in msg for n in needles), f"{msg!r} names none of {needles}"


def expect_bad(parse: Callable[[], object], *needles: str) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        parse()
    check_error(info.value, *needles)
    return info.value


# -- valid bodies --------------------------------------------------------------------------

def _elements(dtype: str) -> st.SearchStrategy[Any]:
    if dtype == "BYTES":
        return st.binary(max_size=12)
    if dtype == "BOOL":
        return st.booleans()
    if dtype.startswith("FP"):
        return st.floats(-1e4, 1e4, allow_nan=False, width=16 if dtype == "FP16" else 32)
    return st.integers(-(2**31), 2**31 - 1)


def _pack(dtype: str, values: list[Any]) -> bytes:
    if dtype == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v for v in values)
    fmt = {"FP32": "f", "INT64": "q", "FP16": "e", "BOOL": "?", "UINT8": "B"}[dtype]
    return struct.pack(f"<{len(values)}{fmt}", *values)


@st.composite
def valid_requests(draw: st.DrawFn, binary: bool | None = None
                   ) -> tuple[bytes, str | None, int, list[tuple[str, int, int]]]:
    """(body, header length, batch, [(input, offset, size) of each binary section])."""
    batch = draw(st.integers(1, 4))
    use_binary = draw(st.booleans()) if binary is None else binary
    order = draw(st.permutations(list(MULTI.inputs)))
    tensors, blobs, sections, offset = [], [], [], 0
    for name in order:
        meta = MULTI.inputs[name]
        shape = [batch, *meta.shape[1:]]
        values = draw(st.lists(_elements(meta.datatype), min_size=math.prod(shape),
                               max_size=math.prod(shape)))
        t: dict[str, Any] = {"name": name, "datatype": meta.datatype, "shape": shape}
        last_chance = binary and name == order[-1] and not blobs  # binary=True: one at least
        if use_binary and (last_chance or draw(st.booleans())):
            blob = _pack(meta.datatype, values)
            t["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
            sections.append((name, offset, len(blob)))
            offset += len(blob)
        elif meta.datatype == "BYTES":
            t["data"] = [v.decode("latin-1") for v in values]
        else:
            t["data"] = values
        tensors.append(t)
    header = json.dumps({"inputs": tensors}).encode()
    if not blobs and not draw(st.booleans()):
        return header, None, batch, []
    return header + b"".join(blobs), str(len(header)), batch, sections


@SETTINGS
@given(valid_requests())
def test_generated_requests_are_valid(req: tuple[bytes, str | None, int, list[Any]]) -> None:
    """The generator makes valid bodies, so what the mutations below break is theirs."""
    raw, hlen, batch, _ = req
    assert parse_infer(raw, hlen, MULTI).batch_size == batch


# -- broken binary framing -----------------------------------------------------------------

@SETTINGS
@given(valid_requests(binary=True), st.data())
def test_truncated_body_is_400_naming_the_problem(req: tuple[bytes, str | None, int, list[Any]],
                                                  data: st.DataObject) -> None:
    raw, hlen, _, sections = req
    assume(sections)
    cut = data.draw(st.integers(1, len(raw) - 1), label="bytes kept")
    expect_bad(lambda: parse_infer(raw[:cut], hlen, MULTI), "binary_data_size",
               "Inference-Header-Content-Length", "BYTES")


@SETTINGS
@given(valid_requests(binary=True), st.data())
def test_header_length_outside_or_off_the_json_is_400(
        req: tuple[bytes, str | None, int, list[Any]], data: st.DataObject) -> None:
    raw, hlen, _, _ = req
    assert hlen is not None
    true = int(hlen)
    wrong = data.draw(st.one_of(st.integers(-(2**70), 0), st.integers(len(raw) + 1, 2**70),
                                st.integers(1, len(raw)).filter(lambda n: n != true)),
                      label="header length")
    expect_bad(lambda: parse_infer(raw, str(wrong), MULTI), "Inference-Header-Content-Length",
               "not valid JSON", "binary_data_size", "binary data")


@SETTINGS
@given(st.one_of(
    st.text(max_size=30).filter(lambda s: not (s.strip().isascii() and s.strip().isdigit())),
    st.sampled_from(["+12", "1_0", "12.0", "1e2", "0x10", "\u0661\u0662", "\uff11", " ", "",
                     "9" * 5000])))
def test_header_length_not_ascii_digits_is_400(value: str) -> None:
    raw = json.dumps({"inputs": [{"name": "X", "datatype": "UINT8", "shape": [4, 4],
                                  "data": [0] * 16}]}).encode()
    expect_bad(lambda: parse_infer(raw, value, FIXED), "Inference-Header-Content-Length must be a decimal")


@SETTINGS
@given(st.integers(0, 16 * 8), st.sampled_from(["FP32", "FP64", "INT8", "UINT16", "INT64"]))
def test_binary_size_that_does_not_fit_the_datatype_is_400(size: int, dtype: str) -> None:
    """UINT8 [4, 4] is 16 bytes: any other size, or a datatype other than UINT8, is refused."""
    assume(size != 16 or dtype != "UINT8")
    header = json.dumps({"inputs": [{"name": "X", "datatype": dtype, "shape": [4, 4],
                                     "parameters": {"binary_data_size": size}}]}).encode()
    raw = header + b"\x01" * size
    expect_bad(lambda: parse_infer(raw, str(len(header)), FIXED), "binary_data_size",
               "datatype")
    # the same size declared as UINT8 names the size and what the shape needs
    ok_dtype = header.replace(dtype.encode(), b"UINT8")
    if size != 16:
        expect_bad(lambda: parse_infer(ok_dtype + b"\x01" * size, str(len(ok_dtype)), FIXED),
                   "binary_data_size")


def _bytes_body(section: bytes, rows: int) -> tuple[bytes, str]:
    header = json.dumps({"inputs": [{"name": "S", "datatype": "BYTES", "shape": [rows, 1],
                                     "parameters": {"binary_data_size": len(section)}}]})
    return header.encode() + section, str(len(header))


BYTES_ONLY = ModelMetadata.from_triton({
    "name": "text", "inputs": [{"name": "S", "datatype": "BYTES", "shape": [-1, 1]}],
    "outputs": [{"name": "E", "datatype": "FP32", "shape": [-1, 4]}]})


@SETTINGS
@given(st.lists(st.binary(max_size=8), min_size=1, max_size=6), st.data())
def test_bytes_length_prefix_that_overflows_is_400(items: list[bytes],
                                                   data: st.DataObject) -> None:
    section = bytearray(_pack("BYTES", items))
    starts, pos = [], 0
    for it in items:
        starts.append(pos)
        pos += 4 + len(it)
    at = data.draw(st.sampled_from(starts), label="prefix")
    left = len(section) - at - 4
    bad = data.draw(st.one_of(st.integers(left + 1, 2**32 - 1), st.just(2**32 - 1)),
                    label="length")
    struct.pack_into("<I", section, at, bad)
    raw, hlen = _bytes_body(bytes(section), len(items))
    expect_bad(lambda: parse_infer(raw, hlen, BYTES_ONLY), "BYTES")


@SETTINGS
@given(st.binary(max_size=64), st.integers(0, 20))
def test_any_bytes_section_is_counted_or_refused(section: bytes, rows: int) -> None:
    raw, hlen = _bytes_body(section, rows)
    try:
        assert parse_infer(raw, hlen, BYTES_ONLY).batch_size == max(rows, 1)
    except BadRequest as exc:
        check_error(exc, "BYTES")


# -- shapes --------------------------------------------------------------------------------

HUGE = st.one_of(st.integers(0, 2**63 - 1), st.sampled_from([2**31, 2**32, 2**62, 2**63 - 1]))


@SETTINGS
@given(st.lists(HUGE, min_size=0, max_size=4), st.booleans(), st.sampled_from([0, 16, 64]))
def test_shape_whose_count_overflows_is_400_and_allocates_nothing(
        shape: list[int], binary: bool, payload: int) -> None:
    """An element count that overflows 64 bits, or would need gigabytes, from a few bytes:
    refused by arithmetic on the shape, never by building what it describes."""
    assume(shape != [4, 4])
    tensor: dict[str, Any] = {"name": "X", "datatype": "UINT8", "shape": shape}
    if binary:
        tensor["parameters"] = {"binary_data_size": payload}
    else:
        tensor["data"] = [1] * payload
    header = json.dumps({"inputs": [tensor]}).encode()
    raw = header + (b"\x00" * payload if binary else b"")
    hlen = str(len(header)) if binary else None
    tracemalloc.start()
    try:
        exc = expect_bad(lambda: parse_infer(raw, hlen, FIXED), "shape")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024 + 16 * len(raw), f"{peak} bytes traced for a {len(raw)}-byte body"
    assert str(shape[:1])[:-1] in exc.message or "shape" in exc.message


@SETTINGS
@given(st.lists(st.integers(0, 2**63 - 1), min_size=2, max_size=2).filter(lambda s: s[1] != 3))
def test_batched_shape_with_a_wrong_fixed_dimension_is_400(shape: list[int]) -> None:
    raw = json.dumps({"inputs": [{"name": "F", "datatype": "FP32", "shape": shape,
                                  "data": [0.0]}]}).encode()
    expect_bad(lambda: parse_infer(raw, None, MULTI), "expects [-1, 3]")


def test_oversized_json_numbers_in_shapes_are_400() -> None:
    """Integers past 64 bits parse as floats (orjson), and a float is not a dimension."""
    for dim in ("1e400", "99999999999999999999999", "-0", "1.0", "true", "null", '"4"'):
        raw = ('{"inputs": [{"name": "X", "datatype": "UINT8", "shape": [4, ' + dim
               + '], "data": [0]}]}').encode()
        expect_bad(lambda raw=raw: parse_infer(raw, None, FIXED), "shape", "not valid JSON")


# -- names, encodings, arbitrary documents ------------------------------------------------

@SETTINGS
@given(st.binary(min_size=1, max_size=8).filter(lambda b: not _is_utf8(b)),
       st.sampled_from(["name", "datatype", "output"]))
def test_invalid_utf8_anywhere_in_the_json_is_400(junk: bytes, where: str) -> None:
    fields = {"name": b"X", "datatype": b"UINT8", "output": b"Y"}
    fields[where] = fields[where][:1] + junk
    raw = (b'{"inputs": [{"name": "' + fields["name"] + b'", "datatype": "' + fields["datatype"]
           + b'", "shape": [4, 4], "data": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}], '
           b'"outputs": [{"name": "' + fields["output"] + b'"}]}')
    expect_bad(lambda: parse_infer(raw, None, FIXED), "not valid JSON", "UTF-8")


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@SETTINGS
@given(st.sampled_from(["\\ud800", "\\udfff", "\\ud800\\u0041", "\\u0000", "\\uffff",
                        "\\ud83d\\ude00"]))
def test_escaped_surrogates_and_controls_in_names_are_400(escape: str) -> None:
    raw = ('{"inputs": [{"name": "X' + escape + '", "datatype": "UINT8", "shape": [4, 4], '
           '"data": [0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}]}').encode()
    expect_bad(lambda: parse_infer(raw, None, FIXED), "not an input", "not valid JSON")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.sampled_from(["inputs", "outputs", "name", "datatype", "shape", "data", "parameters",
                         "binary_data_size", "X", "id"]) | st.text(max_size=5), inner,
        max_size=6),
    max_leaves=30)


@st.composite
def near_valid_docs(draw: st.DrawFn) -> dict[str, Any]:
    """Documents shaped like requests with any field replaced by any JSON value."""
    tensor: dict[str, Any] = {"name": "X", "datatype": "UINT8", "shape": [4, 4],
                              "data": [0] * 16}
    for key in draw(st.lists(st.sampled_from(["name", "datatype", "shape", "data",
                                              "parameters"]), max_size=3)):
        tensor[key] = draw(JSON)
    doc: dict[str, Any] = {"inputs": [tensor]}
    if draw(st.booleans()):
        doc["outputs"] = draw(st.one_of(JSON, st.lists(st.fixed_dictionaries(
            {"name": JSON}), max_size=2)))
    if draw(st.booleans()):
        doc["inputs"] = draw(st.one_of(JSON, st.lists(st.just(tensor) | JSON, max_size=3)))
    return doc


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(near_valid_docs(), JSON))
def test_any_json_document_is_parsed_or_refused_with_400(doc: Any) -> None:
    raw = orjson.dumps(doc)
    try:
        parse_infer(raw, None, FIXED)
    except BadRequest as exc:
        check_error(exc)


@SETTINGS
@given(st.binary(max_size=200), st.one_of(st.none(), st.integers(-5, 300).map(str)))
def test_any_bytes_are_parsed_or_refused_with_400(raw: bytes, hlen: str | None) -> None:
    try:
        parse_infer(raw, hlen, MULTI)
    except BadRequest as exc:
        check_error(exc)


def test_error_messages_do_not_echo_large_values() -> None:
    """A refused value is shown cut short: the 400 of a 1 MB name is not a 1 MB reply."""
    big = "n" * 1_000_000
    cases = [
        {"inputs": [{"name": big, "datatype": "UINT8", "shape": [4, 4], "data": [0] * 16}]},
        {"inputs": [{"name": "X", "datatype": big, "shape": [4, 4], "data": [0] * 16}]},
        {"inputs": [{"name": "X", "datatype": "UINT8", "shape": [4, 4], "data": [big] * 16}]},
        {"inputs": [{"name": "X", "datatype": "UINT8", "shape": [4] * 100_000, "data": [0]}]},
        {"inputs": [{"name": "X", "datatype": "UINT8", "shape": [-1] * 100_000, "data": [0]}]},
        {"inputs": [{"name": "X", "datatype": "UINT8", "shape": [4, 4], "data": [0] * 16}],
         "outputs": [{"name": big}]},
    ]
    for doc in cases:
        expect_bad(lambda doc=doc: parse_infer(orjson.dumps(doc), None, FIXED))


# -- memory of a whole parse ---------------------------------------------------------------

def _peak_of(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        with contextlib.suppress(BadRequest):
            fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(("label", "element", "factor"), [
    # a JSON header becomes Python objects: an 8-byte slot per small int, a float object
    # each for floats, an empty list object each for "[]" (the worst case per body byte);
    # orjson's peak while parsing is about 4x what it returns (measured: 16x, 20x, 33x)
    ("small ints", b"0,", 20),
    ("floats", b"1.5,", 24),
    ("empty lists", b"[],", 40),
])
def test_json_parse_memory_is_a_bounded_multiple_of_the_body(label: str, element: bytes,
                                                              factor: int) -> None:
    """The JSON form costs Python objects per element; the worst body (``[],`` repeated:
    one list object per 3 bytes) stays within ``factor`` x the body. The body is bounded by
    ``frontend.max_body_bytes``, and a parse runs start to end on the event loop without
    yielding (its objects are freed when it returns), so a front-end process holds one
    parse's objects at a time: at most ``factor`` x ``max_body_bytes`` however many such
    requests arrive together. The binary form costs nothing per element."""
    n = 200_000
    raw = (b'{"inputs": [{"name": "X", "datatype": "UINT8", "shape": [4, 4], "data": ['
           + element * n + b"0]}]}")
    peak = _peak_of(lambda: parse_infer(raw, None, FIXED))
    print(f"{label}: {peak / len(raw):.1f} x the body")
    assert peak <= factor * len(raw), f"{label}: {peak} bytes for a {len(raw)}-byte body"
    header = json.dumps({"inputs": [{"name": "X", "datatype": "UINT8", "shape": [4, 4],
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    binary = header + raw
    peak = _peak_of(lambda: parse_infer(binary, str(len(header)), FIXED))
    assert peak <= 64 * 1024, f"binary form: {peak} bytes traced"


# -- compressed bodies ---------------------------------------------------------------------

# zlib's inflate state and 32 KiB window (two, one after the other), the generators
INFLATER_BYTES = 192 * 1024


def _compress(payload: bytes, enc: str, level: int) -> bytes:
    return zlib.compress(payload, level, wbits=31 if enc == "gzip" else zlib.MAX_WBITS)


def _decode_here(body: bytes, enc: str, limit: int, chunk: int,
                 traced: bool = True) -> tuple[bytes | MarkError, int]:
    """decode_body's result (or error) and, ``traced``, the peak of memory traced while it
    ran (the event loop is made before tracing starts: only the decoding is measured)."""
    loop = asyncio.new_event_loop()
    try:
        if traced:
            tracemalloc.start()
        try:
            out: bytes | MarkError = bytes(
                loop.run_until_complete(decode_body(body, enc, limit, chunk)))
        except MarkError as exc:
            out = exc
        return out, tracemalloc.get_traced_memory()[1] if traced else 0
    finally:
        tracemalloc.stop()
        loop.close()


def _peak_here(body: bytes, enc: str, limit: int, chunk: int) -> int:
    return _decode_here(body, enc, limit, chunk)[1]


_tracer: list[ProcessPoolExecutor] = []


@pytest.fixture(scope="module", autouse=True)
def _tracer_process() -> Iterator[None]:
    yield
    while _tracer:
        _tracer.pop().shutdown(cancel_futures=True)


def _decode(body: bytes, enc: str, limit: int, chunk: int) -> tuple[bytes | MarkError, int]:
    """decode_body's result (or error), and the peak of memory traced while it ran measured
    in a process of its own: tracemalloc traces every thread, and a server thread another
    test left in this process allocating meanwhile counted as the decoder's (290 KB once)."""
    if not _tracer:
        _tracer.append(ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")))
    peak = _tracer[0].submit(_peak_here, body, enc, limit, chunk).result(timeout=120)
    return _decode_here(body, enc, limit, chunk, traced=False)[0], peak


@SETTINGS
@given(st.one_of(st.binary(max_size=3000),
                 st.tuples(st.binary(min_size=1, max_size=8), st.integers(1, 20_000)).map(
                     lambda t: (t[0] * t[1])[:200_000])),
       st.sampled_from(["gzip", "deflate"]), st.integers(1, 60_000), st.integers(1, 9),
       st.sampled_from([512, 4096, 65536]))
def test_decode_body_is_exact_within_the_limit_and_413_past_it(
        payload: bytes, enc: str, limit: int, level: int, chunk: int) -> None:
    body = _compress(payload, enc, level)
    out, peak = _decode(body, enc, limit, chunk)
    if len(payload) <= limit:
        assert out == payload
    else:
        assert isinstance(out, PayloadTooLarge), out
        check_error(out, "frontend.max_body_bytes")
    # a bomb costs a chunk or two at a time, never what it expands to
    assert peak <= 2 * min(len(payload), limit) + 2 * chunk + INFLATER_BYTES + SLACK_BYTES, (
        f"{peak} bytes traced for limit {limit}, chunk {chunk}, payload {len(payload)}")


@SETTINGS
@given(st.sampled_from(["gzip", "deflate"]), st.integers(10, 28))
def test_bombs_stop_at_the_limit_in_memory_bounded_by_chunks(enc: str, log2_size: int) -> None:
    """Up to 256 MiB of zeros: 413 holding at most a couple of chunks, whatever the size."""
    size = 1 << log2_size
    c = zlib.compressobj(9, zlib.DEFLATED, 31 if enc == "gzip" else zlib.MAX_WBITS)
    block = bytes(1 << 20)
    parts = [c.compress(block[: min(size, len(block))])]
    for _ in range(size // len(block) - 1):
        parts.append(c.compress(block))
    bomb = b"".join(parts) + c.flush()
    limit = 4096
    out, peak = _decode(bomb, enc, limit, 1024)
    if size <= limit:
        assert out == bytes(size)
    else:
        assert isinstance(out, PayloadTooLarge), out
    # the input not consumed yet is held (and copied once per chunk), the output never
    assert peak <= INFLATER_BYTES + 2 * len(bomb) + 2 * 1024, (
        f"{peak} bytes traced for a {len(bomb)}-byte bomb of {size} bytes")


@functools.cache
def _bomb_member() -> bytes:
    return _compress(bytes(64 << 20), "gzip", 9)  # ~64 KB that expand to 64 MiB


@SETTINGS
@given(st.sampled_from(["gzip", "deflate"]), st.binary(min_size=1, max_size=64),
       st.one_of(st.binary(min_size=1, max_size=64), st.just(b"bomb")))
def test_data_after_the_compressed_stream_is_400(enc: str, payload: bytes,
                                                 tail: bytes) -> None:
    """The body is forwarded as sent: a second gzip member (here, possibly a bomb) or any
    trailing bytes would reach the instance unvalidated, so they are refused."""
    if tail == b"bomb":
        tail = _bomb_member()
    body = _compress(payload, enc, 6) + tail
    out, _ = _decode_here(body, enc, 1 << 20, 4096, traced=False)
    assert isinstance(out, BadRequest), out
    check_error(out, "after the end of the")


@SETTINGS
@given(st.sampled_from(["gzip", "deflate"]), st.binary(min_size=1, max_size=2000),
       st.data())
def test_corrupt_or_truncated_compressed_body_is_400(enc: str, payload: bytes,
                                                     data: st.DataObject) -> None:
    body = bytearray(_compress(payload, enc, 6))
    if data.draw(st.booleans(), label="truncate"):
        del body[data.draw(st.integers(0, len(body) - 1), label="cut") :]
    else:
        at = data.draw(st.integers(0, len(body) - 1), label="at")
        body[at] ^= data.draw(st.integers(1, 255), label="xor")
    out, _ = _decode_here(bytes(body), enc, 1 << 20, 4096, traced=False)
    if isinstance(out, bytes):  # a bit of the gzip header that only describes (mtime, OS)
        assert out == payload
        return
    assert isinstance(out, BadRequest), out
    check_error(out, f"not valid {enc} data")
