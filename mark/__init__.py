"""mark: SLO-aware, cost-minimising inference serving (MArk-style)."""

from mark.core import __version__
from mark.core.clock import Clock, VirtualClock, WallClock
from mark.core.errors import (
    BadRequest,
    ConfigError,
    MarkError,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
)

__all__ = [
    "BadRequest",
    "Clock",
    "ConfigError",
    "MarkError",
    "NotFound",
    "PayloadTooLarge",
    "ServiceUnavailable",
    "Unauthorized",
    "UpstreamError",
    "UpstreamTimeout",
    "VirtualClock",
    "WallClock",
    "__version__",
]
