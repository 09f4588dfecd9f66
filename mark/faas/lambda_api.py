"""AWS Lambda's Invoke API on the wire: limits, error replies, function names, REPORT lines.

Pure functions and constants, so the runtime's handlers stay thin. Errors are answered as
Lambda answers them: the code in ``x-amzn-errortype`` (botocore reads it from there) and a
JSON body ``{"Type": "User", "message": ..., "Message": ...}``::

    LambdaApiError
    ├── InvalidRequestContentException (400)     the payload is not JSON
    ├── InvalidParameterValueException (400)     e.g. an unknown invocation type
    ├── ResourceNotFoundException (404)          unknown function or qualifier
    ├── RequestEntityTooLargeException (413)     payload over the invocation type's limit
    └── TooManyRequestsException (429)           every sandbox busy at the concurrency limit

A handler's own failure is no API error: 200 with ``X-Amz-Function-Error: Unhandled`` and
``{"errorMessage", "errorType", "stackTrace"}`` (:func:`function_error`).
"""

from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass
from typing import Any

import orjson

API_PREFIX = "/2015-03-31/functions"
SYNC_PAYLOAD_LIMIT = 6_291_456  # bytes, RequestResponse payload and response (6 MiB)
EVENT_PAYLOAD_LIMIT = 1_048_576  # bytes, Event payload (1 MiB since October 2025)
LOG_TAIL_BYTES = 4096  # X-Amz-Log-Result carries the last 4 KB of the log
LATEST = "$LATEST"
ACCOUNT_ID = "000000000000"  # the local runtime's account in ARNs
INVOCATION_TYPES = ("RequestResponse", "Event", "DryRun")


class LambdaApiError(Exception):
    """An error Lambda's API answers with ``status``, ``code`` in ``x-amzn-errortype``."""

    status = 500
    code = "ServiceException"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra  # more body fields (e.g. Reason)

    def headers(self) -> dict[str, str]:
        return {}

    def body(self) -> bytes:
        return orjson.dumps({"Type": "User", "message": self.message, "Message": self.message,
                             **self.extra})


class InvalidRequestContent(LambdaApiError):
    status, code = 400, "InvalidRequestContentException"


class InvalidParameterValue(LambdaApiError):
    status, code = 400, "InvalidParameterValueException"


class ResourceNotFound(LambdaApiError):
    status, code = 404, "ResourceNotFoundException"


class RequestEntityTooLarge(LambdaApiError):
    status, code = 413, "RequestEntityTooLargeException"


class TooManyRequests(LambdaApiError):
    """Reserved concurrency reached; ``retry_after_s`` goes out as ``Retry-After``."""

    status, code = 429, "TooManyRequestsException"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, Reason="ReservedFunctionConcurrentInvocationLimitExceeded")
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


@dataclass(frozen=True, slots=True)
class FunctionRef:
    """A function as an invocation names it: a name, ``name:qualifier`` or an ARN."""

    name: str
    qualifier: str | None


def parse_function_name(raw: str, query_qualifier: str | None = None) -> FunctionRef:
    """``name``, ``name:qualifier``, ``arn:aws:lambda:region:acct:function:name[:qualifier]``
    or the partial ``acct:function:name[:qualifier]``; a ``Qualifier`` query parameter (how
    boto3 sends ``Qualifier=``) fills in an absent one."""
    parts = raw.split(":")
    if parts[0] == "arn" and len(parts) in (7, 8) and parts[5] == "function":
        name, qual = parts[6], parts[7] if len(parts) == 8 else None
    elif len(parts) in (3, 4) and parts[1] == "function":
        name, qual = parts[2], parts[3] if len(parts) == 4 else None
    elif len(parts) in (1, 2):
        name, qual = parts[0], parts[1] if len(parts) == 2 else None
    else:
        raise InvalidParameterValue(
            f"1 validation error detected: Value '{raw}' at 'functionName' failed to satisfy "
            "constraint: a function name, name:qualifier or function ARN"
        )
    if qual is not None and query_qualifier is not None and qual != query_qualifier:
        raise InvalidParameterValue(f"The derived qualifier from the function name "
                                    f"({qual}) does not match the specified qualifier "
                                    f"({query_qualifier}).")
    return FunctionRef(name, qual if qual is not None else query_qualifier)


def function_arn(region: str, name: str, qualifier: str | None = None) -> str:
    arn = f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}"
    return f"{arn}:{qualifier}" if qualifier else arn


def function_error(error_type: str, message: str, stack: list[str] | None = None) -> bytes:
    """The body of a function error (sent with ``X-Amz-Function-Error: Unhandled``)."""
    return orjson.dumps({"errorMessage": message, "errorType": error_type,
                         "stackTrace": stack or []})


def timeout_message(request_id: str, timeout_s: float) -> str:
    """Lambda's message for a handler killed at its timeout."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000Z"
    return f"{stamp} {request_id} Task timed out after {timeout_s:.2f} seconds"


@dataclass(frozen=True, slots=True)
class Report:
    """What Lambda's REPORT line says about one invocation (times in ms)."""

    request_id: str
    duration_ms: float
    memory_mb: int
    max_memory_used_mb: int
    init_ms: float | None = None  # a cold start's init phase

    @property
    def billed_ms(self) -> int:
        """Whole milliseconds billed: the duration, plus the init phase of a cold start (as
        Lambda bills container-image functions, and since August 2025 every function)."""
        return max(1, math.ceil(self.duration_ms + (self.init_ms or 0.0)))

    def line(self) -> str:
        text = (f"REPORT RequestId: {self.request_id}\tDuration: {self.duration_ms:.2f} ms\t"
                f"Billed Duration: {self.billed_ms} ms\tMemory Size: {self.memory_mb} MB\t"
                f"Max Memory Used: {self.max_memory_used_mb} MB\t")
        if self.init_ms is not None:
            text += f"Init Duration: {self.init_ms:.2f} ms\t"
        return text


def log_tail(request_id: str, captured: str, report: Report) -> str:
    """``X-Amz-Log-Result``: base64 of the last 4 KB of the invocation's log, which ends with
    its REPORT line (START, what the handler wrote, END, REPORT, as Lambda logs them)."""
    log = (f"START RequestId: {request_id} Version: {LATEST}\n{captured}"
           f"END RequestId: {request_id}\n{report.line()}\n")
    raw = log.encode("utf-8")[-LOG_TAIL_BYTES:]
    raw = raw.decode("utf-8", "ignore").encode("utf-8")  # no character cut in half
    return base64.b64encode(raw).decode("ascii")
