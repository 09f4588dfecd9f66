"""The KServe v2 infer body's framing, shared by every reader of it (the front end's
validation, the function handler): a JSON header, then, with the binary tensor extension,
the tensors' raw bytes. Kept apart from the front end so the Lambda handler reads requests
without importing the serving stack."""

from __future__ import annotations

from typing import Any

import orjson

from mark.core.errors import BadRequest


def split_body(raw: bytes | bytearray, header_length: str | None
               ) -> tuple[dict[str, Any], memoryview]:
    """An infer body's JSON header (an object) and its binary section (the binary tensor
    extension: ``header_length`` = ``Inference-Header-Content-Length``; None: all JSON)."""
    if header_length is not None:
        # ASCII digits only: int() also takes '+5', '1_0' and other scripts' digits, which
        # the instance behind (that reads the body as sent) may read otherwise
        digits = header_length.strip()
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
            raise BadRequest(
                f"Inference-Header-Content-Length must be a decimal integer (ASCII digits), "
                f"got {header_length[:40]!r}"
            )
        hlen = int(digits)
        if not 0 < hlen <= len(raw):
            raise BadRequest(
                f"Inference-Header-Content-Length {hlen} is outside the body "
                f"(body has {len(raw)} bytes)"
            )
        header_bytes, binary = raw[:hlen], memoryview(raw)[hlen:]
    else:
        header_bytes, binary = raw, memoryview(b"")
    try:
        doc = orjson.loads(header_bytes)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(doc).__name__}")
    return doc, binary
