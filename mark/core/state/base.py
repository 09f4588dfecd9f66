"""The state store's contract: one truth shared by front-end workers, hosts and the control loop.

A :class:`StateStore` holds JSON-able documents (dicts in, equal dicts out: a JSON round trip,
so integer keys come back as strings) under a few names:

- the **models** registry (``put_model``/``delete_model`` bump ``models_version``, which
  followers poll cheaply and re-read ``get_models`` only on change);
- the **fleet** snapshot the control loop publishes (its int ``seq`` is readable alone through
  ``fleet_seq``; readers refetch when it differs from the one they hold);
- the **serving plans** per model (removed with the model);
- **arrival counts** per model per epoch second (``int(time.time())``, shared across hosts),
  added in batches that count once however often they are sent (see
  :class:`~mark.core.state.counts.CountPublisher`) and dropped after a retention;
- **worker reports** that expire unless republished, **views** the control loop publishes for
  any front end to serve, a FIFO of **commands** for the control loop, and a **leader** lock
  with expiry so only one control loop acts at a time.

Every operation of a remote store that cannot reach its server raises :class:`StateUnavailable`
(503) naming the operation and the store's URL with any password redacted; ``healthy`` never
raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from mark.core.config import StateConfig
from mark.core.errors import ServiceUnavailable
from mark.core.registry import Registry

DEFAULT_RETENTION_S = 2 * 86_400
"""Arrival counts older than this (s) are dropped."""

BATCH_TTL_S = 3_600
"""How long an applied count batch's id is remembered (s): a resend within it counts once."""

HOUR_S = 3_600


class StateUnavailable(ServiceUnavailable):
    """The shared state store cannot be reached (refused, timed out, reset) or failed."""


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe to log and to put in errors)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port is not None else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:
        return "<unparsable url>"


@runtime_checkable
class StateStore(Protocol):
    """Shared state; every method is safe to call from many processes and hosts at once."""

    url: str
    """Where the store lives, password redacted (``memory://`` for the in-process one)."""

    async def start(self) -> None:
        """Connect and check; ``StateUnavailable`` naming the URL when it cannot."""
        ...

    async def close(self) -> None: ...

    async def healthy(self) -> bool:
        """Whether the store answers now; never raises."""
        ...

    # models registry
    async def get_models(self) -> dict[str, dict[str, Any]]: ...

    async def put_model(self, name: str, doc: dict[str, Any]) -> int:
        """Store (create or replace) ``name``; returns the new models version."""
        ...

    async def delete_model(self, name: str) -> int:
        """Remove ``name`` and its plan; returns the new models version (bumped even when
        there was no such model)."""
        ...

    async def models_version(self) -> int:
        """Increases on every put/delete; 0 before the first."""
        ...

    # fleet snapshot
    async def put_fleet(self, snap: dict[str, Any]) -> None:
        """Replace the snapshot; ``snap["seq"]`` (an int) becomes ``fleet_seq``."""
        ...

    async def get_fleet(self) -> dict[str, Any] | None: ...

    async def fleet_seq(self) -> int:
        """The stored snapshot's ``seq``, 0 when none."""
        ...

    # serving plans
    async def put_plan(self, model: str, doc: dict[str, Any]) -> None: ...

    async def get_plans(self) -> dict[str, dict[str, Any]]: ...

    # arrival counts
    async def add_counts(self, batch_id: str, counts: dict[str, dict[int, int]]) -> None:
        """Add ``counts[model][epoch_second]`` arrivals, atomically and once per ``batch_id``
        (a batch id seen within ``BATCH_TTL_S`` is ignored). Seconds older than the retention
        are dropped."""
        ...

    async def counts(self, model: str, start_s: int, end_s: int) -> dict[int, int]:
        """Arrivals of ``model`` per second in ``start_s .. end_s - 1`` (seconds without any
        are absent)."""
        ...

    # worker reports
    async def put_report(self, worker_id: str, doc: dict[str, Any], ttl_s: float) -> None:
        """Publish ``worker_id``'s report; it disappears ``ttl_s`` after its last put."""
        ...

    async def reports(self) -> list[dict[str, Any]]:
        """The live reports, each with ``worker_id`` added (ordered by worker id)."""
        ...

    # views
    async def put_view(self, name: str, doc: Any) -> None: ...

    async def get_view(self, name: str) -> Any | None: ...

    # commands
    async def push_command(self, doc: dict[str, Any]) -> None: ...

    async def pop_commands(self, max_n: int = 100) -> list[dict[str, Any]]:
        """Up to ``max_n`` oldest commands, first in first out; each is delivered once."""
        ...

    # leader election
    async def acquire_leader(self, owner: str, ttl_s: float) -> bool:
        """Take the lock for ``ttl_s`` if free, or renew it if ``owner`` holds it; whether
        ``owner`` holds it now."""
        ...

    async def release_leader(self, owner: str) -> None:
        """Free the lock if ``owner`` holds it (else nothing)."""
        ...

    async def leader(self) -> str | None:
        """The current holder, None when free."""
        ...


StateStoreFactory = Callable[..., StateStore]
STATE_STORES: Registry[StateStoreFactory] = Registry("state store")


def register_state_store(name: str) -> Callable[[StateStoreFactory], StateStoreFactory]:
    """Register a factory ``(cfg: StateConfig, *, retention_s: float) -> StateStore``."""
    return STATE_STORES.register(name)


def make_state_store(cfg: StateConfig, *, retention_s: float = DEFAULT_RETENTION_S) -> StateStore:
    """The store named by ``cfg.backend``, built from ``cfg`` (not yet started)."""
    return STATE_STORES.lookup(cfg.backend)(cfg, retention_s=retention_s)
