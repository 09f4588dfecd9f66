"""Request-arrival traces: loading, resampling, scaling and slicing.

A :class:`Trace` is a series of request counts on a regular grid of ``step_s`` seconds.
Files accepted by :func:`load_trace` (format autodetected, gzip detected by its magic bytes,
whatever the file name):

- plain text: one non-negative integer per line, the requests arriving in that second;
- CSV with a header row: a time column and a count column (``time,requests``;
  the MArk per-minute file ``"time","tweets"`` with times as month-day-hour-minute
  ``01-01-10-00``). Times may be numbers of seconds, ``MM-DD-HH-MM`` or ISO 8601; rows must
  be evenly spaced and the spacing is the step. A one-column CSV is per second.

Every problem in a file raises :class:`mark.core.errors.ConfigError` reading
``file:line: what is wrong; what is accepted``.
"""

from __future__ import annotations

import csv
import gzip
import re
import zlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np

from mark.core.errors import ConfigError

TraceKind = Literal["count", "peak"]

_COUNT_COLUMNS = ("requests", "count", "counts", "tweets", "value", "n")
_TIME_COLUMNS = ("time", "timestamp", "ts", "t", "second", "seconds", "minute", "date")
_MDHM = re.compile(r"^(\d{1,2})-(\d{1,2})-(\d{1,2})-(\d{1,2})$")
_HEADER_WORD = re.compile(r"^[\"']?[A-Za-z_][A-Za-z0-9_ .()/-]*[\"']?$")
_PLAIN_ACCEPTED = "expected one non-negative integer per line (requests in that second)"
_CSV_ACCEPTED = "expected a non-negative integer count per row"


@dataclass(frozen=True, eq=False)
class Trace:
    """Requests per step on a regular grid.

    Attributes:
        counts: int64 array, one entry per step. For ``kind == "count"`` (the default) the
            number of requests arriving in that step. For ``kind == "peak"`` (made by
            ``resample(..., how="peak")``) the largest per-second count within the step,
            i.e. a peak rate in requests per second.
        step_s: length of one step in seconds (positive integer).
        name: label used in reports (the file stem for loaded traces).
        kind: ``"count"`` or ``"peak"`` as above.
    """

    counts: np.ndarray
    step_s: int
    name: str = "trace"
    kind: TraceKind = "count"

    def __post_init__(self) -> None:
        counts = np.asarray(self.counts)
        if counts.ndim != 1:
            raise ValueError(f"trace counts must be one-dimensional, got shape {counts.shape}")
        fractional = counts.size and not np.issubdtype(counts.dtype, np.integer)
        if fractional and not np.all(np.isfinite(counts) & (counts == np.round(counts))):
            raise ValueError("trace counts must be whole numbers")
        counts = counts.astype(np.int64, copy=True)
        if counts.size and counts.min() < 0:
            raise ValueError(f"trace counts must be non-negative, got {counts.min()}")
        counts.setflags(write=False)
        object.__setattr__(self, "counts", counts)
        if int(self.step_s) != self.step_s or self.step_s <= 0:
            raise ValueError(f"step_s must be a positive whole number of seconds, got {self.step_s}")
        object.__setattr__(self, "step_s", int(self.step_s))
        if self.kind not in ("count", "peak"):
            raise ValueError(f"kind must be 'count' or 'peak', got {self.kind!r}")

    def __len__(self) -> int:
        return int(self.counts.size)

    def __repr__(self) -> str:
        return (
            f"Trace(name={self.name!r}, steps={self.counts.size}, step_s={self.step_s}, "
            f"kind={self.kind!r}, max={int(self.counts.max()) if self.counts.size else 0})"
        )

    @property
    def duration_s(self) -> int:
        """Length of the trace in seconds (steps x step_s)."""
        return int(self.counts.size) * self.step_s

    @property
    def total(self) -> int:
        """Total requests in the trace (count traces only; a peak trace has no total)."""
        if self.kind != "count":
            raise ValueError(f"trace {self.name!r} holds peak rates; it has no request total")
        return int(self.counts.sum())

    def rate_per_s(self) -> np.ndarray:
        """Requests per second in each step (float64): mean rate, or the peak for peak traces."""
        if self.kind == "peak":
            return self.counts.astype(np.float64)
        return self.counts / float(self.step_s)

    def resample(self, step_s: int, how: Literal["sum", "peak"] = "sum") -> Trace:
        """Regroup into steps of ``step_s`` seconds (a whole multiple of the current step).

        ``how="sum"`` adds the counts (a count trace). ``how="peak"`` keeps, per new step,
        the largest per-second count inside it (a peak trace, ``rate_per_s()`` gives the
        peak rate); it needs a per-second trace (or a peak trace). A trailing partial step
        is dropped.
        """
        if step_s <= 0 or step_s % self.step_s:
            raise ValueError(
                f"cannot resample a {self.step_s} s trace to {step_s} s steps; "
                f"the new step must be a positive multiple of {self.step_s}"
            )
        k = step_s // self.step_s
        n = self.counts.size // k
        grouped = self.counts[: n * k].reshape(n, k)
        if how == "sum":
            if self.kind != "count":
                raise ValueError("a peak trace cannot be summed; resample it with how='peak'")
            return Trace(grouped.sum(axis=1), step_s, self.name, "count")
        if how == "peak":
            if self.kind == "count" and self.step_s != 1:
                raise ValueError(
                    f"per-second peaks need a per-second trace; {self.name!r} has "
                    f"{self.step_s} s steps"
                )
            return Trace(grouped.max(axis=1), step_s, self.name, "peak")
        raise ValueError(f"how must be 'sum' or 'peak', got {how!r}")

    def scale(self, factor: float) -> Trace:
        """Multiply every count by ``factor`` and round deterministically.

        Count traces use cumulative rounding: step i gets
        ``round(F*c[:i+1].sum()) - round(F*c[:i].sum())``, so each step is within 1 of the
        exact product and the total is within 0.5 of ``factor * total`` (plain rounding
        would turn every 1 into 0 at factor 0.4). Peak traces round each step.
        """
        if not np.isfinite(factor) or factor < 0:
            raise ValueError(f"scale factor must be finite and non-negative, got {factor}")
        if self.kind == "peak":
            return Trace(np.rint(self.counts * factor), self.step_s, self.name, "peak")
        cum = np.rint(np.cumsum(self.counts, dtype=np.float64) * factor)
        scaled = np.diff(cum, prepend=0.0)
        return Trace(scaled, self.step_s, self.name, self.kind)

    def slice(self, start_s: int, end_s: int | None = None) -> Trace:
        """The steps covering ``[start_s, end_s)`` seconds from the start of the trace.

        Both bounds must be multiples of ``step_s``; ``end_s`` beyond the end (or ``None``)
        means the end of the trace. An empty result is an error.
        """
        end = self.duration_s if end_s is None else min(end_s, self.duration_s)
        if start_s < 0 or start_s % self.step_s or end % self.step_s:
            raise ValueError(
                f"slice bounds {start_s}..{end_s} s must be non-negative multiples of the "
                f"{self.step_s} s step"
            )
        if end <= start_s:
            raise ValueError(
                f"slice {start_s}..{end_s} s of {self.name!r} ({self.duration_s} s) is empty"
            )
        i, j = start_s // self.step_s, end // self.step_s
        return Trace(self.counts[i:j], self.step_s, self.name, self.kind)


def collection_gaps(trace: Trace, *, window_s: int = 60, max_probability: float = 1e-9) -> np.ndarray:
    """Per-second mask of collection gaps in a per-second count trace.

    A run of L zero seconds is a gap (missing data, not idleness) when a Poisson process at
    the load around it would produce it with probability ``exp(-rate * L)`` below
    ``max_probability``; ``rate`` is the smaller of the mean rates over the ``window_s``
    seconds before and after the run (only one side at the trace's ends). At the Twitter
    week's ~60 requests/s even a one-second hole is a gap, while a quiet model's idle
    minutes are not. Steps overlapping a gap under-count the demand.
    """
    if trace.kind != "count" or trace.step_s != 1:
        raise ValueError("collection gaps are found on per-second count traces")
    c = trace.counts
    z = np.concatenate(([0], (c == 0).astype(np.int8), [0]))
    edges = np.diff(z)
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    mask = np.zeros(c.size, dtype=bool)
    if not starts.size:
        return mask
    cum = np.concatenate(([0], np.cumsum(c)))
    lo, hi = np.maximum(starts - window_s, 0), np.minimum(ends + window_s, c.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        before = np.where(starts > lo, (cum[starts] - cum[lo]) / (starts - lo), np.inf)
        after = np.where(hi > ends, (cum[hi] - cum[ends]) / (hi - ends), np.inf)
    rate = np.minimum(before, after)
    rate[~np.isfinite(rate)] = 0.0
    gap = rate * (ends - starts) > -np.log(max_probability)
    for a, b in zip(starts[gap], ends[gap], strict=True):
        mask[a:b] = True
    return mask


#: Example traces shipped inside the package (``mark/core/data/traces``; provenance in its
#: README). :func:`load_trace` takes their names (file name without suffixes) anywhere a path is
#: accepted, so a fresh install needs nothing beside it.
TRACE_DIR = Path(__file__).resolve().parents[1] / "data" / "traces"
SHIPPED_TRACES = {
    "twitter-2021-08-week1": "twitter-2021-08-week1.txt.gz",
    "mark-tweet-load-per-minute": "mark-tweet-load-per-minute.csv",
}


def shipped_trace(name: str) -> Path:
    """The file of the shipped trace ``name`` (see :data:`SHIPPED_TRACES`)."""
    try:
        return TRACE_DIR / SHIPPED_TRACES[name]
    except KeyError:
        raise ConfigError(
            f"unknown shipped trace {name!r}; shipped: {', '.join(sorted(SHIPPED_TRACES))}"
        ) from None


def resolve_trace(path: str | Path) -> Path:
    """``path`` when it exists, else the shipped trace of that name (or file name)."""
    p = Path(path)
    if p.exists():
        return p
    name = str(path)
    for stem, fname in SHIPPED_TRACES.items():
        if name in (stem, fname):
            return TRACE_DIR / fname
    raise ConfigError(
        f"{p}: trace file not found, nor a shipped trace of that name; "
        f"shipped: {', '.join(sorted(SHIPPED_TRACES))}"
    )


def load_trace(path: str | Path, *, step_s: int | None = None, name: str | None = None) -> Trace:
    """Load a trace file (plain text, CSV, either possibly gzipped).

    Args:
        path: the file.
        step_s: the step in seconds when the file cannot say (plain text is per second, a
            one-column CSV too); when the file has times, it must agree with them.
        name: report label; defaults to the file name without ``.gz``/``.txt``/``.csv``.
    """
    p = resolve_trace(path)
    label = name or _stem(p)
    lines = _read_lines(p)
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ConfigError(f"{p}: the trace is empty; {_PLAIN_ACCEPTED}, or a CSV with a header")
    first = lines[0].strip()
    if "," in first or (_HEADER_WORD.match(first) and not _is_number(first)):
        counts, file_step = _parse_csv(p, lines)
    else:
        counts, file_step = _parse_plain(p, lines), None
    if file_step is not None and step_s is not None and file_step != step_s:
        raise ConfigError(f"{p}: rows are {file_step} s apart but step_s={step_s} was asked for")
    return Trace(counts, step_s or file_step or 1, label)


def _stem(p: Path) -> str:
    stem = p.name
    for suffix in (".gz", ".txt", ".csv"):
        stem = stem.removesuffix(suffix)
    return stem


def _read_lines(p: Path) -> list[str]:
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the trace file ({exc.strerror or exc})") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ConfigError(f"{p}: corrupt gzip data ({exc})") from exc
    try:
        return raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start}); expected a text trace") from exc


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _parse_count(token: str, where: str, accepted: str) -> int:
    """One count; ``where`` is ``file:line`` for the error message."""
    text = token.strip()
    if not text:
        raise ConfigError(f"{where}: empty value; {accepted}")
    try:
        value = int(text)
    except ValueError:
        try:
            as_float = float(text)
        except ValueError:
            raise ConfigError(f"{where}: non-numeric value {text!r}; {accepted}") from None
        if not np.isfinite(as_float) or as_float != round(as_float):
            raise ConfigError(f"{where}: {text!r} is not a whole number; {accepted}") from None
        value = int(as_float)
    if value < 0:
        raise ConfigError(f"{where}: negative count {value}; {accepted}")
    return value


def _parse_plain(p: Path, lines: list[str]) -> np.ndarray:
    try:
        counts = np.fromiter(map(int, lines), dtype=np.int64, count=len(lines))
    except ValueError:
        counts = None
    if counts is None or (counts.size and counts.min() < 0):
        # slow path: finds the offending line (and accepts whole floats like "3.0")
        counts = np.array(
            [_parse_count(s, f"{p}:{i}", _PLAIN_ACCEPTED) for i, s in enumerate(lines, 1)],
            dtype=np.int64,
        )
    return counts


def _parse_time(token: str, where: str) -> float:
    """A row time in seconds: a number, ``MM-DD-HH-MM`` or ISO 8601."""
    text = token.strip()
    if _is_number(text):
        return float(text)
    m = _MDHM.match(text)
    try:
        if m:
            month, day, hour, minute = (int(g) for g in m.groups())
            # 2000 is a leap year, so 02-29 parses
            return datetime(2000, month, day, hour, minute).timestamp()
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ConfigError(
            f"{where}: cannot read time {text!r}; accepted: seconds, MM-DD-HH-MM "
            "(month-day-hour-minute) or ISO 8601"
        ) from None


def _parse_csv(p: Path, lines: list[str]) -> tuple[np.ndarray, int | None]:
    rows = list(csv.reader(lines))
    header = [h.strip().strip("\"'").lower() for h in rows[0]]
    if all(_is_number(h) for h in header):
        raise ConfigError(f"{p}:1: CSV without a header row; expected e.g. 'time,requests'")
    count_col = next((i for i, h in enumerate(header) if h in _COUNT_COLUMNS), len(header) - 1)
    time_col = next((i for i, h in enumerate(header) if h in _TIME_COLUMNS), None)
    if time_col is None and len(header) > 1:
        time_col = 0 if count_col != 0 else None
    if len(rows) < 2:
        raise ConfigError(f"{p}: the trace has a header but no rows; {_CSV_ACCEPTED}")
    counts = np.empty(len(rows) - 1, dtype=np.int64)
    times = np.empty(len(rows) - 1, dtype=np.float64)
    for i, row in enumerate(rows[1:]):
        where = f"{p}:{i + 2}"
        if len(row) != len(header):
            raise ConfigError(
                f"{where}: {len(row)} columns, the header has {len(header)} ({','.join(header)})"
            )
        counts[i] = _parse_count(row[count_col], where, _CSV_ACCEPTED)
        times[i] = _parse_time(row[time_col], where) if time_col is not None else i
    if time_col is None:
        return counts, None
    return counts, _step_from_times(p, times, rows[1:], time_col)


def _step_from_times(p: Path, times: np.ndarray, rows: list[list[str]], col: int) -> int | None:
    if times.size < 2:
        return 60 if _MDHM.match(rows[0][col].strip()) else None
    gaps = np.diff(times)
    step = gaps[0]
    if step <= 0 or step != round(step):
        raise ConfigError(
            f"{p}:3: time {rows[1][col].strip()!r} is {step:g} s after the previous row; "
            "times must increase by a whole number of seconds"
        )
    bad = np.flatnonzero(np.abs(gaps - step) > 1e-6)
    if bad.size:
        k = int(bad[0]) + 1
        raise ConfigError(
            f"{p}:{k + 2}: time {rows[k][col].strip()!r} is {gaps[k - 1]:g} s after the "
            f"previous row; rows must be evenly spaced ({step:g} s, from the first two rows)"
        )
    return int(step)
