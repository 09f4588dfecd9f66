"""A sandbox's process: ``python -m mark.faas.worker``, one invocation at a time.

Like a Lambda execution environment it imports the handler module first (the init phase;
``MARK_MODEL`` in its environment makes :mod:`mark.faas.handler` load the model then), says
it is ready, then runs the invocations the runtime sends, one after the other, until its
stdin closes. What the handler writes (print, logging) during an invocation is captured,
its last :data:`LOG_CAPTURE_CHARS` characters kept, and sent back for the log tail.

Frames both ways: :data:`FRAME` (header length, payload length, big-endian), a JSON header,
the payload bytes. Runtime to worker: ``{"id", "deadline_ms", "arn"}`` + the event JSON.
Worker to runtime: first ``{"ready": true}`` or ``{"ready": false, "error": E}``; then per
invocation ``{"error": E | null, "log", "duration_ms", "max_rss_mb"}`` + the result JSON,
where ``E = {"errorType", "errorMessage", "stackTrace"}``. The protocol has fd 1 to itself:
the process's own stdout is pointed at stderr, so stray prints cannot corrupt a frame.
"""

from __future__ import annotations

import importlib
import io
import logging
import os
import resource
import struct
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson

FRAME = struct.Struct(">II")  # header bytes, payload bytes
MAX_HEADER_BYTES = 1 << 20
HANDLER = "mark.faas.handler.handler"  # module.function, as Lambda's CMD names it
LOG_CAPTURE_CHARS = 8192
RESPONSE_LIMIT = 6_291_456  # bytes of result, as Lambda's


def write_frame(out: BinaryIO, header: dict[str, Any], payload: bytes = b"") -> None:
    head = orjson.dumps(header)
    out.write(FRAME.pack(len(head), len(payload)) + head + payload)
    out.flush()


def _read_exactly(inp: BinaryIO, n: int) -> bytes | None:
    data = inp.read(n) if n else b""
    return data if len(data) == n else None


def read_frame(inp: BinaryIO) -> tuple[dict[str, Any], bytes] | None:
    """The next frame, or None at end of input."""
    lengths = _read_exactly(inp, FRAME.size)
    if lengths is None:
        return None
    hlen, plen = FRAME.unpack(lengths)
    if hlen > MAX_HEADER_BYTES:
        raise ValueError(f"frame header of {hlen} bytes (at most {MAX_HEADER_BYTES})")
    head, payload = _read_exactly(inp, hlen), _read_exactly(inp, plen)
    if head is None or payload is None:
        return None
    return orjson.loads(head), payload


@dataclass
class LambdaContext:
    """The ``context`` argument as Lambda's Python runtime fills it."""

    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: str  # a string, as awslambdaric gives it
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    deadline_ms: int
    identity: Any = None
    client_context: Any = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.deadline_ms - int(time.time() * 1000))


class _Tail(io.TextIOBase):
    """A text stream keeping only its last ``LOG_CAPTURE_CHARS`` characters."""

    def __init__(self) -> None:
        self.text = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self.text = (self.text + s)[-LOG_CAPTURE_CHARS:]
        return len(s)


class _CurrentStderr(logging.Handler):
    """Writes records to whatever ``sys.stderr`` is now (the capture during an invocation)."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(self.format(record) + "\n")


def error_of(exc: BaseException, error_type: str | None = None, skip: int = 0) -> dict[str, Any]:
    """Lambda's error document; ``skip`` drops the worker's own outermost frames."""
    frames = traceback.extract_tb(exc.__traceback__)[skip:]
    return {"errorType": error_type or type(exc).__name__, "errorMessage": str(exc),
            "stackTrace": traceback.format_list(frames)}


def _max_rss_mb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)  # KiB on Linux


def _load_handler(spec: str) -> Callable[[Any, Any], Any]:
    module, _, func = spec.rpartition(".")
    fn: Callable[[Any, Any], Any] = getattr(importlib.import_module(module), func)
    return fn


def _invoke(fn: Callable[[Any, Any], Any], header: dict[str, Any],
            payload: bytes) -> tuple[dict[str, Any], bytes]:
    tail = _Tail()
    started = time.perf_counter()
    error: dict[str, Any] | None = None
    result = b""
    env = os.environ
    ctx = LambdaContext(
        function_name=env.get("AWS_LAMBDA_FUNCTION_NAME", ""),
        function_version=env.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        invoked_function_arn=str(header.get("arn", "")),
        memory_limit_in_mb=env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", ""),
        aws_request_id=str(header.get("id", "")),
        log_group_name=env.get("AWS_LAMBDA_LOG_GROUP_NAME", ""),
        log_stream_name=env.get("AWS_LAMBDA_LOG_STREAM_NAME", ""),
        deadline_ms=int(header.get("deadline_ms", 0)),
    )
    with redirect_stdout(tail), redirect_stderr(tail):
        try:
            value = fn(orjson.loads(payload) if payload.strip() else {}, ctx)
        except Exception as exc:
            error = error_of(exc, skip=1)  # the stack starts in the handler, as on Lambda
            print(f"[ERROR] {error['errorType']}: {error['errorMessage']}", file=tail)
        else:
            try:
                result = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)
            except TypeError as exc:
                error = error_of(exc, "Runtime.MarshalError")
                error["errorMessage"] = f"Unable to marshal response: {exc}"
            else:
                if len(result) > RESPONSE_LIMIT:
                    error = {"errorType": "Function.ResponseSizeTooLarge", "stackTrace": [],
                             "errorMessage": f"Response payload size ({len(result)} bytes) "
                             f"exceeded maximum allowed payload size ({RESPONSE_LIMIT} bytes)."}
                    result = b""
    reply = {"error": error, "log": tail.text, "max_rss_mb": _max_rss_mb(),
             "duration_ms": (time.perf_counter() - started) * 1000.0}
    return reply, result


def main() -> int:
    proto = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray writes to fd 1 go to stderr, never into a frame
    inp = sys.stdin.buffer
    root = logging.getLogger()
    root.addHandler(_CurrentStderr())
    root.setLevel(logging.INFO)
    try:
        fn = _load_handler(os.environ.get("MARK_HANDLER", HANDLER))
    except ImportError as exc:
        write_frame(proto, {"ready": False, "error": error_of(exc, "Runtime.ImportModuleError")})
        return 1
    except Exception as exc:
        write_frame(proto, {"ready": False, "error": error_of(exc)})
        return 1
    write_frame(proto, {"ready": True, "max_rss_mb": _max_rss_mb()})
    while (frame := read_frame(inp)) is not None:
        reply, result = _invoke(fn, *frame)
        write_frame(proto, reply, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
