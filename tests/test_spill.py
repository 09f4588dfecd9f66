"""Spill: the prediction the front end uses matches the simulator, and under a +100% surge
spill keeps the SLO while the same policy without spill breaks it."""

from __future__ import annotations

import numpy as np
import pytest

from mark.core import queueing
from mark.core.workload.arrivals import rates_to_trace, surge_rate
from mark.sim.simulator import simulate
from provisioner import BatchConfig, Slo
from provisioner.spill import SpillPolicy, predict_latency_s


@pytest.mark.parametrize("budget", [0.035, 0.05, np.inf])
def test_prediction_matches_the_kernel(budget: float) -> None:
    """Per request, the front end's verdict (prediction + ``should_spill``) is the kernel's:
    with a finite budget both verdicts occur and agree; kept requests finish in time."""
    rng = np.random.default_rng(3)
    svc = np.array([0.0, 0.015, 0.019, 0.023, 0.027])
    cfg = BatchConfig(4, 0.004)
    arr = np.cumsum(rng.exponential(1 / 180.0, size=3000))
    fstate = np.zeros((1, queueing.N_FSTATE))
    istate = np.zeros((1, queueing.N_ISTATE), dtype=np.int64)
    done = np.zeros(4000)
    size = np.zeros(4000, dtype=np.int32)
    nb = 0
    verdicts = {True: 0, False: 0}
    for i, t in enumerate(arr):
        open_n = int(istate[0, queueing.CNT])
        pred, oldest = predict_latency_s(t, fstate[0, queueing.BUSY],
                                         fstate[0, queueing.A0] if open_n else None, open_n, cfg,
                                         svc)
        spill = SpillPolicy.should_spill(pred, oldest, budget)
        bid = np.empty(1, dtype=np.int64)
        nb = queueing.serve_segment(arr[i : i + 1], np.zeros(1, np.int32), svc[None, :],
                                   np.array([4], np.int32), np.array([cfg.max_queue_delay_s]),
                                   np.array([budget]), fstate, istate, done, size, nb, bid,
                                   np.zeros(1))
        assert (bid[0] < 0) == spill, (i, pred, oldest)
        verdicts[spill] += 1
        assert oldest >= pred - 1e-12
        if spill:
            continue
        queueing.flush_instance(0, svc[None, :], np.array([cfg.max_queue_delay_s]),
                               fstate.copy(), istate.copy(), done, size.copy(), np.zeros(1))
        # the request finishes no later than predicted (a batch may fill and leave early)
        assert done[bid[0]] - t <= pred + 1e-9 and done[bid[0]] - t <= budget + 1e-9
    assert verdicts[False] > 0
    assert (verdicts[True] > 0) == np.isfinite(budget)
    assert SpillPolicy(margin_ms=20).wait_budget_s(Slo(200, 98)) == pytest.approx(0.18)
    assert SpillPolicy().should_spill(0.21, 0.1, 0.2) and not SpillPolicy().should_spill(
        0.1, 0.15, 0.2)


@pytest.fixture(scope="module")
def surge_counts() -> np.ndarray:
    base = np.full(3600, 400.0)
    rates = surge_rate(base, at_s=1800, length_s=600, factor=2.0)
    return rates_to_trace(rates, seed=11).counts


@pytest.mark.parametrize("spill", [True, False])
def test_surge_spill_keeps_the_slo_and_without_it_breaks(surge_counts: np.ndarray,
                                                         spill: bool) -> None:
    res = simulate(surge_counts, "mark", slo=Slo(200, 98), types=("c5.large",), seed=5,
                   policy_kw={"spill": spill}, timeline=False)
    if spill:
        assert res.slo_attainment >= 0.98
        assert res.latency_ms["p98"] <= 200
        assert 0 < res.spill_share < 0.1
    else:
        assert res.slo_attainment < 0.98
        assert res.spill_share == 0.0
