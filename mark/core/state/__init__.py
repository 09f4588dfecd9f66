"""Shared state: the models registry, the fleet, serving plans, arrival counts, worker reports,
views, commands and the leader lock, in process (``memory``) or in Redis (``redis``).

- :mod:`~mark.core.state.base`: the :class:`StateStore` contract, :class:`StateUnavailable`,
  the registry and :func:`make_state_store`;
- :mod:`~mark.core.state.memory`, :mod:`~mark.core.state.redis`: the two stores;
- :mod:`~mark.core.state.counts`: :class:`CountPublisher`, a process's arrival counts sent
  exactly once across store outages.
"""

from mark.core.state.base import (
    BATCH_TTL_S,
    DEFAULT_RETENTION_S,
    STATE_STORES,
    StateStore,
    StateUnavailable,
    make_state_store,
    redact_url,
    register_state_store,
)
from mark.core.state.counts import CountPublisher
from mark.core.state.memory import MemoryStateStore
from mark.core.state.redis import RedisStateStore

__all__ = [
    "BATCH_TTL_S",
    "DEFAULT_RETENTION_S",
    "STATE_STORES",
    "CountPublisher",
    "MemoryStateStore",
    "RedisStateStore",
    "StateStore",
    "StateUnavailable",
    "make_state_store",
    "redact_url",
    "register_state_store",
]
