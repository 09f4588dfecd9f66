"""The front end's per-request spill decision is the simulator's, request for request."""

from __future__ import annotations

import numpy as np
import pytest

from frontend.spill import InstanceQueue, PredictionErrors, SpillParams
from mark.core import queueing
from mark.core.profiles import load_profile


def kernel_decisions(arr: np.ndarray, svc: np.ndarray, mb: int, delay: float,
                     budget: float) -> np.ndarray:
    """Which requests the simulator's kernel keeps on one instance (True) or spills."""
    n = arr.size
    out = np.full(n, -1, dtype=np.int64)
    queueing.serve_segment(
        arr, np.zeros(n, dtype=np.int32), svc[None, :].copy(), np.array([mb], dtype=np.int32),
        np.array([delay]), np.array([budget]), np.zeros((1, queueing.N_FSTATE)),
        np.zeros((1, queueing.N_ISTATE), dtype=np.int64), np.zeros(n + 1),
        np.zeros(n + 1, dtype=np.int32), 0, out, np.zeros(1))
    return out >= 0


@pytest.mark.parametrize(("itype", "mb", "delay", "rate"), [
    ("c5.large", 16, 0.0, 6.0),     # Inception on c5: little gain from batching, overload
    ("c5.xlarge", 8, 0.02, 12.0),
    ("g4dn.xlarge", 16, 0.005, 2000.0),  # a GPU: batches fill
    ("c5.large", 1, 0.0, 3.0),      # no batching
])
def test_admit_matches_the_simulators_kernel(itype: str, mb: int, delay: float,
                                             rate: float) -> None:
    svc = load_profile("inception-v3").of(itype).table_s()[: mb + 1]
    rng = np.random.default_rng(5)
    arr = np.cumsum(rng.exponential(1.0 / rate, 3000))
    budget = 0.45
    want = kernel_decisions(arr, svc, mb, delay, budget)
    q = InstanceQueue(SpillParams.of(svc, mb, delay, budget))
    got = np.array([q.admit(float(t)) for t in arr])
    assert 0.05 < want.mean() < 1.0 or rate < 5  # the load makes it choose both ways
    assert (got == want).all(), int(np.argmax(got != want))


def test_idle_and_busy_corrections() -> None:
    q = InstanceQueue(SpillParams.of([0.0, 0.2, 0.3], 2, 0.0, 0.5))
    assert q.admit(0.0) and q.admit(0.01)  # a batch of 2 leaves at once
    assert q.predict_s(0.02)[0] == pytest.approx(0.3 - 0.02 + 0.2)
    q.idle(0.1)  # the instance answered early: nothing in flight any more
    assert q.predict_s(0.1)[0] == pytest.approx(0.2)
    q.busy_now(5.0)  # still busy at 5 s (slower than the model)
    assert q.predict_s(5.0)[0] == pytest.approx(0.2)


def test_the_margin_grows_to_what_the_model_misses() -> None:
    """Observed latencies 120 ms above the predictions: after enough of them the queue keeps
    120 ms back, so a request predicted 100 ms inside the budget now spills."""
    params = SpillParams.of([0.0, 0.2], 1, 0.0, 0.5)
    errors = PredictionErrors(floor_s=0.01)
    q = InstanceQueue(params, 0.01, errors)
    assert q.admit(0.25) and q.predicted_s == pytest.approx(0.2)  # alone: 200 ms
    q.idle(10.0)
    assert q.admit(10.0)  # predicted 200 ms; a second at once waits for it: 400 ms < 490 ms
    assert q.admit(10.0) and q.predicted_s == pytest.approx(0.4)
    rng = np.random.default_rng(1)
    for _ in range(200):
        errors.note(0.2, 0.2 + 0.12 + rng.uniform(-0.005, 0.005))
    assert errors.margin_s(0.5) == pytest.approx(0.124, abs=0.003)
    q.idle(20.0)
    assert q.admit(20.0)
    assert not q.admit(20.0)  # 400 ms > 500 - 124 ms: spills now


def test_the_learned_margin_is_bounded() -> None:
    errors = PredictionErrors(floor_s=0.02, min_samples=32)
    for _ in range(31):
        errors.note(0.1, 5.0)
    assert errors.margin_s(0.5) == 0.02  # too few samples: the floor
    for _ in range(40):
        errors.note(0.1, 5.0)
    assert errors.margin_s(0.5) == pytest.approx(0.25)  # half the budget at most
    for _ in range(600):
        errors.note(0.3, 0.1)  # faster than predicted: the floor again
    assert errors.margin_s(0.5) == 0.02


def test_a_stalled_instance_is_admitted_nothing_until_it_answers() -> None:
    """Requests out and no answer for two budgets (a SIGSTOPped instance): the model
    alone would see a free instance again once its predicted batches are done; it must not."""
    q = InstanceQueue(SpillParams.of([0.0, 0.2], 1, 0.0, 0.5))
    assert q.admit(0.0)
    q.sent(0.0)
    q.busy_now(0.3)
    assert q.admit(0.3)  # 0.2 -> 0.4 done, then this one by 0.6: within the budget
    q.sent(0.3)
    q.busy_now(1.01)
    assert not q.stalled(1.0) and q.stalled(1.01)  # nothing heard since 0.0 (2 budgets)
    q.busy_now(2.0)
    assert q.predict_s(2.0)[0] == pytest.approx(0.2)  # the model alone: free again
    assert not q.admit(2.0)  # but it owes two answers and has given none: spill
    q.answered(2.1)  # it woke up
    q.busy_now(2.1)
    assert not q.stalled(2.1) and q.admit(2.1)
    q.answered(2.2)
    q.idle(2.3)
    assert not q.stalled(10.0)  # nothing out: an idle instance owes nothing
