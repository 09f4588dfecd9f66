"""The function handler: ``handler(event, context)``, Lambda's Python signature.

The same model cores as the Triton instances (:mod:`mark.models.base`) serve a function, so
a request spilled to FaaS gets the answer an instance would give. Event and result (the
front end sends and reads them; every body base64, exactly as the client sent it)::

    event  = {"model": "<model name>",
              "requests": [{"body_b64": "<KServe v2 infer request body>",
                            "headers": {"content-type": "...",
                                        "inference-header-content-length": "<n>"}}, ...]}
    result = {"responses": [{"status": 200, "body_b64": "<v2 infer response body>",
                             "headers": {"content-type": "...",
                                         "inference-header-content-length": "<n>"}}, ...]}

The requests of one event run as one batch of the model (BATCH-style buffering; split into
batches of at most ``max_batch_size`` rows if they exceed it, as Triton's batcher would), and
the responses come back in the requests' order. A malformed request gets
``{"status": 400, "body_b64": <{"error": "..."}>}`` in its own slot; the others still run. A
malformed event, an unknown model or a model failure raises: Lambda reports it as the
function's error (``X-Amz-Function-Error: Unhandled``). Each request's ``x-request-id`` header
(the front end's request id) is logged, one line per request
(``request_id=<id> model=<m> status=<s>``), so the id reaches the invocation's log.

Configuration: ``MARK_CONFIG_JSON`` (a :class:`~mark.core.config.MarkConfig` as JSON; unset:
the defaults) names the models; the memory a ``profiled`` model's Lambda times are scaled
to is ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE`` (Lambda sets it), else ``faas.memory_mb``, else
3008 MB. ``MARK_MODEL`` set: that model is loaded at import, in Lambda's init phase, so its
load shows as the cold start's Init Duration rather than in the first invocation.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import ValidationError

from mark.core.config import MarkConfig, ModelConfig
from mark.core.errors import BadRequest, ConfigError, MarkError
from mark.core.profiles import load_profile
from mark.faas.v2 import V2Request, decode_request, encode_response
from mark.models.base import ModelCore
from mark.models.identity.core import IdentityCore
from mark.models.minilm.core import MiniLMCore
from mark.models.profiled.core import ProfiledCore, lambda_table_s

CONFIG_ENV = "MARK_CONFIG_JSON"
MODEL_ENV = "MARK_MODEL"
MEMORY_ENV = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
DEFAULT_MEMORY_MB = 3008
log = logging.getLogger(__name__)


class InvalidEvent(BadRequest):
    """The event is not ``{"model": str, "requests": [...]}`` or names an unknown model."""


_config: tuple[str, MarkConfig] | None = None  # (the JSON it was read from, the config)
_cores: dict[str, ModelCore] = {}  # loaded models: they live as long as the sandbox


def config() -> MarkConfig:
    """The configuration from ``MARK_CONFIG_JSON`` (read again only when it changes)."""
    global _config
    raw = os.environ.get(CONFIG_ENV, "")
    if _config is None or _config[0] != raw:
        try:
            cfg = MarkConfig.model_validate_json(raw) if raw else MarkConfig()
        except ValidationError as exc:
            raise ConfigError(f"{CONFIG_ENV} is not a valid mark configuration: {exc}") from exc
        _config = (raw, cfg)
        _cores.clear()
    return _config[1]


def memory_mb(cfg: MarkConfig) -> int:
    """The function's memory: what Lambda says, else the configuration's, else 3008 MB."""
    env = os.environ.get(MEMORY_ENV)
    if env:
        return int(env)
    return cfg.faas.memory_mb or DEFAULT_MEMORY_MB


def build_core(model: ModelConfig, memory: float) -> ModelCore:
    """A loaded core of ``model``'s kind; a ``profiled`` one sleeps its profile's Lambda times
    at ``memory`` MB."""
    if model.kind == "identity":
        return IdentityCore()
    if model.kind == "minilm":
        return MiniLMCore(model.torch_threads)
    if model.profile is None:  # the config validator guarantees one; mypy does not know
        raise ConfigError(f"model {model.name!r}: kind 'profiled' needs `profile`")
    return ProfiledCore(lambda_table_s(load_profile(model.profile), memory),
                        batched=model.max_batch_size > 0)


def load(name: str) -> ModelCore:
    """The loaded core of model ``name`` (loaded now if this sandbox has not yet)."""
    cfg = config()
    core = _cores.get(name)
    if core is None:
        model = cfg.model(name)
        if model is None:
            raise InvalidEvent(f"unknown model {name!r}; known models: "
                               f"{sorted(m.name for m in cfg.models)}")
        core = _cores[name] = build_core(model, memory_mb(cfg))
    return core


def _error(status: int, message: str) -> dict[str, Any]:
    return {"status": status, "body_b64": base64.b64encode(orjson.dumps({"error": message}))
            .decode(), "headers": {"content-type": "application/json"}}


def _parse_event(event: Any) -> tuple[str, list[Any]]:
    if not isinstance(event, dict):
        raise InvalidEvent(f"the event must be an object with 'model' and 'requests', got "
                           f"{type(event).__name__}")
    model, requests = event.get("model"), event.get("requests")
    if not isinstance(model, str):
        raise InvalidEvent(f"event 'model' must be a model name (a string), got {model!r}")
    if not isinstance(requests, list):
        raise InvalidEvent("event 'requests' must be a list of {body_b64, headers}")
    return model, requests


def _decode(item: Any, i: int, model: ModelConfig) -> V2Request:
    if not isinstance(item, dict) or not isinstance(item.get("body_b64"), str):
        raise BadRequest(f"requests[{i}] must be an object with 'body_b64' (a base64 string)")
    headers = item.get("headers") or {}
    if not isinstance(headers, dict):
        raise BadRequest(f"requests[{i}].headers must be an object")
    headers = {str(k).lower(): v for k, v in headers.items()}
    try:
        body = base64.b64decode(item["body_b64"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"requests[{i}].body_b64 is not valid base64: {exc}") from exc
    hlen = headers.get("inference-header-content-length")
    return decode_request(body, None if hlen is None else str(hlen), model)


def _batches(valid: Sequence[tuple[int, V2Request]], max_batch: int) -> list[list[tuple[int, V2Request]]]:
    """Consecutive groups of at most ``max_batch`` rows (one group without batching)."""
    if max_batch <= 0:
        return [list(valid)] if valid else []
    groups: list[list[tuple[int, V2Request]]] = []
    rows = 0
    for slot in valid:
        if not groups or rows + slot[1].batch_size > max_batch:
            groups.append([])
            rows = 0
        groups[-1].append(slot)
        rows += slot[1].batch_size
    return groups


def handle(event: Any) -> dict[str, Any]:
    """The result for ``event`` (see the module docstring); raises ``InvalidEvent`` for a
    malformed event or an unknown model."""
    started = time.perf_counter()
    name, items = _parse_event(event)
    core = load(name)
    model = config().model(name)
    assert model is not None  # load() checked it
    responses: list[dict[str, Any] | None] = [None] * len(items)
    valid: list[tuple[int, V2Request]] = []
    for i, item in enumerate(items):
        try:
            valid.append((i, _decode(item, i, model)))
        except MarkError as exc:
            responses[i] = _error(exc.status, exc.message)
    for group in _batches(valid, model.max_batch_size):
        inputs = [req.inputs for _, req in group]
        if isinstance(core, ProfiledCore):  # the handler's own decoding counts as service
            outs = core.execute(inputs, started_at=started)
        else:
            outs = core.execute(inputs)
        started = time.perf_counter()
        for (i, req), out in zip(group, outs, strict=True):
            body, headers = encode_response(model, req, out)
            responses[i] = {"status": 200, "body_b64": base64.b64encode(body).decode(),
                            "headers": headers}
    for item, resp in zip(items, responses, strict=True):  # the invocation's log (its tail
        rid = _request_id(item)  # comes back to the front end in X-Amz-Log-Result)
        status = resp["status"] if resp is not None else None
        log.info("request_id=%s model=%s status=%s", rid, name, status,
                 extra={"request_id": rid, "model": name})
    return {"responses": responses}


def _request_id(item: Any) -> str:
    """The front end's ``x-request-id`` of one request of the event ("-" when it has none)."""
    headers = item.get("headers") if isinstance(item, dict) else None
    if isinstance(headers, dict):
        for k, v in headers.items():
            if str(k).lower() == "x-request-id":
                return str(v)[:128]
    return "-"


def handler(event: Any, context: Any) -> dict[str, Any]:
    """Lambda's entry point (``CMD ["mark.faas.handler.handler"]``); ``context`` is unused."""
    return handle(event)


if os.environ.get(MODEL_ENV):  # Lambda's init phase: load the model before the first event
    load(os.environ[MODEL_ENV])
