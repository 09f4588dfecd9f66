"""``GET /dashboard``: one page that watches the service, no build step.

The page (``frontend/static/dashboard.html``: plain HTML, inline JavaScript, SVG charts, no
external resources) polls every 2 s what any client may read: ``GET /metrics`` (parsed in the
browser) and ``GET /admin/fleet``, with the admin bearer token when one is configured (taken
from a ``#token=`` URL fragment or typed in, kept in the tab's ``sessionStorage``, never sent
anywhere else). Each number it shows sits in an element with a stable ``id`` or ``data-``
attributes (``data-metric``, ``data-model``, ``data-value`` with the raw number), which its
test reads.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from sanic import Request, Sanic, response
from sanic.response import HTTPResponse

_PAGE: bytes | None = None


def page() -> bytes:
    """The dashboard's HTML (read once per process)."""
    global _PAGE
    if _PAGE is None:
        _PAGE = resources.files("frontend").joinpath("static/dashboard.html").read_bytes()
    return _PAGE


def add_dashboard_route(app: Sanic[Any, Any]) -> None:
    """Register ``GET /dashboard`` on ``app``."""

    async def dashboard(request: Request) -> HTTPResponse:
        # the page's data comes from this origin only; the token stays in the tab
        return response.raw(page(), content_type="text/html; charset=utf-8", headers={
            "cache-control": "no-store",
            "content-security-policy": "default-src 'none'; script-src 'unsafe-inline'; "
            "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
            "referrer-policy": "no-referrer",
        })

    app.add_route(dashboard, "/dashboard", methods=["GET"], name="dashboard")
