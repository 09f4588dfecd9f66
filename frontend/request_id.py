"""Request ids: ``x-request-id`` from the client (validated) or made here (uuid4 hex).

The front end forwards the id to the instance (a header) or the function (in the spilled
request's headers, which the handler logs) and returns it in the reply's ``x-request-id``,
errors included, so one id follows a request through every log.
"""

from __future__ import annotations

import uuid

from mark.core.errors import BadRequest

HEADER = "x-request-id"
MAX_CHARS = 128


def new_request_id() -> str:
    return uuid.uuid4().hex


def valid(value: str) -> bool:
    """1 to :data:`MAX_CHARS` printable ASCII characters (space included)."""
    return 0 < len(value) <= MAX_CHARS and value.isascii() and value.isprintable()


def request_id_of(value: str | None) -> str:
    """The id for a request whose ``x-request-id`` header is ``value`` (None: absent, a new
    id); 400 naming the header and what it accepts when it is not valid."""
    if value is None:
        return new_request_id()
    if not valid(value):
        raise BadRequest(f"header {HEADER} must be 1 to {MAX_CHARS} printable ASCII characters "
                         f"(got {len(value)} characters{'' if value.isascii() else ', not all ASCII'}"
                         f"{'' if value.isprintable() else ', some not printable'}); or leave it "
                         f"out and the front end makes one")
    return value
