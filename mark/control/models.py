"""Models registered, changed and deleted while mark runs (``/admin/models``).

A :class:`ModelRegistry` keeps the configuration's model list, the front end, the control
loop, the backend and the function runtime in step:

- **register**: the body is a model configuration (:class:`~mark.core.config.ModelConfig`);
  it is validated and planned (its control built) before anything changes, so a bad body
  changes nothing; then the function is deployed, the front end serves the model, the loop
  plans it and launches its starting fleet (``fleet.instances`` of the plan's cheapest type,
  booting as any launch does).
- **update**: the SLO, the allowed types and markets and the WRR weight may change; the
  front end's deadlines change at once, the loop replans with the new SLO at once (its
  policy rebuilt, its counts and fleet kept), and the new plan's wait budgets reach the
  front end's spill decisions with it. Fields that shape the running instances or the
  function (kind, repository, profile, batching, memory) are refused with the reason.
- **delete**: the front end refuses the model from now on (404), the loop stops planning
  it and drains every instance (each finishes what it holds); once they are gone and its
  function is idle, the function is removed.

``on_change`` runs after every change (the application publishes the models to the state
store there).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from frontend.app import FrontEnd
from mark.backends.base import Backend
from mark.control.loop import ControlLoop, ModelControl
from mark.core.config import MarkConfig, ModelConfig
from mark.core.errors import BadRequest, Conflict, NotFound
from mark.core.profiles import shipped_profiles
from mark.faas.runtime import FunctionRuntime
from mark.models.repository import model_metadata, source_dir

log = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: What an update may change; the rest shapes running instances or the function.
MUTABLE = ("slo_latency_ms", "slo_percentile", "instance_types", "markets", "capacity_rps")

BuildControl = Callable[[MarkConfig, ModelConfig], ModelControl]


def validation_message(exc: ValidationError) -> str:
    """Pydantic's errors as ``field: what is wrong`` (the field's path dotted)."""
    return "; ".join(f"{'.'.join(str(x) for x in e['loc']) or '(body)'}: {e['msg']}"
                     for e in exc.errors())


class ModelRegistry:
    """See the module docstring. ``build``: a model's control (ConfigError naming the field
    when it cannot be planned)."""

    def __init__(self, cfg: MarkConfig, front: FrontEnd, loop: ControlLoop, backend: Backend,
                 build: BuildControl, runtime: FunctionRuntime | None = None,
                 starting_instances: int = 1, drain_timeout_s: float = 30.0,
                 on_change: Callable[[], Awaitable[None]] | None = None) -> None:
        self.cfg = cfg
        self.front = front
        self.loop = loop
        self.backend = backend
        self.build = build
        self.runtime = runtime
        self.starting_instances = starting_instances
        self.drain_timeout_s = drain_timeout_s
        self.on_change = on_change
        self.deleting: dict[str, list[str]] = {}  # model -> instances still draining
        self._busy: set[str] = set()  # names being registered or deleted
        self._tasks: set[asyncio.Task[None]] = set()
        for m in cfg.models:
            self._publish(m)

    # ---- reading ------------------------------------------------------------------------
    def _doc(self, m: ModelConfig) -> dict[str, Any]:
        return m.model_dump(mode="json")

    def describe(self, m: ModelConfig) -> dict[str, Any]:
        instances = [i.id for i in self.loop.instances_of(m.name)]
        return {**self._doc(m), "status": "serving", "instances": instances}

    def _model(self, name: str) -> ModelConfig:
        m = self.cfg.model(name)
        if m is None or name in self.deleting:
            raise NotFound(f"unknown model {name!r}; registered models: {self.names()}")
        return m

    def names(self) -> list[str]:
        return sorted(m.name for m in self.cfg.models if m.name not in self.deleting)

    async def listing(self) -> list[dict[str, Any]]:
        out = [self.describe(m) for m in self.cfg.models if m.name not in self.deleting]
        out += [{"name": n, "status": "deleting", "instances": ids}
                for n, ids in self.deleting.items()]
        return out

    async def get(self, name: str) -> dict[str, Any]:
        if name in self.deleting:
            return {"name": name, "status": "deleting", "instances": self.deleting[name]}
        return self.describe(self._model(name))

    # ---- changing -----------------------------------------------------------------------
    def _parse(self, doc: Any) -> ModelConfig:
        if not isinstance(doc, dict):
            raise BadRequest(f"the body must be a JSON object (a model configuration), got "
                             f"{type(doc).__name__}")
        try:
            model = ModelConfig.model_validate(doc)
        except ValidationError as exc:
            raise BadRequest(f"invalid model: {validation_message(exc)}") from exc
        if model.repository is not None:
            source_dir(model)  # ConfigError (400) naming the field
        return model

    def _check_paths(self, doc: dict[str, Any]) -> None:
        """A registered model's ``repository`` (code the server runs) and ``profile`` file
        must lie under ``admin.model_paths``; checked before anything reads them."""
        roots = [Path(r).resolve() for r in self.cfg.admin.model_paths]
        for field in ("repository", "profile"):
            value = doc.get(field)
            if not isinstance(value, str) or (field == "profile" and value in shipped_profiles()
                                              and not Path(value).exists()):
                continue  # absent, a shipped profile, or a type the validation names
            where = Path(value).resolve()
            if not any(where.is_relative_to(root) for root in roots):
                allowed = ", ".join(str(r) for r in roots) or "none: admin.model_paths is empty"
                raise BadRequest(
                    f"{field}: {value!r} is outside the directories a model registered through "
                    f"the admin API may read ({allowed})"
                    + ("; use a shipped profile: " + ", ".join(shipped_profiles())
                       if field == "profile" else ""))

    async def _plan(self, model: ModelConfig) -> ModelControl:
        """The model's control, built off the event loop (a policy may size its plans)."""
        return await asyncio.to_thread(self.build, self.cfg, model)

    def _publish(self, m: ModelConfig) -> None:
        fleet = self.front.fleet
        fleet.model_docs[m.name] = self._doc(m)
        fleet.fallback_metadata[m.name] = model_metadata(m)
        self.front.set_model(m)

    async def _changed(self) -> None:
        self.front.fleet.refresh()  # a new snapshot for the worker processes
        if self.on_change is not None:
            try:
                await self.on_change()
            except Exception:
                log.exception("publishing the models after a change failed")

    async def register(self, doc: Any) -> dict[str, Any]:
        if not isinstance(doc, dict) or "name" not in doc:
            raise BadRequest("name: required (the name clients use in /v2/models/{name}: "
                             "letters, digits, '_', '.', '-', at most 64, starting with a "
                             "letter or digit)")
        name = doc["name"]
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise BadRequest(f"name: {name!r} is not accepted: letters, digits, '_', '.', '-', "
                             "at most 64, starting with a letter or digit")
        if self.cfg.model(name) is not None or name in self._busy:
            raise Conflict(f"model {name!r} is registered already (or being deleted); update "
                           "it with PUT /admin/models/{name} or delete it first")
        self._check_paths(doc)
        model = self._parse(doc)
        self._busy.add(name)
        try:
            mc = await self._plan(model)
            self.cfg.models.append(model)
            self.backend.serve_models(self.cfg.models)
            if self.runtime is not None:
                self.runtime.add_function(model, mc.plan.faas.memory_mb)
            self._publish(model)
            self.loop.add_model(mc, self.starting_instances)
        finally:
            self._busy.discard(name)
        log.info("model %s registered (%s, SLO %g ms at p%g)", name, model.kind,
                 model.slo_latency_ms, model.slo_percentile)
        await self._changed()
        return self.describe(model)

    async def update(self, name: str, doc: Any) -> dict[str, Any]:
        old = self._model(name)
        if not isinstance(doc, dict):
            raise BadRequest(f"the body must be a JSON object (the fields to change: "
                             f"{', '.join(MUTABLE)}), got {type(doc).__name__}")
        if doc.get("name", name) != name:
            raise BadRequest(f"name: a model cannot be renamed ({name!r} -> {doc['name']!r}); "
                             "register the new name and delete the old one")
        before = self._doc(old)
        frozen = sorted(k for k, v in doc.items()
                        if k not in MUTABLE and k != "name" and before.get(k, v) != v)
        if frozen:
            raise BadRequest(f"{', '.join(frozen)}: cannot change on a registered model (they "
                             f"shape its running instances or function; delete and register "
                             f"again); an update may change: {', '.join(MUTABLE)}")
        unknown = sorted(k for k in doc if k not in before)
        if unknown:
            raise BadRequest(f"unknown field(s) {unknown}; an update may change: "
                             f"{', '.join(MUTABLE)}")
        model = self._parse({**before, **doc})
        mc = await self._plan(model)
        if self.cfg.model(name) is not old:
            raise Conflict(f"model {name!r} changed or was deleted meanwhile; retry")
        self.cfg.models[self.cfg.models.index(old)] = model
        self._publish(model)
        self.loop.update_model(mc)
        log.info("model %s updated: SLO %g ms at p%g", name, model.slo_latency_ms,
                 model.slo_percentile)
        await self._changed()
        return self.describe(model)

    async def delete(self, name: str) -> dict[str, Any]:
        self._model(name)
        if name in self._busy:
            raise Conflict(f"model {name!r} is being registered or deleted; retry")
        self.front.drop_model(name)
        drains = self.loop.remove_model(name, "model deleted")
        ids = [i.id for i in self.loop.instances_of(name)]
        self.deleting[name] = ids
        self._busy.add(name)
        task = asyncio.create_task(self._finish_delete(name, drains))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("model %s deleted: draining %s", name, ids)
        await self._changed()
        return {"name": name, "status": "deleting", "instances": ids}

    async def _finish_delete(self, name: str, drains: list[asyncio.Task[Any]]) -> None:
        try:
            await asyncio.gather(*drains, return_exceptions=True)
            if self.runtime is not None:
                pool = self.runtime.functions.get(self.cfg.faas.function_prefix + name)
                deadline = asyncio.get_running_loop().time() + self.drain_timeout_s
                # spilled requests still running there
                while pool is not None and pool.busy and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
                await self.runtime.remove_function(name)
            self.cfg.models[:] = [m for m in self.cfg.models if m.name != name]
            self.backend.serve_models(self.cfg.models)
        finally:
            self.deleting.pop(name, None)
            self._busy.discard(name)
        log.info("model %s: deleted, its fleet drained", name)
        await self._changed()

    async def settle(self) -> None:
        """Wait for deletions in progress (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
