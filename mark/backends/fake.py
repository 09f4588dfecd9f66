"""The ``fake`` backend: instances that exist only in memory, for fast tests.

It keeps the backend contract (PENDING at launch, READY from ``wait_ready`` once its boot
delay has passed on its clock, terminate idempotent, ``close`` ends all, spot notices and
reclaims) and records every launch and termination, so control code can be tested without
processes, on a :class:`~mark.core.clock.VirtualClock` as well as on the wall clock. An
instance is ready at exactly ``launched_at + delay`` (its ``ready_at_s``), however late a
waiter looks. Each instance's ``url`` is the next of ``urls`` (cycled), e.g. scripted
servers on loopback, or an unreachable ``http://127.0.0.1:9/<id>`` when none are given.
``fail_types``: launches of these types fail (``ServiceUnavailable`` from ``wait_ready``),
to exercise the control loop's fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Collection, Sequence

from mark.backends.base import ExitCallback, LaunchSpec, NoticeCallback, register_backend
from mark.core.clock import Clock, WallClock
from mark.core.config import MarkConfig, ModelConfig
from mark.core.errors import Conflict, NotFound, ServiceUnavailable
from mark.core.instances import Instance, InstanceState, Market


class FakeBackend:
    name = "fake"

    def __init__(self, urls: Sequence[str] = (), ready_delay_s: float = 0.0,
                 clock: Clock | None = None, on_exit: ExitCallback | None = None,
                 on_notice: NoticeCallback | None = None, notice_s: float = 120.0,
                 fail_types: Collection[str] = ()) -> None:
        self.clock = clock or WallClock()
        self.ready_delay_s = ready_delay_s
        self.on_exit = on_exit
        self.on_notice = on_notice
        self.notice_s = notice_s
        self.fail_types = set(fail_types)
        self._urls = itertools.cycle(urls) if urls else None
        self._ids = itertools.count(1)
        self.instances: dict[str, Instance] = {}
        self.launched: list[str] = []
        self.terminated: list[str] = []
        self._reclaims: dict[str, asyncio.Task[None]] = {}

    def serve_models(self, models: Sequence[ModelConfig]) -> None:
        return None  # instances here serve whatever their launch names

    async def launch(self, spec: LaunchSpec) -> Instance:
        iid = f"fake-{next(self._ids)}"
        url = next(self._urls) if self._urls is not None else f"http://127.0.0.1:9/{iid}"
        delay = self.ready_delay_s if spec.ready_after_s is None else spec.ready_after_s
        inst = Instance(iid, spec.instance_type, spec.market, InstanceState.PENDING,
                        self.clock.now(), url=url, models=spec.models,
                        extra={"ready_after_s": delay, "spec": spec})
        self.instances[iid] = inst
        self.launched.append(iid)
        return inst

    async def wait_ready(self, instance_id: str, timeout_s: float) -> Instance:
        inst = self.instances.get(instance_id)
        if inst is None:
            raise NotFound(f"unknown instance {instance_id!r}")
        ready_at = inst.launched_at_s + float(inst.extra["ready_after_s"])
        if inst.instance_type in self.fail_types:
            await self.clock.sleep_until(min(ready_at, inst.launched_at_s + timeout_s))
            await self.terminate(instance_id)
            raise ServiceUnavailable(f"instance {instance_id} ({inst.instance_type}) failed to "
                                     "start (fake failure)")
        if ready_at - inst.launched_at_s > timeout_s:
            await self.clock.sleep_until(inst.launched_at_s + timeout_s)
            await self.terminate(instance_id)
            raise ServiceUnavailable(f"instance {instance_id} not ready within {timeout_s:g} s")
        await self.clock.sleep_until(ready_at)
        if inst.state == InstanceState.TERMINATED:
            raise ServiceUnavailable(f"instance {instance_id} was terminated before it was ready")
        if inst.state == InstanceState.PENDING:
            inst.state, inst.ready_at_s = InstanceState.READY, ready_at
        return inst

    async def terminate(self, instance_id: str) -> None:
        inst = self.instances.get(instance_id)
        if inst is None or inst.state == InstanceState.TERMINATED:
            return
        inst.state, inst.ended_at_s = InstanceState.TERMINATED, self.clock.now()
        self.terminated.append(instance_id)
        task = self._reclaims.pop(instance_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def notice(self, instance_id: str) -> float:
        inst = self.instances.get(instance_id)
        if inst is None or inst.state == InstanceState.TERMINATED:
            raise NotFound(f"unknown instance {instance_id!r}; known: "
                           f"{sorted(i for i, x in self.instances.items() if x.state != 'terminated')}")
        if inst.market != Market.SPOT:
            raise Conflict(f"instance {instance_id} is {inst.market.value}: only spot instances "
                           "get interruption notices")
        if "reclaim_at_s" in inst.extra:
            return float(inst.extra["reclaim_at_s"])
        at = self.clock.now() + self.notice_s
        inst.extra["reclaim_at_s"] = at
        inst.state = InstanceState.NOTICE
        self._reclaims[instance_id] = asyncio.create_task(self._reclaim(inst, at))
        if self.on_notice is not None:
            self.on_notice(inst, at)
        return at

    async def _reclaim(self, inst: Instance, at: float) -> None:
        await self.clock.sleep_until(at)
        if inst.state != InstanceState.TERMINATED:
            self.die(inst.id, code=-9)

    def die(self, instance_id: str, code: int = 1) -> None:
        """Make an instance end on its own (a crash, a reclaim): ``on_exit`` is told."""
        inst = self.instances[instance_id]
        inst.state, inst.ended_at_s = InstanceState.TERMINATED, self.clock.now()
        self._reclaims.pop(instance_id, None)
        if self.on_exit is not None:
            self.on_exit(inst, code)

    async def close(self) -> None:
        for iid in list(self.instances):
            await self.terminate(iid)
        for task in self._reclaims.values():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._reclaims.values(), return_exceptions=True)
        self._reclaims.clear()


@register_backend("fake")
def _fake(cfg: MarkConfig, on_exit: ExitCallback | None,
          on_notice: NoticeCallback | None) -> FakeBackend:
    return FakeBackend(ready_delay_s=cfg.fleet.launch_delay_s, on_exit=on_exit,
                       on_notice=on_notice, notice_s=cfg.fleet.spot_notice_s or 120.0)
