"""The ``profiled`` model kind: its configuration, its repository variants, and live timing.

The live tests run real Triton instances of the shipped inception-v3 profile on loopback: a
request takes the profile's time on the instance's type, and concurrent requests are batched.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from pydantic import ValidationError

from mark.backends.base import LaunchSpec
from mark.backends.local import LocalBackend
from mark.core.config import ModelConfig, load_config
from mark.core.errors import ConfigError
from mark.core.instances import Instance, InstanceState
from mark.core.profiles import load_profile
from mark.loadgen import LoadClient, build_request
from mark.models.repository import launch_batching, variant_repository

PROFILE = load_profile("inception-v3")


def _profiled(**kw: object) -> ModelConfig:
    return ModelConfig.model_validate({"name": "inc", "kind": "profiled", **kw})


# --- configuration -----------------------------------------------------------------------

def test_profiled_needs_a_profile_and_names_the_shipped_ones(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"kind 'profiled' needs `profile`.*inception-v3"):
        _profiled()
    cfg = tmp_path / "mark.yaml"
    cfg.write_text("models:\n  - {name: inc, kind: profiled}\n")
    with pytest.raises(ConfigError, match=r"mark.yaml: invalid configuration: models.0: .*"
                       r"needs `profile`: a shipped profile \(.*inception-v3.*minilm"):
        load_config(cfg)
    with pytest.raises(ValidationError, match=r"profile: unknown profile 'nope'; shipped"):
        _profiled(profile="nope")


def test_profiled_batch_size_is_clamped_when_unset_and_refused_when_too_large() -> None:
    assert _profiled(profile="inception-v3").max_batch_size == 16  # default 32, profile's 16
    assert _profiled(profile="inception-v3", max_batch_size=8).max_batch_size == 8
    with pytest.raises(ValidationError, match=r"max_batch_size 32 exceeds the largest batch "
                       r"of profile 'inception-v3' \(16\)"):
        _profiled(profile="inception-v3", max_batch_size=32)


# --- repository variants -----------------------------------------------------------------

def _param(config: str, key: str) -> str:
    line = next(ln for ln in config.splitlines() if f'key: "{key}"' in ln)
    return line.split('string_value: "')[1].split('"')[0]


def test_each_type_gets_its_own_service_times_and_a_variant_is_reused(tmp_path: Path) -> None:
    m = _profiled(profile="inception-v3")
    a = variant_repository(tmp_path, [m], "c5.large")
    b = variant_repository(tmp_path, [m], "c5.xlarge", max_batch_size=8, max_queue_delay_us=2000)
    assert a != b and a.name.startswith("c5.large-b--d--") and b.name.startswith("c5.xlarge-b8-d2000-")
    assert variant_repository(tmp_path, [m], "c5.large") == a  # reused, not rewritten
    ca, cb = (p / "inc" / "config.pbtxt" for p in (a, b))
    ms_a = [float(x) for x in _param(ca.read_text(), "service_ms").split(",")]
    ms_b = [float(x) for x in _param(cb.read_text(), "service_ms").split(",")]
    assert len(ms_a) == 16 and ms_a[0] == 210.0 and ms_a[15] == 3045.0
    assert ms_a[2] == pytest.approx((399.0 + 777.0) / 2)  # batch 3: interpolated
    assert ms_b[0] == pytest.approx(132.391)
    assert "max_batch_size: 16\n" in ca.read_text() and "max_batch_size: 8\n" in cb.read_text()
    assert "max_queue_delay_microseconds: 0 " in ca.read_text()
    assert "max_queue_delay_microseconds: 2000 " in cb.read_text()
    assert (a / "inc" / "1" / "model.py").read_text().startswith('"""A Triton Python-backend')
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_identity_variants_differ_only_in_batching(tmp_path: Path) -> None:
    m = ModelConfig(name="identity", kind="identity")
    a = variant_repository(tmp_path, [m], "c5.large")
    b = variant_repository(tmp_path, [m], "m5.large")
    assert (a / "identity" / "config.pbtxt").read_text() == (b / "identity" / "config.pbtxt").read_text()
    c = variant_repository(tmp_path, [m], "c5.large", max_batch_size=4)
    assert "max_batch_size: 4\n" in (c / "identity" / "config.pbtxt").read_text()


def test_a_type_missing_from_the_profile_and_an_oversized_batch_are_refused(tmp_path: Path) -> None:
    m = _profiled(profile="inception-v3")
    with pytest.raises(ConfigError, match=r"profile 'inception-v3' has no entry for instance type "
                       r"'local'; it has: \['c5.2xlarge'"):
        variant_repository(tmp_path, [m], "local")
    with pytest.raises(ConfigError, match=r"max_batch_size 32 exceeds the largest batch of "
                       r"profile 'inception-v3' on that type \(16\)"):
        launch_batching(m, "c5.large", max_batch_size=32)
    assert launch_batching(m, "c5.large") == (16, 0)


def test_a_profile_file_works_like_a_shipped_one(tmp_path: Path) -> None:
    f = tmp_path / "mine.json"
    f.write_text('{"model": "mine", "instances": {"box": {"batch_ms": {"1": 5, "4": 8}}}}')
    m = _profiled(profile=str(f))
    assert m.max_batch_size == 4
    repo = variant_repository(tmp_path / "repo", [m], "box")
    config = (repo / "inc" / "config.pbtxt").read_text()
    assert _param(config, "service_ms") == "5.000,6.000,7.000,8.000"
    assert _param(config, "profile") == str(f)


def test_concurrent_writers_of_one_variant_agree(tmp_path: Path) -> None:
    m = _profiled(profile="inception-v3")
    out: list[Path] = []
    barrier = threading.Barrier(8)

    def write() -> None:
        barrier.wait()
        out.append(variant_repository(tmp_path, [m], "c5.large", max_batch_size=4))

    threads = [threading.Thread(target=write) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 8 and len(set(out)) == 1
    assert "max_batch_size: 4\n" in (out[0] / "inc" / "config.pbtxt").read_text()
    assert [p.name for p in tmp_path.iterdir()] == [out[0].name]


# --- live ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
async def profiled_fleet(tmp_path_factory: pytest.TempPathFactory
                         ) -> AsyncIterator[tuple[LocalBackend, dict[str, Instance]]]:
    """One instance each of c5.large, c5.xlarge and p2.xlarge serving profiled inception-v3."""
    # queue delay 0: a lone request runs at once; requests queued while a batch runs still batch
    backend = LocalBackend(tmp_path_factory.mktemp("profiled"), [_profiled(profile="inception-v3")])
    try:
        launched = [await backend.launch(LaunchSpec(t, ready_after_s=0))
                    for t in ("c5.large", "c5.xlarge", "p2.xlarge")]
        ready = await asyncio.gather(*(backend.wait_ready(i.id, 120) for i in launched))
        yield backend, {i.instance_type: i for i in ready}
    finally:
        await backend.close()


async def _single_latencies(url: str, n: int) -> list[float]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/v2/models/inc") as r:
            body = build_request(await r.json())
        out = []
        for i in range(n + 1):
            t0 = time.perf_counter()
            async with http.post(f"{url}/v2/models/inc/infer", data=body) as r:
                assert r.status == 200, await r.text()
                await r.read()
            if i:  # the first is a warm-up
                out.append(time.perf_counter() - t0)
        return out


@pytest.mark.triton
async def test_a_request_takes_its_instance_types_profiled_time(
    profiled_fleet: tuple[LocalBackend, dict[str, Instance]],
) -> None:
    _, fleet = profiled_fleet
    for itype in ("c5.large", "c5.xlarge"):
        expected = PROFILE.service_s(itype, 1)  # 210 ms, 132 ms
        got = statistics.median(await _single_latencies(fleet[itype].url, 3))
        assert 0.8 * expected < got < 1.6 * expected, (itype, got, expected)
    assert fleet["c5.large"].state == InstanceState.READY


def test_service_times_spread_as_the_profile_says() -> None:
    """The profile's ``service_cv`` reaches the instance's configuration, and the core draws
    factors of mean 1 with that spread, truncated (so never below a floor)."""
    from mark.models.profiled.core import Z_MAX, ProfiledCore
    from mark.models.repository import config_pbtxt

    assert PROFILE.service_cv > 0
    assert f'key: "service_cv" value: {{ string_value: "{PROFILE.service_cv:g}" }}' in \
        config_pbtxt(_profiled(profile="inception-v3"), "c5.large")
    core = ProfiledCore([0.0, 0.2], cv=0.1, seed=3)
    f = np.array([core.factor() for _ in range(20_000)])
    assert f.mean() == pytest.approx(1.0, abs=0.005)
    assert f.std() == pytest.approx(0.1, abs=0.01)
    sigma = np.sqrt(np.log1p(0.01))
    assert f.min() >= np.exp(-Z_MAX * sigma - sigma * sigma / 2) - 1e-12
    assert ProfiledCore([0.0, 0.2]).factor() == 1.0  # no spread: exactly the table
    with pytest.raises(ConfigError, match="service_cv"):
        ProfiledCore([0.0, 0.2], cv=-1.0)


@pytest.mark.triton
async def test_live_service_times_vary(
    profiled_fleet: tuple[LocalBackend, dict[str, Instance]],
) -> None:
    """One request at a time on c5.large (210 ms): the times spread about the profile's cv
    (0.1, ~21 ms), far beyond the few ms the HTTP hop varies by."""
    _, fleet = profiled_fleet
    lat = await _single_latencies(fleet["c5.large"].url, 13)
    assert statistics.stdev(lat) > 0.04 * PROFILE.service_s("c5.large", 1), lat


@pytest.mark.triton
async def test_tritonclient_gets_its_input_back(
    profiled_fleet: tuple[LocalBackend, dict[str, Instance]],
) -> None:
    import tritonclient.http as th

    url = profiled_fleet[1]["p2.xlarge"].url.removeprefix("http://")
    x = np.arange(32, dtype=np.float32).reshape(2, 16)

    def infer() -> np.ndarray:
        client = th.InferenceServerClient(url)
        inp = th.InferInput("INPUT0", [2, 16], "FP32")
        inp.set_data_from_numpy(x)
        return client.infer("inc", [inp]).as_numpy("OUTPUT0")

    assert np.array_equal(await asyncio.to_thread(infer), x)


@pytest.mark.triton
async def test_concurrent_requests_are_batched(
    profiled_fleet: tuple[LocalBackend, dict[str, Instance]],
) -> None:
    url = profiled_fleet[1]["p2.xlarge"].url  # 36.5 ms alone, 134 ms for 16 at once
    async with LoadClient(url, "inc") as client:
        result = await client.closed_loop(concurrency=16, duration_s=2.0, warmup_s=0.3)
    assert result.ok > 0 and not result.errors and not result.lost
    one_at_a_time_rps = 1.0 / PROFILE.service_s("p2.xlarge", 1)  # ~27 req/s
    rps = result.ok / result.elapsed_s
    assert rps > 2.0 * one_at_a_time_rps, rps
    async with aiohttp.ClientSession() as http, http.get(f"{url}/v2/models/inc/stats") as r:
        stats = (await r.json())["model_stats"][0]
    sizes = {int(b["batch_size"]) for b in stats["batch_stats"]}
    assert max(sizes) > 1, sizes
