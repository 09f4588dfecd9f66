"""The state store contract over both stores (Redis: a real server on loopback), count batches
counted once, CountPublisher across a real Redis outage, the leader lock, and failures."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from mark.core.config import StateConfig
from mark.core.errors import ConfigError, MarkError
from mark.core.state import (
    STATE_STORES,
    CountPublisher,
    MemoryStateStore,
    RedisStateStore,
    StateStore,
    StateUnavailable,
    make_state_store,
    redact_url,
)
from tests.servers import PrivateRedis, free_port, pings


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Redis on 127.0.0.1:6379 when it answers, else a private one for this session."""
    if pings(6379):
        yield "redis://127.0.0.1:6379/0"
        return
    server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server.url
    server.kill()


@pytest.fixture
async def make_store(request: pytest.FixtureRequest, redis_url: str
                     ) -> AsyncIterator[Callable[..., StateStore]]:
    """A factory of started stores of the parametrized kind; Redis ones under a unique prefix
    (deleted afterwards) so tests never see each other's keys."""
    kind: str = request.param
    prefix = f"test:{uuid.uuid4().hex}:"
    made: list[StateStore] = []

    def make(**kw: Any) -> StateStore:
        store: StateStore = (MemoryStateStore(**kw) if kind == "memory"
                             else RedisStateStore(redis_url, prefix=prefix, timeout_s=2.0, **kw))
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()
    if kind == "redis":
        r = redis.Redis.from_url(redis_url)
        keys = list(r.scan_iter(match=prefix + "*"))
        if keys:
            r.delete(*keys)


BOTH = pytest.mark.parametrize("make_store", ["memory", "redis"], indirect=True)


@pytest.fixture
async def store(make_store: Callable[..., StateStore]) -> StateStore:
    s = make_store()
    await s.start()
    return s


# ---------------------------------------------------------------- the contract, both stores

@BOTH
async def test_models_registry_versions_every_change(store: StateStore) -> None:
    assert await store.models_version() == 0
    assert await store.get_models() == {}
    assert await store.put_model("a", {"slo_ms": 100, "types": ["c5.large"]}) == 1
    assert await store.put_model("b", {"slo_ms": 200, "by_id": {1: "x"}}) == 2
    assert await store.put_model("a", {"slo_ms": 150}) == 3
    # a JSON round trip: integer keys come back as strings, from either store
    assert await store.get_models() == {"a": {"slo_ms": 150}, "b": {"slo_ms": 200, "by_id": {"1": "x"}}}
    await store.put_plan("b", {"types": {"c5.large": 2}})
    assert await store.delete_model("b") == 4
    assert await store.get_models() == {"a": {"slo_ms": 150}}
    assert await store.get_plans() == {}, "delete_model removes the model's plan too"
    assert await store.models_version() == 4


@BOTH
async def test_stored_documents_are_copies(store: StateStore) -> None:
    doc = {"slo_ms": 100}
    await store.put_model("a", doc)
    doc["slo_ms"] = 1
    got = await store.get_models()
    got["a"]["slo_ms"] = 2
    assert (await store.get_models())["a"] == {"slo_ms": 100}


@BOTH
async def test_fleet_snapshot_and_its_seq(store: StateStore) -> None:
    assert await store.fleet_seq() == 0
    assert await store.get_fleet() is None
    await store.put_fleet({"seq": 7, "instances": [{"id": "i-1", "state": "ready"}]})
    assert await store.fleet_seq() == 7
    assert await store.get_fleet() == {"seq": 7, "instances": [{"id": "i-1", "state": "ready"}]}
    await store.put_fleet({"seq": 8, "instances": []})
    assert (await store.fleet_seq(), await store.get_fleet()) == (8, {"seq": 8, "instances": []})


@BOTH
async def test_plans(store: StateStore) -> None:
    assert await store.get_plans() == {}
    await store.put_plan("a", {"x": 1})
    await store.put_plan("b", {"x": 2})
    await store.put_plan("a", {"x": 3})
    assert await store.get_plans() == {"a": {"x": 3}, "b": {"x": 2}}


@BOTH
async def test_counts_per_second_over_a_half_open_range(store: StateStore) -> None:
    hour = (int(time.time()) // 3600 - 1) * 3600  # a whole past hour, plus its neighbours
    await store.add_counts("b1", {"a": {hour - 1: 2, hour: 3, hour + 3599: 4, hour + 3600: 5},
                                  "b": {hour: 9}})
    await store.add_counts("b2", {"a": {hour: 1}})
    assert await store.counts("a", hour - 1, hour + 3601) == {
        hour - 1: 2, hour: 4, hour + 3599: 4, hour + 3600: 5}
    assert await store.counts("a", hour, hour + 3600) == {hour: 4, hour + 3599: 4}
    assert await store.counts("a", hour + 1, hour + 3599) == {}
    assert await store.counts("b", hour - 10, hour + 10) == {hour: 9}
    assert await store.counts("nope", hour - 10, hour + 10) == {}
    assert await store.counts("a", hour + 5, hour) == {}


@BOTH
async def test_a_count_batch_counts_once_however_often_sent(store: StateStore) -> None:
    now = int(time.time())
    batch = {"a": {now: 3, now - 1: 1}}
    await store.add_counts("same", batch)
    await store.add_counts("same", batch)
    await asyncio.gather(*(store.add_counts("race", {"a": {now: 10}}) for _ in range(5)))
    assert await store.counts("a", now - 1, now + 1) == {now - 1: 1, now: 13}


@BOTH
async def test_counts_older_than_the_retention_are_dropped(make_store: Callable[..., StateStore]
                                                           ) -> None:
    store = make_store(retention_s=600)
    now = int(time.time())
    await store.add_counts("b", {"a": {now - 5000: 7, now - 700: 1, now - 10: 2}})
    assert await store.counts("a", now - 10_000, now + 1) == {now - 10: 2}


async def test_memory_store_forgets_old_hours_and_batch_ids() -> None:
    t = [1_000_000.0 * 3600]
    store = MemoryStateStore(retention_s=600, time_s=lambda: t[0])
    now = int(t[0])
    await store.add_counts("b1", {"a": {now: 1}, "b": {now: 1}})
    t[0] += 3 * 3600
    await store.add_counts("b2", {"a": {int(t[0]): 1}})
    assert list(store._counts) == ["a"] and len(store._counts["a"]) == 1
    assert list(store._batches) == ["b2"], "batch ids are forgotten after an hour"


async def test_redis_count_hours_expire_after_the_retention(redis_url: str) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    store = RedisStateStore(redis_url, prefix=prefix, retention_s=600)
    now = int(time.time())
    await store.add_counts("b", {"a": {now: 1}})
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        [key] = r.keys(prefix + "counts:*")
        assert key == f"{prefix}counts:a:{now // 3600}"
        expires_at = (now // 3600 + 1) * 3600 + 600
        assert expires_at - now - 2 <= r.ttl(key) <= expires_at - now
        assert 3590 <= r.ttl(f"{prefix}batch:b") <= 3600
    finally:
        r.delete(*r.keys(prefix + "*"))
        await store.close()


@BOTH
async def test_reports_expire(store: StateStore) -> None:
    await store.put_report("w1", {"seq": 1, "inflight": 3, "faas_usd": 0.5}, ttl_s=30)
    await store.put_report("w2", {"seq": 4, "inflight": 0}, ttl_s=0.2)
    assert await store.reports() == [
        {"seq": 1, "inflight": 3, "faas_usd": 0.5, "worker_id": "w1"},
        {"seq": 4, "inflight": 0, "worker_id": "w2"},
    ]
    await asyncio.sleep(0.3)
    await store.put_report("w1", {"seq": 2, "inflight": 1}, ttl_s=30)
    assert await store.reports() == [{"seq": 2, "inflight": 1, "worker_id": "w1"}]


@BOTH
async def test_views(store: StateStore) -> None:
    assert await store.get_view("cost") is None
    await store.put_view("cost", {"usd": 1.5})
    await store.put_view("decisions", [{"t": 1, "why": "forecast up"}])
    assert await store.get_view("cost") == {"usd": 1.5}
    assert await store.get_view("decisions") == [{"t": 1, "why": "forecast up"}]


@BOTH
async def test_commands_fifo_each_delivered_once(store: StateStore) -> None:
    assert await store.pop_commands() == []
    for i in range(10):
        await store.push_command({"op": "drain", "i": i})
    assert await store.pop_commands(max_n=3) == [{"op": "drain", "i": i} for i in range(3)]
    got = await asyncio.gather(*(store.pop_commands(max_n=2) for _ in range(6)))
    flat = [c["i"] for batch in got for c in batch]
    assert sorted(flat) == list(range(3, 10)), "every command exactly once"
    assert await store.pop_commands() == []


@BOTH
async def test_leader_lock(store: StateStore) -> None:
    assert await store.leader() is None
    assert await store.acquire_leader("a", ttl_s=1.0)
    assert not await store.acquire_leader("b", ttl_s=1.0)
    assert await store.leader() == "a"
    await store.release_leader("b")  # not b's: nothing happens
    assert await store.leader() == "a"
    await asyncio.sleep(0.5)
    assert await store.acquire_leader("a", ttl_s=1.0), "the owner renews"
    await asyncio.sleep(0.6)  # past the first expiry, within the renewed one (0.4 s of slack)
    assert await store.leader() == "a", "renewal pushed the expiry out"
    assert not await store.acquire_leader("b", ttl_s=1.0)
    await asyncio.sleep(0.5)
    assert await store.leader() is None, "expired"
    assert await store.acquire_leader("b", ttl_s=5)
    assert not await store.acquire_leader("a", ttl_s=5)
    await store.release_leader("b")
    assert await store.leader() is None
    assert await store.acquire_leader("a", ttl_s=5)


@BOTH
async def test_only_one_of_many_contenders_wins(store: StateStore) -> None:
    won = await asyncio.gather(*(store.acquire_leader(f"o{i}", ttl_s=5) for i in range(8)))
    assert sum(won) == 1
    assert await store.leader() == f"o{won.index(True)}"


@BOTH
async def test_healthy(store: StateStore) -> None:
    assert await store.healthy()


def test_factory_builds_the_configured_store() -> None:
    assert isinstance(make_state_store(StateConfig()), MemoryStateStore)
    r = make_state_store(StateConfig(backend="redis", url="redis://:pw@127.0.0.1:1/2", prefix="p:",
                                     timeout_s=0.5), retention_s=60)
    assert isinstance(r, RedisStateStore)
    assert (r.prefix, r.timeout_s, r.retention_s, r.url) == ("p:", 0.5, 60, "redis://:***@127.0.0.1:1/2")
    assert set(STATE_STORES) == {"memory", "redis"}
    with pytest.raises(ConfigError, match="memory, redis"):
        STATE_STORES.lookup("etcd")


def test_redact_url() -> None:
    assert redact_url("redis://u:secret@h:6379/0") == "redis://u:***@h:6379/0"
    assert redact_url("rediss://:secret@h/0?x=1") == "rediss://:***@h/0?x=1"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    assert redact_url("unix:///tmp/r.sock") == "unix:///tmp/r.sock"


# ---------------------------------------------------------------- failures of Redis itself

async def test_unreachable_redis_is_state_unavailable_with_the_password_redacted() -> None:
    port = free_port()  # nothing listens there
    store = RedisStateStore(f"redis://admin:hunter2@127.0.0.1:{port}/0", timeout_s=0.5)
    with pytest.raises(StateUnavailable) as err:
        await store.start()
    assert isinstance(err.value, MarkError) and err.value.status == 503
    msg = str(err.value)
    assert f"127.0.0.1:{port}" in msg and "***" in msg and "start" in msg
    assert "hunter2" not in msg and "hunter2" not in repr(err.value.__cause__)
    with pytest.raises(StateUnavailable, match="get_models"):
        await store.get_models()
    assert not await store.healthy()
    await store.close()


async def test_a_redis_that_does_not_answer_times_out() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        store = RedisStateStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.3)
        t0 = time.monotonic()
        with pytest.raises(StateUnavailable, match=f"leader at redis://127.0.0.1:{port}/0"):
            await store.leader()
        assert time.monotonic() - t0 < 1.5
        assert not await store.healthy()
        await store.close()


# ---------------------------------------------------------------- CountPublisher

class FlakyStore(MemoryStateStore):
    """A memory store that records each count batch it is sent and can fail: ``down`` refuses
    the batch; ``lose_reply`` applies it, then fails as if the reply were lost."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, dict[str, dict[int, int]]]] = []
        self.down = False
        self.lose_reply = False

    async def add_counts(self, batch_id: str, counts: dict[str, dict[int, int]]) -> None:
        self.sent.append((batch_id, {m: dict(c) for m, c in counts.items()}))
        if self.down:
            raise StateUnavailable("state store add_counts at memory:// failed: down")
        await super().add_counts(batch_id, counts)
        if self.lose_reply:
            raise StateUnavailable("state store add_counts at memory:// timed out")


async def test_publisher_retries_the_exact_failed_batch_first() -> None:
    now = int(time.time())
    store = FlakyStore()
    pub = CountPublisher()
    pub.add("a", now_s=now)
    pub.add("a", 2, now_s=now)
    assert await pub.flush(store)
    assert pub.pending_requests() == 0
    store.down = True
    pub.add("a", now_s=now + 1)
    assert not await pub.flush(store)
    pub.add("a", 5, now_s=now + 2)
    pub.add("b", now_s=now + 2)
    assert not await pub.flush(store)
    assert pub.pending_requests() == 7
    store.down = False
    assert await pub.flush(store)
    ids = [bid for bid, _ in store.sent]
    assert ids[1] == ids[2] == ids[3] != ids[4] and len(set(ids)) == 3
    assert store.sent[1][1] == store.sent[3][1] == {"a": {now + 1: 1}}, "same id, same content"
    assert store.sent[4][1] == {"a": {now + 2: 5}, "b": {now + 2: 1}}
    assert await store.counts("a", now, now + 3) == {now: 3, now + 1: 1, now + 2: 5}
    assert pub.pending_requests() == 0
    assert await pub.flush(store) and len(store.sent) == 5, "nothing to send sends nothing"


async def test_publisher_counts_a_batch_whose_reply_was_lost_once() -> None:
    now = int(time.time())
    store = FlakyStore()
    pub = CountPublisher()
    pub.add("a", 4, now_s=now)
    store.lose_reply = True
    assert not await pub.flush(store)  # applied, but the publisher cannot know
    store.lose_reply = False
    assert await pub.flush(store)
    assert store.sent[0] == store.sent[1]
    assert await store.counts("a", now, now + 1) == {now: 4}


async def test_publisher_never_raises_out_of_flush() -> None:
    class Broken(MemoryStateStore):
        async def add_counts(self, batch_id: str, counts: dict[str, dict[int, int]]) -> None:
            raise RuntimeError("bug")

    pub = CountPublisher()
    pub.add("a")
    assert not await pub.flush(Broken())
    assert pub.pending_requests() == 1


def test_publisher_memory_is_capped_dropping_the_oldest(caplog: pytest.LogCaptureFixture) -> None:
    pub = CountPublisher(max_pending_cells=100)
    with caplog.at_level(logging.WARNING, logger="mark.core.state.counts"):
        for s in range(150):
            pub.add("a", 2, now_s=1_000 + s)
    kept = pub._pending["a"]
    assert len(kept) <= 100 and max(kept) == 1_149 and min(kept) > 1_000
    assert pub.dropped_requests() + pub.pending_requests() == 300
    assert pub.dropped_requests() > 0
    assert "dropped the oldest" in caplog.text


async def test_publisher_across_a_real_redis_outage(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path)
    server.start()
    store = RedisStateStore(server.url, prefix="outage:", timeout_s=0.5)
    pub = CountPublisher(source="w1-")
    added: dict[int, int] = {}
    now = int(time.time())

    def add(k: int, n: int) -> None:
        s = now - 30 + k
        pub.add("m", n, now_s=s)
        added[s] = added.get(s, 0) + n

    try:
        await store.start()
        for k in range(5):
            add(k, k + 1)
        assert await pub.flush(store)

        server.kill()
        for k in range(5, 12):
            add(k, 3)
            add(k % 3, 1)  # seconds already sent get more
            assert not await pub.flush(store), "flush fails quietly while Redis is down"
        assert not await store.healthy()
        assert pub.pending_requests() == sum(added.values()) - sum(range(1, 6))

        server.start()
        assert await pub.flush(store)
        assert pub.pending_requests() == 0
        assert await store.counts("m", now - 60, now + 1) == added

        # the ambiguous case against Redis: the batch got applied, its reply was lost
        add(20, 7)
        lost = FlakyStore()
        lost.lose_reply = True
        assert not await pub.flush(lost)
        batch_id, counts = lost.sent[0]
        await store.add_counts(batch_id, counts)  # what Redis had done before the reply got lost
        assert await pub.flush(store)
        assert await store.counts("m", now - 60, now + 1) == added
    finally:
        await store.close()
        server.kill()
