"""Trace files: formats, errors that name file and line, resampling, scaling, slicing, gaps."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from mark.core.errors import ConfigError
from mark.core.workload.traces import (
    SHIPPED_TRACES,
    Trace,
    collection_gaps,
    load_trace,
    resolve_trace,
    shipped_trace,
)

TWITTER = shipped_trace("twitter-2021-08-week1")
MARK_CSV = shipped_trace("mark-tweet-load-per-minute")


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ---- formats -------------------------------------------------------------------------


def test_public_face_is_in_sync() -> None:
    import mark.core.workload as workload

    assert workload.__all__ == sorted(workload.__all__)
    assert all(hasattr(workload, name) for name in workload.__all__)


def test_plain_text_per_second(tmp_path: Path) -> None:
    tr = load_trace(write(tmp_path, "t.txt", "3\n0\n5\n"))
    assert tr.counts.tolist() == [3, 0, 5]
    assert tr.counts.dtype == np.int64
    assert (tr.step_s, tr.name, tr.kind) == (1, "t", "count")
    assert (tr.duration_s, tr.total, len(tr)) == (3, 8, 3)


def test_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    p = tmp_path / "trace.bin"
    p.write_bytes(gzip.compress(b"1\n2\n3\n"))
    assert load_trace(p).counts.tolist() == [1, 2, 3]


def test_csv_per_second_with_header(tmp_path: Path) -> None:
    tr = load_trace(write(tmp_path, "t.csv", "time,requests\n0,4\n1,5\n2,6\n"))
    assert tr.counts.tolist() == [4, 5, 6]
    assert tr.step_s == 1


def test_csv_time_column_sets_the_step(tmp_path: Path) -> None:
    tr = load_trace(write(tmp_path, "t.csv", "t,count\n0,4\n60,5\n120,6\n"))
    assert tr.step_s == 60
    np.testing.assert_allclose(tr.rate_per_s(), [4 / 60, 5 / 60, 6 / 60])


def test_one_column_csv_is_per_second(tmp_path: Path) -> None:
    assert load_trace(write(tmp_path, "t.csv", "requests\n7\n8\n")).counts.tolist() == [7, 8]


def test_mark_per_minute_csv() -> None:
    tr = load_trace(MARK_CSV)
    assert (tr.step_s, len(tr), tr.name) == (60, 420, "mark-tweet-load-per-minute")
    assert tr.counts[:2].tolist() == [3695, 3367]


def test_month_day_hour_minute_crosses_midnight_and_months(tmp_path: Path) -> None:
    text = '"time","tweets"\n"01-31-23-59",1\n"02-01-00-00",2\n"02-01-00-01",3\n'
    tr = load_trace(write(tmp_path, "m.csv", text))
    assert (tr.step_s, tr.counts.tolist()) == (60, [1, 2, 3])


def test_twitter_week_loads() -> None:
    tr = load_trace(TWITTER)
    assert (len(tr), tr.step_s) == (604_800, 1)
    assert 60 < tr.counts.mean() < 68  # README: mean about 64/s


# ---- errors name file and line -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("1\n2\n\n4\n", 3, "empty value"),
        ("1\n-2\n", 2, "negative count -2"),
        ("1\n2\nabc\n", 3, "non-numeric value 'abc'"),
        ("1\n2.5\n", 2, "not a whole number"),
    ],
)
def test_plain_errors_name_file_and_line(tmp_path: Path, text: str, line: int, what: str) -> None:
    p = write(tmp_path, "bad.txt", text)
    with pytest.raises(ConfigError) as err:
        load_trace(p)
    msg = err.value.message
    assert msg.startswith(f"{p}:{line}: ")
    assert what in msg
    assert "expected one non-negative integer per line" in msg


def test_empty_file(tmp_path: Path) -> None:
    p = write(tmp_path, "empty.txt", "\n\n")
    with pytest.raises(ConfigError, match="the trace is empty"):
        load_trace(p)


def test_whole_floats_are_accepted(tmp_path: Path) -> None:
    assert load_trace(write(tmp_path, "f.txt", "1\n2.0\n")).counts.tolist() == [1, 2]


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("time,requests\n0,1\n1,x\n", 3, "non-numeric value 'x'"),
        ("time,requests\n0,1\n1,-1\n", 3, "negative count"),
        ("time,requests\n0,1\n1\n", 3, "1 columns, the header has 2"),
        ("time,requests\n0,1\n60,1\n180,1\n", 4, "evenly spaced"),
        ("time,requests\n0,1\nnoon,1\n", 3, "cannot read time 'noon'"),
        ("time,requests\n", None, "no rows"),
    ],
)
def test_csv_errors(tmp_path: Path, text: str, line: int | None, what: str) -> None:
    p = write(tmp_path, "bad.csv", text)
    with pytest.raises(ConfigError) as err:
        load_trace(p)
    msg = err.value.message
    assert msg.startswith(f"{p}:{line}: " if line else f"{p}: ")
    assert what in msg


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_trace(tmp_path / "nope.txt")


def test_step_argument_must_agree_with_times(tmp_path: Path) -> None:
    p = write(tmp_path, "t.csv", "time,requests\n0,1\n60,1\n")
    with pytest.raises(ConfigError, match="60 s apart"):
        load_trace(p, step_s=1)
    assert load_trace(write(tmp_path, "p.txt", "1\n2\n"), step_s=60).step_s == 60


# ---- operations ----------------------------------------------------------------------


def test_resample_sum_and_peak() -> None:
    tr = Trace(np.array([1, 5, 2, 0, 0, 3, 9]), 1, "x")
    s = tr.resample(3, "sum")
    assert (s.counts.tolist(), s.step_s, s.kind) == ([8, 3], 3, "count")  # tail dropped
    p = tr.resample(3, "peak")
    assert (p.counts.tolist(), p.kind) == ([5, 3], "peak")
    np.testing.assert_allclose(p.rate_per_s(), [5.0, 3.0])  # peaks are already per second
    np.testing.assert_allclose(s.rate_per_s(), [8 / 3, 1.0])
    assert p.resample(6, "peak").counts.tolist() == [5]
    with pytest.raises(ValueError, match="no request total"):
        _ = p.total
    with pytest.raises(ValueError, match="multiple"):
        tr.resample(2, "sum").resample(3, "sum")
    with pytest.raises(ValueError, match="per-second trace"):
        s.resample(6, "peak")


def test_scale_rounds_deterministically_and_keeps_the_total() -> None:
    counts = np.random.default_rng(3).poisson(2.0, size=10_000)
    tr = Trace(counts, 1, "x")
    for factor in (0.4, 1.3, 7.77):
        scaled = tr.scale(factor)
        assert abs(scaled.total - factor * tr.total) <= 0.5
        assert np.all(np.abs(scaled.counts - factor * counts) < 1.0)
        assert np.array_equal(scaled.counts, tr.scale(factor).counts)
    ones = Trace(np.ones(10, dtype=np.int64), 1, "ones").scale(0.4)
    assert ones.total == 4  # plain rounding would give 0
    with pytest.raises(ValueError):
        tr.scale(-1.0)


def test_slice() -> None:
    tr = Trace(np.arange(10), 60, "x")
    assert tr.slice(120, 300).counts.tolist() == [2, 3, 4]
    assert tr.slice(540, 10_000).counts.tolist() == [9]
    assert tr.slice(0).duration_s == 600
    with pytest.raises(ValueError, match="multiples"):
        tr.slice(30, 120)
    with pytest.raises(ValueError, match="empty"):
        tr.slice(600, 660)


def test_trace_validation_and_immutability() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        Trace(np.array([1, -1]), 1, "x")
    with pytest.raises(ValueError, match="step_s"):
        Trace(np.array([1]), 0, "x")
    tr = Trace(np.array([1.0, 2.0]), 1, "x")
    assert tr.counts.dtype == np.int64
    with pytest.raises(ValueError):
        tr.counts[0] = 5


# ---- collection gaps -----------------------------------------------------------------


def test_collection_gaps_flag_improbable_holes_only() -> None:
    rng = np.random.default_rng(7)
    busy = rng.poisson(50.0, size=600)
    busy[200:230] = 0  # a 30 s hole at 50/s: probability exp(-1500)
    gaps = collection_gaps(Trace(busy, 1, "busy"))
    assert gaps[200:230].all() and gaps.sum() == 30
    quiet = rng.poisson(0.05, size=5000)  # zero runs of a minute are normal here
    assert not collection_gaps(Trace(quiet, 1, "quiet")).any()


def test_twitter_daily_gaps_are_found() -> None:
    tr = load_trace(TWITTER)
    minutes = collection_gaps(tr).reshape(-1, 60).any(axis=1)
    for day in range(7):  # the ~29-minute hole from 23:31 every day
        assert minutes[day * 1440 + 1412 : day * 1440 + 1440].all()
    assert minutes.sum() < 7 * 35  # and only a few short hiccups besides


def test_shipped_traces_live_inside_the_package() -> None:
    import mark

    pkg = Path(mark.__file__).resolve().parent
    for stem, fname in SHIPPED_TRACES.items():
        path = shipped_trace(stem)
        assert path.is_file() and pkg in path.parents
        assert resolve_trace(stem) == path == resolve_trace(fname)
    assert load_trace("twitter-2021-08-week1").counts.size == 604_800


def test_unknown_trace_names_the_shipped_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"trace file not found.*twitter-2021-08-week1"):
        load_trace(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="unknown shipped trace 'nope'"):
        shipped_trace("nope")
