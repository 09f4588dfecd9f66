"""The control plane's side of the admin API (:class:`frontend.admin.AdminApi`)."""

from __future__ import annotations

from typing import Any

from mark.backends.base import Backend
from mark.control.loop import ControlLoop
from mark.control.models import ModelRegistry
from mark.core.errors import Conflict, NotFound
from mark.core.instances import InstanceState


class ControlAdmin:
    """Fleet, cost and decisions from the control loop; drains and notices through it;
    models through the ``registry`` (409 without one: no control loop)."""

    def __init__(self, loop: ControlLoop, backend: Backend,
                 registry: ModelRegistry | None = None) -> None:
        self.loop = loop
        self.backend = backend
        self.registry = registry

    def _registry(self) -> ModelRegistry:
        if self.registry is None:
            raise Conflict("models cannot be registered here: the control loop is off "
                           "(control.enabled: false); the configured models are served")
        return self.registry

    async def models(self) -> list[dict[str, Any]]:
        return await self._registry().listing()

    async def model(self, name: str) -> dict[str, Any]:
        return await self._registry().get(name)

    async def register(self, doc: Any) -> dict[str, Any]:
        return await self._registry().register(doc)

    async def update(self, name: str, doc: Any) -> dict[str, Any]:
        return await self._registry().update(name, doc)

    async def delete(self, name: str) -> dict[str, Any]:
        return await self._registry().delete(name)

    def _known(self, instance_id: str) -> None:
        if instance_id not in self.loop.fleet.instances:
            raise NotFound(f"unknown instance {instance_id!r}; known ids: "
                           f"{sorted(self.loop.fleet.instances)}")

    async def fleet(self) -> list[dict[str, Any]]:
        loop = self.loop
        now = loop.clock.now()
        out = []
        for i in loop.fleet.instances.values():
            if i.state == InstanceState.TERMINATED:
                continue
            out.append({
                "id": i.id, "url": i.url, "model": i.models[0] if len(i.models) == 1 else
                list(i.models), "instance_type": i.instance_type, "market": i.market.value,
                "state": i.state.value, "weight": float(i.capacity_rps),
                "launched_at": round(i.launched_at_s - loop.epoch, 3),
                "ready_at": None if i.ready_at_s is None else round(i.ready_at_s - loop.epoch, 3),
                "cost_usd": round(loop.ledger.cost_of(i.id, now), 6),
            })
        return out

    async def drain(self, instance_id: str) -> dict[str, Any]:
        self.loop.start_drain(instance_id)
        return {"id": instance_id, "state": InstanceState.DRAINING.value}

    async def notice(self, instance_id: str) -> dict[str, Any]:
        self._known(instance_id)
        at = await self.backend.notice(instance_id)  # Conflict for on-demand ones
        return {"id": instance_id, "state": InstanceState.NOTICE.value,
                "reclaim_at": round(at - self.loop.epoch, 3)}

    async def cost(self) -> dict[str, float]:
        return {k: round(v, 6) for k, v in self.loop.ledger.totals(self.loop.clock.now()).items()}

    async def decisions(self, since: float) -> list[dict[str, Any]]:
        return self.loop.decisions_since(since)
