"""Faults under load, on the deployed topology (``bench/faults.py``'s stack): Redis, the function
runtime, ``mark provisioner`` and ``mark up --frontend-only`` (two front-end processes), each
its own OS process on loopback, serving the ``profiled`` Inception-v3 model.

The essentials of the fault bench, fast: kill -9 of an instance (nothing lost, the fleet
replaces it), SIGSTOP of an instance (nothing lost; late requests get an explicit 504 and the
provisioner's health checks take it out), the function runtime killed (spills answer an
explicit 503 at once, and spill again once it is back), a Redis restart (the front end keeps
serving, the state resyncs), kill -9 of a front-end worker (it is restarted), and kill -9 of
the provisioner (requests spill instead of failing, a restarted one leads, reaps what the dead
one left and the front end's admin API follows it). Each also guards the fix it found.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bench.faults import (
    MODEL,
    Load,
    Rec,
    Stack,
    StackOptions,
    alive,
    cmdline,
    descendants,
    kill_faas,
    kill_instance,
    kill_provisioner,
    kill_worker,
    restart_redis,
)
from mark.core.config import StateConfig
from mark.core.state import make_state_store
from mark.loadgen import build_request

pytestmark = [pytest.mark.triton, pytest.mark.slow,
              pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server is not installed (CI installs it)")]

RATE = 5.0  # req/s: about 70% of the two c5.xlarge instances' planned capacity (7.5 req/s)
N_BURST = 24  # at once: about twice what the two instances take within the SLO (the rest spill)


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    opts = StackOptions(instances=2, workers=2, launch_delay_s=1.0, spot=False,
                        min_instances=2, interval_s=2.0, leader_ttl_s=3.0, types=("c5.xlarge",))
    s = Stack(tmp_path_factory.mktemp("faults"), opts)
    try:
        await s.start(timeout_s=120)
        yield s
    finally:
        await asyncio.to_thread(s.stop)


async def ready(stack: Stack) -> list[dict[str, Any]]:
    return [i for i in await stack.fleet() or [] if i["state"] == "ready"]


async def until(what: str, pred: Any, timeout_s: float = 30.0, every_s: float = 0.2) -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        got = await pred()
        if got:
            return got
        await asyncio.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what}")


async def full_fleet(stack: Stack) -> list[dict[str, Any]]:
    return await until("the fleet at its size",
                       lambda: _at_least(stack, stack.opts.instances), 60)


async def _at_least(stack: Stack, n: int) -> list[dict[str, Any]] | None:
    got = await ready(stack)
    return got if len(got) >= n else None


def outcome(recs: list[Rec]) -> tuple[int, Counter[int], int]:
    """(ok, errors by status, lost)."""
    return (sum(r.status == 200 for r in recs),
            Counter(r.status for r in recs if r.status > 0 and r.status != 200),
            sum(r.status == 0 for r in recs))


async def burst(url: str, n: int, timeout_s: float = 30.0) -> list[tuple[int, str, str, float]]:
    """``n`` requests at once: (status, x-mark-backend, error, seconds) each."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s:
        async with s.get(f"{url}/v2/models/{MODEL}") as r:
            body = build_request(await r.json())

        async def one() -> tuple[int, str, str, float]:
            t0 = time.monotonic()
            async with s.post(f"{url}/v2/models/{MODEL}/infer", data=body,
                              headers={"content-type": "application/json"}) as r:
                text = await r.text()
                return (r.status, r.headers.get("x-mark-backend", ""),
                        "" if r.status == 200 else text, time.monotonic() - t0)

        return list(await asyncio.gather(*(one() for _ in range(n))))


# ---- the faults -----------------------------------------------------------------------------

async def test_killing_an_instance_under_load_loses_nothing_and_it_is_replaced(
        stack: Stack) -> None:
    before = {i["id"] for i in await full_fleet(stack)}
    load = Load(stack.url, RATE, seed=1)
    await load.start()
    try:
        await asyncio.sleep(3.0)
        inj = await kill_instance(stack)
        victim = inj.notes["instance"]
        await until("a replacement", lambda: _replaced(stack, before, victim), 40)
        await asyncio.sleep(3.0)
    finally:
        await load.stop()
    ok, errors, lost = outcome(load.records)
    assert len(load.records) > 20
    assert (errors, lost) == (Counter(), 0), [r for r in load.records if r.status != 200]
    assert ok == len(load.records)


async def _replaced(stack: Stack, before: set[str], victim: str) -> bool:
    now = await ready(stack)
    ids = {i["id"] for i in now}
    return victim not in ids and len(now) >= stack.opts.instances and bool(ids - before)


async def test_a_stopped_instance_gets_explicit_504s_and_is_taken_out(stack: Stack) -> None:
    """SIGSTOP for 5 s: requests held there past their deadline (5 s) get 504, none hangs or
    is lost, and the provisioner's health checks take the instance out of routing (a hung
    instance's check used to raise, killing the health loop for good)."""
    fleet = await full_fleet(stack)
    victim = sorted(fleet, key=lambda i: i["launched_at"])[0]
    pid = stack.instance_pid(victim["url"])
    assert pid is not None
    load = Load(stack.url, RATE, seed=2)
    await load.start()
    states: list[str] = []
    try:
        await asyncio.sleep(2.0)
        os.killpg(pid, signal.SIGSTOP)
        try:
            t_stop = time.monotonic()
            while time.monotonic() - t_stop < 5.0:
                doc = {i["id"]: i["state"] for i in await stack.fleet() or []}
                states.append(doc.get(victim["id"], "gone"))
                await asyncio.sleep(0.25)
        finally:
            os.killpg(pid, signal.SIGCONT)
        await asyncio.sleep(6.0)
    finally:
        await load.stop()
    ok, errors, lost = outcome(load.records)
    assert lost == 0
    assert set(errors) <= {504}, errors
    assert ok + sum(errors.values()) == len(load.records)
    assert any(s != "ready" for s in states), f"never taken out of routing: {states}"
    # the health loop lives on: the fleet is whole and ready again
    await full_fleet(stack)


async def test_the_function_runtime_killed_spills_answer_503_at_once_then_recover(
        stack: Stack) -> None:
    await full_fleet(stack)
    # a control burst: more than the fleet serves within the SLO, so some spill
    healthy = await burst(stack.url, N_BURST)
    assert any(b == "faas" and s == 200 for s, b, _, _ in healthy), healthy
    await asyncio.sleep(2.0)

    sent: list[asyncio.Task[list[tuple[int, str, str, float]]]] = []
    inj = await kill_faas(stack, lambda: sent.append(asyncio.ensure_future(
        burst(stack.url, N_BURST))), down_s=4.0)
    assert inj.notes["sandboxes_killed"] > 0 and inj.notes["sandboxes_outliving_it"] == 0
    during = await sent[0]
    failed = [(s, why, secs) for s, _, why, secs in during if s != 200]
    assert failed, "nothing spilled while the runtime was down: the test proved nothing"
    for status, why, secs in failed:
        assert status == 503 and "FaaS endpoint" in why and "not reachable" in why, why
        assert secs < 3.0, f"a spill to a dead runtime took {secs:.1f} s"
    # back: spills are served by functions again (or refused explicitly, never hang)
    again = await burst(stack.url, N_BURST)
    assert any(b == "faas" and s == 200 for s, b, _, _ in again), again
    assert all(s in (200, 503, 504) for s, _, _, _ in again), again


async def test_a_redis_restart_keeps_the_front_end_serving_and_the_state_resyncs(
        stack: Stack) -> None:
    await full_fleet(stack)
    load = Load(stack.url, RATE, seed=3)
    await load.start()
    try:
        await asyncio.sleep(2.0)
        await restart_redis(stack, down_s=3.0)
        store = make_state_store(StateConfig(**stack.cfg["state"]))
        await store.start()
        try:
            snap = await until("the fleet published again", store.get_fleet, 15)
            assert len([i for i in snap["instances"] if i["state"] == "ready"]) >= 2
            assert MODEL in await store.get_models()
            assert await until("a leader again", store.leader, 15)
        finally:
            await store.close()
        await asyncio.sleep(3.0)
    finally:
        await load.stop()
    ok, errors, lost = outcome(load.records)
    assert (errors, lost) == (Counter(), 0)
    assert ok == len(load.records) > 30


async def test_a_killed_front_end_worker_is_restarted(stack: Stack) -> None:
    """kill -9 of the worker process: the connections it held are reset (the client sends
    those once more: counted as retried, not lost), and the front end starts another."""
    old = stack.worker_pids()
    assert len(old) == 1
    load = Load(stack.url, RATE, seed=4)
    await load.start()
    try:
        await asyncio.sleep(2.0)
        await kill_worker(stack)
        new = await until("a new worker", lambda: _new_worker(stack, old), 10)
        await asyncio.sleep(2.0)
    finally:
        await load.stop()
    assert new and not set(new) & set(old)
    ok, errors, lost = outcome(load.records)
    assert (errors, lost) == (Counter(), 0)
    assert ok == len(load.records)


async def _new_worker(stack: Stack, old: list[int]) -> list[int] | None:
    now = stack.worker_pids()
    return now if now and not set(now) & set(old) else None


def _stubs(stack: Stack) -> list[int]:
    """Python-backend stubs of this stack's instances, wherever their parent is."""
    prefix = str(stack.tmp / "runtime" / "triton-backends") + os.sep
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and cmdline(int(entry)).startswith(prefix):
            out.append(int(entry))
    return out


async def test_a_killed_provisioner_spills_instead_of_failing_and_its_successor_cleans_up(
        stack: Stack) -> None:
    """kill -9 of ``mark provisioner`` takes its instances with it. Requests whose retry also
    found a dead instance are spilled (they used to get 502); the restarted provisioner leads
    once the lock expires, kills the Python-backend stubs the dead one's instances left
    waiting for ever, and the front ends' admin routes follow its new address."""
    before = {i["id"] for i in await full_fleet(stack)}
    # busy instances: their stubs are mid-request when Triton dies
    load = Load(stack.url, 3 * RATE, seed=5)
    await load.start()
    try:
        await asyncio.sleep(3.0)
        old_stubs = _stubs(stack)
        assert old_stubs
        inj = await kill_provisioner(stack)
        assert inj.notes["instances_outliving_it"] == 0
        fleet = await until("the new provisioner's fleet, through the front end",
                            lambda: _at_least(stack, stack.opts.instances), 60)
        await asyncio.sleep(2.0)
    finally:
        await load.stop()
    assert not {i["id"] for i in fleet} & before  # the dead one's instances died with it
    left = [p for p in old_stubs if alive(p)]
    assert not left, f"stubs of the dead provisioner's instances still run: {left}"
    _, errors, lost = outcome(load.records)
    assert lost == 0
    assert 502 not in errors, errors
    assert set(errors) <= {503, 504}, errors


async def test_store_calls_end_when_cancelled(stack: Stack) -> None:
    """A task cancelled inside a store call ends (redis-py may swallow the cancellation: the
    front end's store-following loop then never ended and ``mark up`` hung when stopping)."""
    store = make_state_store(StateConfig(**stack.cfg["state"]))
    await store.start()
    rng = random.Random(0)

    async def spin() -> None:
        while True:
            await store.fleet_seq()

    hung = 0
    try:
        for _ in range(150):
            task = asyncio.create_task(spin())
            await asyncio.sleep(rng.uniform(0.0, 0.004))
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if not done:
                hung += 1
                task.cancel()
                await asyncio.wait({task}, timeout=0.5)
    finally:
        await store.close()
    assert hung == 0, f"{hung} of 150 cancelled store calls did not end"


async def test_stopping_leaves_no_instance_or_sandbox_behind(stack: Stack) -> None:
    family = {p for proc in [*stack.procs.values(), *stack.retired] for p in proc.family}
    for proc in stack.procs.values():
        proc.watch()
        family |= proc.family | descendants(proc.pid)
    result = await asyncio.to_thread(stack.stop)
    assert result["left_behind"] == [], result
    assert result["exit_codes"]["frontend"] == 0 and result["exit_codes"]["provisioner"] == 0
    assert not [p for p in family if alive(p)]
