"""The front end's view of the fleet: ready instances per model and their WRR routers."""

from __future__ import annotations

import logging

from frontend.protocol import ModelMetadata
from frontend.routing import WeightedRoundRobin
from mark.backends.base import Instance, InstanceState

log = logging.getLogger(__name__)


class Fleet:
    """Instances known to the front end. Only READY ones receive traffic."""

    def __init__(self, models: list[str]) -> None:
        self.models = list(models)
        self.instances: dict[str, Instance] = {}
        self.metadata: dict[str, ModelMetadata] = {}
        self._routers: dict[str, WeightedRoundRobin] = {m: WeightedRoundRobin() for m in models}

    def _rebuild(self) -> None:
        for model, router in self._routers.items():
            router.set_weights({
                i.id: i.capacity_rps
                for i in self.instances.values()
                if i.state == InstanceState.READY and model in i.models
            })

    def upsert(self, inst: Instance) -> None:
        self.instances[inst.id] = inst
        self._rebuild()

    def remove(self, instance_id: str, reason: str = "") -> None:
        if self.instances.pop(instance_id, None) is not None:
            log.warning("instance %s left the fleet: %s", instance_id, reason or "removed")
            self._rebuild()

    def set_state(self, instance_id: str, state: InstanceState, reason: str = "") -> None:
        inst = self.instances.get(instance_id)
        if inst is not None and inst.state != state:
            log.info("instance %s: %s -> %s %s", instance_id, inst.state.value, state.value, reason)
            inst.state = state
            self._rebuild()

    def ready(self, model: str) -> list[Instance]:
        router = self._routers.get(model)
        return [self.instances[i] for i in router.targets] if router else []

    def pick(self, model: str, n_requests: int, exclude: list[str]) -> Instance | None:
        tid = self._routers[model].pick(n_requests, exclude)
        return self.instances[tid] if tid is not None else None
