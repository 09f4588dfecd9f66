"""Logging for every mark process: plain text or JSON lines, never a secret.

:func:`configure_logging` sets the root logger up once per process (``mark up``, each front-end
worker) from :class:`~mark.core.config.LoggingConfig`:

- plain text: ``2026-12-03T05:01:42.123Z INFO mark.up[4242]: message key=value ...``;
- ``json_lines``: one object per line, ``{"ts", "level", "logger", "msg", "pid", ...}`` plus
  the record's extra fields (``log.info("...", extra={"request_id": rid, "model": m})``) and
  ``exc`` (the traceback) when there is one.

Its :class:`Redactor` filter rewrites every record before any handler formats it: the
configured secrets (the admin token, the API keys) and the value of any ``authorization``
or ``x-api-key`` header mentioned in a message, an extra field or a traceback become
``[redacted]``. Sanic's own loggers are pointed at the same handler, so its lines follow
the same format and the same filter.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import IO, Any

import orjson

from mark.core.config import LoggingConfig

REDACTED = "[redacted]"
# a header value after its name, quoted or not: "authorization: Bearer abc", 'x-api-key': 'k'
_HEADER_VALUE = re.compile(
    r"""(?P<name>(?:proxy-)?authorization|x-api-key)(?P<sep>['"]?\s*[:=]\s*['"]?)"""
    r"""(?P<value>(?:(?:bearer|basic|token)\s+)?[^\s'",;}\]]+)""",
    re.IGNORECASE,
)
# the attributes every LogRecord has; anything else on a record came through ``extra``
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName", "redacted"}
_SANIC_LOGGERS = ("sanic.root", "sanic.error", "sanic.access", "sanic.server", "sanic.websockets")


def _iso(created: float) -> str:
    secs = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + \
        f".{int((created - secs) * 1000):03d}Z"


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a record carries beyond the standard ones (its ``extra=``)."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class Redactor(logging.Filter):
    """Replaces secrets and credential header values in every record it sees (never drops
    one). ``secrets``: exact strings to hide wherever they appear (empty ones are ignored)."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        if _HEADER_VALUE.search(text) is not None:
            text = _HEADER_VALUE.sub(lambda m: f"{m['name']}{m['sep']}{REDACTED}", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "redacted", False):  # seen by another handler already
            return True
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
            record.exc_info = None  # formatters use exc_text; the raw exception could leak
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in extras(record).items():
            if isinstance(value, str):
                setattr(record, key, self.redact(value))
            elif not isinstance(value, int | float | bool | type(None)):
                setattr(record, key, self.redact(str(value)))
        record.redacted = True
        return True


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (ISO 8601 UTC), ``level``, ``logger``, ``msg``,
    ``pid``, the record's extra fields, ``exc`` when it carries a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {"ts": _iso(record.created), "level": record.levelname,
                               "logger": record.name, "msg": record.getMessage(),
                               "pid": record.process}
        doc.update(extras(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    """``ts LEVEL logger[pid]: msg key=value ...`` (extra fields appended)."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s[%(process)d]: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_iso(record.created)} {super().format(record)}"
        fields = extras(record)
        if fields:
            tail = " ".join(f"{k}={v}" for k, v in fields.items())
            head, sep, rest = line.partition("\n")  # after the message, before a traceback
            line = f"{head} {tail}{sep}{rest}"
        return line


def configure_logging(cfg: LoggingConfig, secrets: Iterable[str | None] = (),
                      stream: IO[str] | None = None) -> logging.Handler:
    """Send every record (Sanic's too) to ``stream`` (stderr) in ``cfg``'s format at its
    level, with ``secrets`` redacted; replaces handlers an earlier call installed. Returns
    the handler."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonLinesFormatter() if cfg.json_lines else TextFormatter())
    handler.addFilter(Redactor(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(cfg.level)
    for name in _SANIC_LOGGERS:  # through the root handler only (no second format)
        sanic_log = logging.getLogger(name)
        for old in list(sanic_log.handlers):
            sanic_log.removeHandler(old)
        sanic_log.propagate = True
    return handler
