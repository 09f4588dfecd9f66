"""The backend plug point: where instances come from.

A backend launches and terminates serving instances (records of
:class:`mark.core.instances.Instance`). Implementations, by registry name: ``local`` (real
tritonserver processes on loopback) and ``fake`` (in memory, for tests); later ``aws``
(EC2 via boto3). All methods are async; none blocks the loop.

Contract:
- ``launch(spec)`` returns at once with a PENDING instance; ``wait_ready`` resolves when the
  instance's health endpoint says ready (or raises ``ServiceUnavailable`` on timeout/death).
- ``terminate(id)`` stops the instance and reaps it; terminating an unknown or already
  terminated instance is a no-op.
- ``close()`` terminates everything the backend launched.
- An instance that dies on its own is reported through the ``on_exit`` callback the backend
  was built with.
- A spot instance told it will be reclaimed (the cloud's interruption notice; emulated by
  ``local`` and ``fake`` at the catalogue's rate times ``fleet.spot_interruption_scale``, or
  on request through ``notice``) goes to state NOTICE and is reported through ``on_notice``
  with the time (backend clock) of the reclaim; at that time the backend ends it (``on_exit``).
- ``spec.ready_after_s`` (None: ``fleet.launch_delay_s``) is the boot the backend emulates
  (local, fake): ``wait_ready`` does not report ready before launch + that, however fast the
  process is. The starting fleet passes 0 (taken as already running).
- ``spec.max_batch_size`` / ``spec.max_queue_delay_us`` (None: the model's configuration)
  are the Triton dynamic-batching settings written into this instance's model
  configuration; a ``profiled`` model also gets ``spec.instance_type``'s service times.

Build one with :func:`make_backend` (``fleet.backend`` in the configuration); an unknown
name is a ``ConfigError`` listing the registered ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from mark.core.config import MarkConfig, ModelConfig
from mark.core.errors import Conflict, NotFound
from mark.core.instances import Instance, InstanceState, Market
from mark.core.registry import Registry


@dataclass(frozen=True)
class LaunchSpec:
    """What to launch: an instance type from the catalogue, its market, the models it serves."""

    instance_type: str = "local"
    market: Market = Market.ON_DEMAND
    models: tuple[str, ...] = ()
    max_batch_size: int | None = None
    max_queue_delay_us: int | None = None
    ready_after_s: float | None = None


#: Called with the instance and its exit code when an instance ends without being asked to.
ExitCallback = Callable[[Instance, int], None]
#: Called with a spot instance (now in state NOTICE) and the time it will be reclaimed.
NoticeCallback = Callable[[Instance, float], None]


@runtime_checkable
class Backend(Protocol):
    name: str

    async def launch(self, spec: LaunchSpec) -> Instance: ...

    async def wait_ready(self, instance_id: str, timeout_s: float) -> Instance: ...

    async def terminate(self, instance_id: str) -> None: ...

    async def notice(self, instance_id: str) -> float:
        """Give spot instance ``instance_id`` an interruption notice now; returns the reclaim
        time. ``NotFound`` (naming the known ids) for an unknown one, ``Conflict`` (naming its
        market) for an on-demand one."""
        ...

    def serve_models(self, models: Sequence[ModelConfig]) -> None:
        """The models later launches may ask for (models are registered while running)."""
        ...

    async def close(self) -> None:
        """Terminate everything this backend launched."""
        ...


def spot_to_notice(instances: Mapping[str, Instance], instance_id: str) -> Instance:
    """The live spot instance ``instance_id`` of ``instances`` (what ``notice`` acts on):
    ``NotFound`` naming the live ids, ``Conflict`` naming the market of an on-demand one."""
    inst = instances.get(instance_id)
    if inst is None or inst.state == InstanceState.TERMINATED:
        live = sorted(i for i, x in instances.items() if x.state != InstanceState.TERMINATED)
        raise NotFound(f"no live instance {instance_id!r}; live: {live}")
    if inst.market != Market.SPOT:
        raise Conflict(f"instance {instance_id} is {inst.market.value}: only spot "
                       "instances get interruption notices")
    return inst


BackendFactory = Callable[[MarkConfig, ExitCallback | None, NoticeCallback | None], Backend]
BACKENDS: Registry[BackendFactory] = Registry("backend")


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    return BACKENDS.register(name)


def make_backend(name: str, cfg: MarkConfig, on_exit: ExitCallback | None = None,
                 on_notice: NoticeCallback | None = None) -> Backend:
    """The backend registered as ``name``, built from the configuration."""
    return BACKENDS.lookup(name)(cfg, on_exit, on_notice)
