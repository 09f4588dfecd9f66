"""The function runtime under gunicorn: ``mark faas --gunicorn`` runs

    gunicorn mark.faas.gunicorn:app --worker-class aiohttp.GunicornWebWorker --workers 1

with the configuration in ``MARK_CONFIG_JSON`` (a MarkConfig as JSON; all defaults when
unset). One worker: the sandboxes and their concurrency limit belong to one process, as a
Lambda function's reserved concurrency belongs to the function.
"""

from __future__ import annotations

import os

from aiohttp import web

from mark.core.config import MarkConfig
from mark.faas.runtime import FunctionRuntime

CONFIG_ENV = "MARK_CONFIG_JSON"


async def app() -> web.Application:
    """The runtime's application, built in gunicorn's worker (an async factory)."""
    raw = os.environ.get(CONFIG_ENV)
    cfg = MarkConfig.model_validate_json(raw) if raw else MarkConfig()
    return FunctionRuntime(cfg).app()
