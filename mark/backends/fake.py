"""The ``fake`` backend: instances that exist only in memory, for fast tests.

It keeps the backend contract (PENDING at launch, READY from ``wait_ready`` once
``ready_delay_s`` has passed on its clock, terminate idempotent, ``close`` ends all) and
records every launch and termination, so control code can be tested without processes.
Each instance's ``url`` is the next of ``urls`` (cycled), e.g. scripted servers on loopback,
or an unreachable ``http://127.0.0.1:9/<id>`` when none are given.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence

from mark.backends.base import ExitCallback, LaunchSpec, register_backend
from mark.core.clock import Clock, WallClock
from mark.core.config import MarkConfig
from mark.core.errors import NotFound, ServiceUnavailable
from mark.core.instances import Instance, InstanceState


class FakeBackend:
    name = "fake"

    def __init__(self, urls: Sequence[str] = (), ready_delay_s: float = 0.0,
                 clock: Clock | None = None, on_exit: ExitCallback | None = None) -> None:
        self.clock = clock or WallClock()
        self.ready_delay_s = ready_delay_s
        self.on_exit = on_exit
        self._urls = itertools.cycle(urls) if urls else None
        self._ids = itertools.count(1)
        self.instances: dict[str, Instance] = {}
        self.launched: list[str] = []
        self.terminated: list[str] = []

    async def launch(self, spec: LaunchSpec) -> Instance:
        iid = f"fake-{next(self._ids)}"
        url = next(self._urls) if self._urls is not None else f"http://127.0.0.1:9/{iid}"
        inst = Instance(iid, spec.instance_type, spec.market, InstanceState.PENDING,
                        self.clock.now(), url=url, models=spec.models)
        self.instances[iid] = inst
        self.launched.append(iid)
        return inst

    async def wait_ready(self, instance_id: str, timeout_s: float) -> Instance:
        inst = self.instances.get(instance_id)
        if inst is None:
            raise NotFound(f"unknown instance {instance_id!r}")
        wait = inst.launched_at_s + self.ready_delay_s - self.clock.now()
        if wait > timeout_s:
            raise ServiceUnavailable(f"instance {instance_id} not ready within {timeout_s:g} s")
        if inst.state == InstanceState.TERMINATED:
            raise ServiceUnavailable(f"instance {instance_id} was terminated before it was ready")
        if wait > 0:
            await asyncio.sleep(wait)
        inst.state, inst.ready_at_s = InstanceState.READY, self.clock.now()
        return inst

    async def terminate(self, instance_id: str) -> None:
        inst = self.instances.get(instance_id)
        if inst is None or inst.state == InstanceState.TERMINATED:
            return
        inst.state, inst.ended_at_s = InstanceState.TERMINATED, self.clock.now()
        self.terminated.append(instance_id)

    def die(self, instance_id: str, code: int = 1) -> None:
        """Make an instance end on its own (a crash, a reclaim): ``on_exit`` is told."""
        inst = self.instances[instance_id]
        inst.state, inst.ended_at_s = InstanceState.TERMINATED, self.clock.now()
        if self.on_exit is not None:
            self.on_exit(inst, code)

    async def close(self) -> None:
        for iid in list(self.instances):
            await self.terminate(iid)


@register_backend("fake")
def _fake(cfg: MarkConfig, on_exit: ExitCallback | None) -> FakeBackend:
    return FakeBackend(on_exit=on_exit)
