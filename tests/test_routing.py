from collections import Counter

import pytest

from frontend.routing import WeightedRoundRobin


def test_single_requests_follow_weights_exactly() -> None:
    wrr = WeightedRoundRobin({"a": 1, "b": 2, "c": 3})
    counts = Counter(wrr.schedule(600))
    assert counts == {"a": 100, "b": 200, "c": 300}


def test_batched_dispatches_count_requests_not_dispatches() -> None:
    wrr = WeightedRoundRobin({"a": 1, "b": 1})
    served: Counter[str] = Counter()
    # "a" is always handed batches of 4, "b" singles, as they alternate by size
    for i in range(400):
        n = 4 if i % 2 == 0 else 1
        t = wrr.pick(n)
        assert t is not None
        served[t] += n
    assert abs(served["a"] - served["b"]) <= 4


def test_new_target_is_not_flooded_and_exclude_works() -> None:
    wrr = WeightedRoundRobin({"a": 1, "b": 1})
    wrr.schedule(1000)
    wrr.set_weights({"a": 1, "b": 1, "c": 1})
    counts = Counter(wrr.schedule(300))
    assert max(counts.values()) - min(counts.values()) <= 2
    assert wrr.pick(exclude=["a", "b"]) == "c"
    assert wrr.pick(exclude=["a", "b", "c"]) is None


def test_bad_weight_is_refused() -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        WeightedRoundRobin({"a": 0})
