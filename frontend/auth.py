"""Who may call what: the admin bearer token and the inference API keys.

- Admin routes (:class:`AdminAuth`): ``authorization: Bearer <admin token>``, compared in
  constant time with the token in force (``admin.token``; ``MARK_ADMIN_TOKEN`` overrides).
  401 without a bearer token (with ``www-authenticate: Bearer``), 403 with a wrong one. With
  no token configured they answer only clients on loopback (403 otherwise).
- Inference routes (:class:`ApiKeys`): with keys configured (``frontend.api_keys``,
  ``MARK_API_KEYS``), ``authorization: Bearer <key>`` or ``x-api-key: <key>``; 401 without,
  403 wrong. With none, the routes are registered unwrapped (:func:`guarded` is not applied),
  so an open deployment pays nothing per request.

No message ever repeats what the client sent.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from sanic import Request
from sanic.response import HTTPResponse

from mark.core.errors import MarkError, Unauthorized

log = logging.getLogger(__name__)
Handler = Callable[..., Coroutine[Any, Any, HTTPResponse]]


class Forbidden(MarkError):
    """The credentials were wrong, or the client may not use this route at all."""

    status = 403


class CredentialsRequired(Unauthorized):
    """No credentials were sent: 401 with ``www-authenticate: Bearer``."""

    def headers(self) -> dict[str, str]:
        return {"www-authenticate": 'Bearer realm="mark"'}


def bearer_token(request: Request) -> str | None:
    """The credential of ``authorization: Bearer <t>`` (None when absent or another scheme)."""
    value = request.headers.get("authorization")
    if not value:
        return None
    scheme, _, cred = value.strip().partition(" ")
    cred = cred.strip()
    return cred if scheme.lower() == "bearer" and cred else None


def _secret(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def matches(presented: str, secrets: Iterable[bytes]) -> bool:
    """Whether ``presented`` equals one of ``secrets``; every one is compared, each in
    constant time, so the timing tells neither which nor how much matched."""
    got = _secret(presented)
    ok = False
    for secret in secrets:
        ok |= hmac.compare_digest(got, secret)
    return ok


def _refused(request: Request, status: int) -> None:
    log.info("admin API: %d for %s %s from %s", status, getattr(request, "method", "?"),
             getattr(request, "path", "?"), getattr(request, "ip", "?"))


def loopback_only(request: Request) -> None:
    """403 unless the client is on loopback (the admin API without a token)."""
    try:
        ok = ipaddress.ip_address(request.ip).is_loopback
    except ValueError:
        ok = False
    if not ok:
        _refused(request, 403)
        raise Forbidden(f"no admin token is configured, so the admin API answers only clients "
                        f"on loopback (127.0.0.1, ::1); this request came from {request.ip!r}. "
                        f"Set admin.token in the configuration or MARK_ADMIN_TOKEN to use it "
                        f"from elsewhere")


class AdminAuth:
    """The admin routes' check (see the module docstring); ``token`` None: loopback only."""

    def __init__(self, token: str | None) -> None:
        self._token = (_secret(token),) if token else None

    @property
    def required(self) -> bool:
        return self._token is not None

    def check(self, request: Request) -> None:
        if self._token is None:
            loopback_only(request)
            return
        got = bearer_token(request)
        if got is None:
            _refused(request, 401)
            raise CredentialsRequired("no bearer token: send authorization: Bearer <admin token>")
        if not matches(got, self._token):
            _refused(request, 403)
            raise Forbidden("wrong admin token")


class ApiKeys:
    """The inference routes' check (see the module docstring); falsy when no key is set."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = tuple(_secret(k) for k in sorted(set(keys)) if k)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def check(self, request: Request) -> None:
        sent = [k for k in (bearer_token(request), request.headers.get("x-api-key")) if k]
        if not sent:
            raise CredentialsRequired("no API key: send authorization: Bearer <API key> or "
                                      "x-api-key: <API key>")
        ok = False
        for key in sent:
            ok |= matches(key, self._keys)
        if not ok:
            raise Forbidden("wrong API key")


def guarded(handler: Handler, check: Callable[[Request], None]) -> Handler:
    """``handler`` behind ``check`` (which raises to refuse), before anything else runs."""

    @functools.wraps(handler)
    async def guard(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
        check(request)
        return await handler(request, *args, **kwargs)

    return guard
