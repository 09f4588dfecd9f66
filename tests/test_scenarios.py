import numpy as np
import pytest

from mark.core.errors import ConfigError
from mark.core.workload import Trace, low_rate, sparse_diurnal


def test_low_rate_sets_the_windowed_peak() -> None:
    counts = np.r_[np.full(600, 100), np.full(60, 400), np.full(600, 50)]
    low = low_rate(Trace(counts, 1, "t"), peak_rps=20.0)
    per_min = low.counts.reshape(-1, 60).mean(axis=1)
    assert per_min.max() == pytest.approx(20.0, abs=0.05)
    assert per_min[0] == pytest.approx(5.0, abs=0.05)
    with pytest.raises(ConfigError, match="no requests"):
        low_rate(Trace(np.zeros(120, dtype=np.int64), 1, "z"), 5.0)


def test_sparse_trace_is_seeded_and_has_idle_hours() -> None:
    a = sparse_diurnal(days=2, seed=3)
    b = sparse_diurnal(days=2, seed=3)
    assert np.array_equal(a.counts, b.counts)
    assert not np.array_equal(a.counts, sparse_diurnal(days=2, seed=4).counts)
    hourly = a.counts.reshape(-1, 3600).sum(axis=1)
    assert (hourly[:7] == 0).all() and (hourly[24:31] == 0).all()  # nights
    assert (hourly == 0).sum() >= 16  # nights plus idle spells by day
    assert hourly.max() > 3600  # and busy hours
    # idle stretches of at least an hour exist by day as well
    day = a.counts[8 * 3600 : 23 * 3600]
    zero_runs = np.diff(np.flatnonzero(np.diff(np.r_[1, day, 1] == 0)))[::2]
    assert zero_runs.max() >= 1800
