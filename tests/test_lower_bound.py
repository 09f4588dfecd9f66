"""The lower bound (:mod:`provisioner.bound`): no policy on any trace costs less, it is not
trivially low, ``mark simulate --json`` reports it, and the hindsight plan is a policy named
``hindsight`` with ``oracle`` as its alias."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from mark.core.catalogue import load_catalogue
from mark.core.profiles import load_profile, parse_profile
from mark.core.workload.traces import load_trace, shipped_trace
from mark.sim.simulator import simulate
from provisioner import POLICIES, Slo
from provisioner.bound import (
    LIFE_GRID,
    lifetime_floor_s,
    lower_bound_usd,
    per_request_floor_usd,
)

SLO = Slo(200, 98)
POLICY_NAMES = ("mark", "sagemaker", "lambda", "batch", "mark-released", "hindsight")


def _traces() -> dict[str, np.ndarray]:
    flat = np.full(900, 60, dtype=np.int64)
    bursty = np.where((np.arange(900) // 90) % 3 == 0, 300, 15).astype(np.int64)
    twitter = load_trace(shipped_trace("twitter-2021-08-week1")).slice(5400, 6300).counts * 3
    return {"flat": flat, "bursty": bursty, "twitter": np.asarray(twitter, dtype=np.int64)}


@pytest.fixture(scope="module")
def runs() -> dict[tuple[str, bool, str], object]:
    out = {}
    for tname, counts in _traces().items():
        for spot in (False, True):
            for pol in POLICY_NAMES:
                out[(tname, spot, pol)] = simulate(counts, pol, slo=SLO, spot=spot, seed=1,
                                                   timeline=False)
    return out


def test_no_policy_costs_less_than_the_bound(runs: dict) -> None:
    cat, prof = load_catalogue(), load_profile("minilm")
    counts = _traces()
    for (tname, spot, pol), r in runs.items():
        lb = r.extra["lower_bound_usd"]
        cost = r.cost_usd["total"]
        assert lb is not None and lb > 0, (tname, spot, pol)
        assert lb == pytest.approx(lower_bound_usd(counts[tname], cat, prof, SLO, spot=spot),
                                   rel=1e-6, abs=2e-6)
        # at the run's own attainment the bound holds for every run, meeting the SLO or not
        own = lower_bound_usd(counts[tname], cat, prof, SLO, spot=spot,
                              attainment=r.slo_attainment)
        assert cost >= own, (tname, spot, pol, cost, own)
        if r.slo_attainment >= SLO.percentile / 100:
            assert cost >= lb, (tname, spot, pol, cost, lb)


def test_the_bound_is_not_trivially_low(runs: dict) -> None:
    for tname in _traces():
        for spot in (False, True):
            hs = runs[(tname, spot, "hindsight")]
            lb = hs.extra["lower_bound_usd"]
            assert hs.cost_usd["total"] <= 4.0 * lb, (tname, spot)
    # on the Twitter slice the hindsight plan is within 3x of it
    hs = runs[("twitter", False, "hindsight")]
    assert hs.cost_usd["total"] <= 3.0 * hs.extra["lower_bound_usd"]


def test_spot_lowers_the_bound_and_dropping_the_slack_is_free() -> None:
    cat, prof = load_catalogue(), load_profile("minilm")
    counts = _traces()["bursty"]
    od = lower_bound_usd(counts, cat, prof, SLO)
    assert lower_bound_usd(counts, cat, prof, SLO, spot=True) < od
    every = lower_bound_usd(counts, cat, prof, SLO, attainment=1.0)
    assert od < every * 0.98 + 1e-12  # the 2% dropped are the dearest 2%
    assert lower_bound_usd(counts, cat, prof, SLO, attainment=0.0) == 0.0
    assert lower_bound_usd(np.zeros(60), cat, prof, SLO) == 0.0


def test_the_floor_is_the_cheapest_batch_share_by_hand() -> None:
    """One type at $3.6/h (0.001 $/s), batches of 1/2/4 in 10/12/40 ms, no Lambda, exact
    service times: a request alone costs 10 ms; two share 12 ms; four would share 40 ms,
    dearer than pairs; a 30 ms SLO rules the batch of 4 out altogether."""
    cat = load_catalogue()
    name = next(iter(cat.instances))
    cat = replace(cat, instances={name: replace(cat.instances[name], on_demand_usd_per_h=3.6)},
                  billing_minimum_s=0.0)
    prof = parse_profile({"model": "toy", "service_cv": 0, "instances": {
        name: {"batch_ms": {"1": 10.0, "2": 12.0, "4": 40.0}, "max_batch": 4}}})
    f = per_request_floor_usd(cat, prof, Slo(30, 98))
    assert math.isinf(f[0])
    assert f[1] == pytest.approx(0.001 * 0.010)
    assert f[2] == pytest.approx(0.001 * 0.012 / 2)
    assert f[-1] == pytest.approx(0.001 * 0.012 / 2)  # b=3 interpolated: 26 ms / 3 > 6 ms
    # four requests, each alone within a second either side: without a billing minimum each
    # costs a batch of one; half of them must be served
    counts = np.zeros(20, dtype=np.int64)
    counts[::5] = 1
    assert lower_bound_usd(counts, cat, prof, Slo(30, 50)) == pytest.approx(2 * 0.001 * 0.010)
    # with a 60 s minimum an instance serving any of them is billed 60 s, shared by at most
    # the four: 15 s each
    billed = replace(cat, billing_minimum_s=60.0)
    assert lower_bound_usd(counts, billed, prof, Slo(30, 50)) == pytest.approx(2 * 0.001 * 15)
    # a spread of service times lets a batch run faster than its mean: the bound drops
    spread = replace(prof, service_cv=0.2)
    assert lower_bound_usd(counts, cat, spread, Slo(30, 50)) < 2 * 0.001 * 0.010
    # nothing serves within 5 ms: no plan can meet that SLO
    assert math.isinf(lower_bound_usd(counts, cat, prof, Slo(5, 50)))


def test_lifetime_floor_matches_brute_force() -> None:
    """H_s against every integer lifetime: never above, within the grid's 10% below."""
    rng = np.random.default_rng(1)
    for _ in range(4):
        c = rng.integers(0, 5, size=int(rng.integers(20, 150))).astype(np.float64)
        minimum = float(rng.integers(1, 30))
        h = lifetime_floor_s(c, minimum)
        n = c.size

        def most(s: int, m: int, c: np.ndarray = c, n: int = n) -> float:
            return max(c[j : min(j + m + 1, n)].sum() for j in range(max(0, s - m), s + 1))

        for s in np.flatnonzero(c > 0):
            m0 = math.ceil(minimum)
            exact = min([minimum / most(s, m0)]
                        + [max(minimum, m - 1) / most(s, m) for m in range(m0 + 1, n + 3)])
            assert exact / (LIFE_GRID + 0.02) <= h[s] <= exact + 1e-12


def test_hindsight_is_a_policy_with_oracle_as_its_alias() -> None:
    assert POLICIES["hindsight"] is POLICIES["oracle"]
    from mark.control.planning import _FUTURE

    assert {"hindsight", "oracle"} <= _FUTURE


def test_simulate_json_reports_the_bound(tmp_path) -> None:
    from mark.cli import main

    trace = tmp_path / "t.txt"
    trace.write_text("\n".join(str(v) for v in _traces()["bursty"][:300]) + "\n")
    out = tmp_path / "r.json"
    assert main(["simulate", "--trace", str(trace), "--policy", "mark", "--slo-ms", "200",
                 "--json", str(out), "--no-progress"]) == 0
    doc = json.loads(out.read_text())
    assert 0 < doc["lower_bound_usd"] <= doc["cost_usd"]["total"]
