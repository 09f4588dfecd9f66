"""One error hierarchy for mark.

Every error a user can cause or see carries the HTTP status it maps to, so the front end
has a single handler that writes ``{"error": msg}``::

    MarkError (500)
    ├── BadRequest (400)            malformed body, wrong input name/dtype/shape
    │   └── ConfigError (400)       invalid configuration or catalogue/profile/trace file
    ├── Unauthorized (401)          admin API without a valid bearer token
    ├── NotFound (404)              unknown model, instance or route
    ├── PayloadTooLarge (413)       body over the configured limit
    ├── UpstreamError (502)         an instance failed (died, bad reply) even after a retry
    ├── ServiceUnavailable (503)    no ready instance; carries ``retry_after_s``
    └── UpstreamTimeout (504)       an instance did not answer in time

Foreign errors (aiohttp, botocore, OSError) are translated at the call site with
``raise ... from exc``.
"""

from __future__ import annotations


class MarkError(Exception):
    """Base of all mark errors; ``status`` is the HTTP status it maps to."""

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def headers(self) -> dict[str, str]:
        """Extra response headers for this error (none by default)."""
        return {}


class BadRequest(MarkError):
    """The request (or input file) is malformed; the message names the field."""

    status = 400


class ConfigError(BadRequest):
    """A configuration, catalogue, profile or trace file is invalid."""


class Unauthorized(MarkError):
    status = 401


class NotFound(MarkError):
    status = 404


class Conflict(MarkError):
    """The request does not fit the target's current state (e.g. a spot notice for an
    on-demand instance)."""

    status = 409


class PayloadTooLarge(MarkError):
    status = 413


class UpstreamError(MarkError):
    """An instance failed to answer (connection lost, bad reply), after any retry."""

    status = 502


class ServiceUnavailable(MarkError):
    """Nothing can serve the request now; clients should retry after ``retry_after_s``."""

    status = 503

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class UpstreamTimeout(MarkError):
    status = 504
