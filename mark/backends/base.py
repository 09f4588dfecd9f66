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

Build one with :func:`make_backend` (``fleet.backend`` in the configuration); an unknown
name is a ``ConfigError`` listing the registered ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from mark.core.config import MarkConfig
from mark.core.instances import Instance, Market
from mark.core.registry import Registry


@dataclass(frozen=True)
class LaunchSpec:
    """What to launch: an instance type from the catalogue, its market, the models it serves."""

    instance_type: str = "local"
    market: Market = Market.ON_DEMAND
    models: tuple[str, ...] = ()


#: Called with the instance and its exit code when an instance ends without being asked to.
ExitCallback = Callable[[Instance, int], None]


@runtime_checkable
class Backend(Protocol):
    name: str

    async def launch(self, spec: LaunchSpec) -> Instance: ...

    async def wait_ready(self, instance_id: str, timeout_s: float) -> Instance: ...

    async def terminate(self, instance_id: str) -> None: ...

    async def close(self) -> None:
        """Terminate everything this backend launched."""
        ...


BackendFactory = Callable[[MarkConfig, ExitCallback | None], Backend]
BACKENDS: Registry[BackendFactory] = Registry("backend")


def register_backend(name: str) -> Callable[[BackendFactory], BackendFactory]:
    return BACKENDS.register(name)


def make_backend(name: str, cfg: MarkConfig, on_exit: ExitCallback | None = None) -> Backend:
    """The backend registered as ``name``, built from the configuration."""
    return BACKENDS.lookup(name)(cfg, on_exit)
