"""The state store in Redis (redis-py asyncio), shared by every worker, host and the provisioner.

Keys, all under ``prefix``::

    models          hash  name -> model document (JSON)
    models:v        int   models version (INCR on every put/delete)
    plans           hash  model -> serving plan (JSON)
    fleet           str   fleet snapshot (JSON);  fleet:seq  its "seq"
    counts:<m>:<h>  hash  epoch second -> arrivals of model m in epoch hour h; expires once
                          the whole hour is past the retention
    batch:<id>      str   an applied count batch (expires after BATCH_TTL_S)
    reports         zset  worker -> expiry (ms, server time);  reports:doc  hash worker -> doc
    view:<name>     str   a view (JSON)
    commands        list  commands (JSON), RPUSH / LPOP
    leader          str   the leader's name, with a PX expiry

Writes that must be atomic (a count batch, the leader lock, reports with expiry) are Lua
scripts. Every call is bounded by ``timeout_s`` and any failure (refused, timed out, reset,
an error reply) surfaces as :class:`~mark.core.state.base.StateUnavailable` naming the
operation and the URL with its password redacted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from mark.core.config import StateConfig
from mark.core.state.base import (
    BATCH_TTL_S,
    DEFAULT_RETENTION_S,
    HOUR_S,
    StateStore,
    StateUnavailable,
    redact_url,
    register_state_store,
)

T = TypeVar("T")

# KEYS[1] batch id key; KEYS[2..] count hashes. ARGV[1] batch ttl (ms); ARGV[i] for
# i in 2..#KEYS: the expiry (epoch s) of KEYS[i]; then triples (key index, second, n).
_ADD_COUNTS = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
local first = #KEYS + 1
for i = first, #ARGV, 3 do
  redis.call('HINCRBY', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2])
end
for i = 2, #KEYS do redis.call('EXPIREAT', KEYS[i], ARGV[i]) end
return 1
"""

# KEYS[1] leader key. ARGV[1] owner, ARGV[2] ttl (ms).
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1] reports zset, KEYS[2] reports:doc hash. Drops expired reports, returns server ms.
_DROP_EXPIRED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, w in ipairs(dead) do redis.call('HDEL', KEYS[2], w) end
if #dead > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now) end
"""

# ARGV[1] worker, ARGV[2] ttl (ms), ARGV[3] doc
_PUT_REPORT = _DROP_EXPIRED + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
"""

# returns a flat list worker, doc, worker, doc, ...
_REPORTS = _DROP_EXPIRED + """
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
local out = {}
for _, w in ipairs(live) do
  local doc = redis.call('HGET', KEYS[2], w)
  if doc then out[#out + 1] = w; out[#out + 1] = doc end
end
return out
"""


def _dump(doc: Any) -> str:
    return json.dumps(doc, separators=(",", ":"))


class RedisStateStore:
    """A :class:`~mark.core.state.base.StateStore` in Redis at ``url`` under ``prefix``."""

    def __init__(self, url: str, prefix: str = "mark:", timeout_s: float = 1.0,
                 retention_s: float = DEFAULT_RETENTION_S,
                 time_s: Callable[[], float] = time.time) -> None:
        self.url = redact_url(url)
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.retention_s = retention_s
        self._time_s = time_s
        try:
            self._password = urlsplit(url).password
        except ValueError:
            self._password = None
        try:
            self._redis = aioredis.Redis.from_url(
                url, decode_responses=True, socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 1),
            )
        except ValueError as exc:
            raise StateUnavailable(f"state store URL {self.url} is invalid: {self._scrub(exc)}") \
                from None
        self._add_counts = self._redis.register_script(_ADD_COUNTS)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._release = self._redis.register_script(_RELEASE)
        self._put_report = self._redis.register_script(_PUT_REPORT)
        self._reports = self._redis.register_script(_REPORTS)

    def _k(self, name: str) -> str:
        return self.prefix + name

    def _scrub(self, exc: BaseException) -> str:
        msg = str(exc) or type(exc).__name__
        if self._password:
            msg = msg.replace(self._password, "***")
        return msg

    async def _call(self, op: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis exchange within ``timeout_s``; any failure is ``StateUnavailable``.

        A cancellation that arrives meanwhile always propagates: redis-py may swallow it
        (return normally, or raise a connection error after closing the connection), which
        would leave a caller's retry loop running for ever (a front end that never stops)."""
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await fn()
        except TimeoutError as exc:
            self._reraise_cancel(task, cancels)
            raise StateUnavailable(
                f"state store {op} at {self.url} timed out after {self.timeout_s} s"
            ) from exc
        except (RedisError, OSError) as exc:
            self._reraise_cancel(task, cancels)
            raise StateUnavailable(
                f"state store {op} at {self.url} failed: {self._scrub(exc)}"
            ) from exc
        self._reraise_cancel(task, cancels)
        return result

    @staticmethod
    def _reraise_cancel(task: asyncio.Task[Any] | None, cancels: int) -> None:
        """CancelledError when ``task`` was asked to cancel since it had ``cancels``
        requests (and the request was swallowed on the way)."""
        if task is not None and task.cancelling() > cancels:
            raise asyncio.CancelledError

    async def start(self) -> None:
        await self._call("start (PING)", self._redis.ping)

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._redis.aclose()

    async def healthy(self) -> bool:
        try:
            await self._call("PING", self._redis.ping)
        except Exception:
            return False
        return True

    # models registry
    async def get_models(self) -> dict[str, dict[str, Any]]:
        raw = await self._call("get_models", lambda: self._redis.hgetall(self._k("models")))
        return {str(name): json.loads(doc) for name, doc in raw.items()}

    async def put_model(self, name: str, doc: dict[str, Any]) -> int:
        async def run() -> list[Any]:
            async with self._redis.pipeline(transaction=True) as p:
                p.hset(self._k("models"), name, _dump(doc))
                p.incr(self._k("models:v"))
                return await p.execute()

        return int((await self._call("put_model", run))[1])

    async def delete_model(self, name: str) -> int:
        async def run() -> list[Any]:
            async with self._redis.pipeline(transaction=True) as p:
                p.hdel(self._k("models"), name)
                p.hdel(self._k("plans"), name)
                p.incr(self._k("models:v"))
                return await p.execute()

        return int((await self._call("delete_model", run))[2])

    async def models_version(self) -> int:
        v = await self._call("models_version", lambda: self._redis.get(self._k("models:v")))
        return int(v or 0)

    # fleet snapshot
    async def put_fleet(self, snap: dict[str, Any]) -> None:
        seq = int(snap["seq"])

        async def run() -> list[Any]:
            async with self._redis.pipeline(transaction=True) as p:
                p.set(self._k("fleet"), _dump(snap))
                p.set(self._k("fleet:seq"), seq)
                return await p.execute()

        await self._call("put_fleet", run)

    async def get_fleet(self) -> dict[str, Any] | None:
        raw = await self._call("get_fleet", lambda: self._redis.get(self._k("fleet")))
        return None if raw is None else json.loads(raw)

    async def fleet_seq(self) -> int:
        v = await self._call("fleet_seq", lambda: self._redis.get(self._k("fleet:seq")))
        return int(v or 0)

    # serving plans
    async def put_plan(self, model: str, doc: dict[str, Any]) -> None:
        await self._call("put_plan", lambda: self._redis.hset(self._k("plans"), model, _dump(doc)))

    async def get_plans(self) -> dict[str, dict[str, Any]]:
        raw = await self._call("get_plans", lambda: self._redis.hgetall(self._k("plans")))
        return {str(m): json.loads(doc) for m, doc in raw.items()}

    # arrival counts
    def _hour_key(self, model: str, hour: int) -> str:
        return self._k(f"counts:{model}:{hour}")

    async def add_counts(self, batch_id: str, counts: dict[str, dict[int, int]]) -> None:
        oldest = int(self._time_s() - self.retention_s)
        keys = [self._k(f"batch:{batch_id}")]
        index: dict[str, int] = {}
        expiries: list[int] = []
        triples: list[int | str] = []
        for model, per_s in counts.items():
            for second, n in per_s.items():
                s = int(second)
                if s < oldest or not n:
                    continue
                hour = s // HOUR_S
                key = self._hour_key(model, hour)
                if key not in index:
                    keys.append(key)
                    index[key] = len(keys)  # Lua tables are 1-based
                    expiries.append(int((hour + 1) * HOUR_S + self.retention_s))
                triples += [index[key], s, int(n)]
        if not triples:
            return
        args: list[int | str] = [BATCH_TTL_S * 1000, *expiries, *triples]
        await self._call("add_counts", lambda: self._add_counts(keys=keys, args=args))

    async def counts(self, model: str, start_s: int, end_s: int) -> dict[int, int]:
        start = max(int(start_s), int(self._time_s() - self.retention_s))
        end = int(end_s)
        hours = list(range(start // HOUR_S, (end - 1) // HOUR_S + 1)) if end > start else []

        async def run() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as p:
                for hour in hours:
                    p.hgetall(self._hour_key(model, hour))
                return await p.execute()

        out: dict[int, int] = {}
        for raw in await self._call("counts", run) if hours else []:
            for s, n in raw.items():
                if start <= int(s) < end:
                    out[int(s)] = int(n)
        return dict(sorted(out.items()))

    # worker reports
    async def put_report(self, worker_id: str, doc: dict[str, Any], ttl_s: float) -> None:
        ttl_ms = max(1, int(ttl_s * 1000))
        await self._call("put_report", lambda: self._put_report(
            keys=[self._k("reports"), self._k("reports:doc")], args=[worker_id, ttl_ms, _dump(doc)]))

    async def reports(self) -> list[dict[str, Any]]:
        flat = await self._call("reports", lambda: self._reports(
            keys=[self._k("reports"), self._k("reports:doc")], args=[]))
        out = []
        for worker_id, raw in sorted(zip(flat[::2], flat[1::2], strict=True)):
            doc = json.loads(raw)
            doc.setdefault("worker_id", worker_id)
            out.append(doc)
        return out

    # views
    async def put_view(self, name: str, doc: Any) -> None:
        await self._call("put_view", lambda: self._redis.set(self._k(f"view:{name}"), _dump(doc)))

    async def get_view(self, name: str) -> Any | None:
        raw = await self._call("get_view", lambda: self._redis.get(self._k(f"view:{name}")))
        return None if raw is None else json.loads(raw)

    # commands
    async def push_command(self, doc: dict[str, Any]) -> None:
        await self._call("push_command", lambda: self._redis.rpush(self._k("commands"), _dump(doc)))

    async def pop_commands(self, max_n: int = 100) -> list[dict[str, Any]]:
        if max_n <= 0:
            return []
        raw = await self._call("pop_commands", lambda: self._redis.lpop(self._k("commands"), max_n))
        return [json.loads(str(d)) for d in raw or []]

    # leader election
    async def acquire_leader(self, owner: str, ttl_s: float) -> bool:
        ttl_ms = max(1, int(ttl_s * 1000))
        got = await self._call("acquire_leader", lambda: self._acquire(
            keys=[self._k("leader")], args=[owner, ttl_ms]))
        return bool(got)

    async def release_leader(self, owner: str) -> None:
        await self._call("release_leader", lambda: self._release(
            keys=[self._k("leader")], args=[owner]))

    async def leader(self) -> str | None:
        v = await self._call("leader", lambda: self._redis.get(self._k("leader")))
        return None if v is None else str(v)


@register_state_store("redis")
def _redis_store(cfg: StateConfig, *, retention_s: float = DEFAULT_RETENTION_S) -> StateStore:
    return RedisStateStore(cfg.url, prefix=cfg.prefix, timeout_s=cfg.timeout_s,
                           retention_s=retention_s)
