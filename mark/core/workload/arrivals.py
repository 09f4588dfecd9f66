"""Seeded arrival generators: Poisson, MMPP, trace spreading and surges.

Every generator takes ``seed``: an ``int``, ``None`` (fresh entropy) or a
``numpy.random.Generator`` to draw from, and returns arrival times in seconds as a sorted
float64 array starting at 0. The same integer seed always gives the same arrivals.

Poisson arrivals are built from exponential inter-arrival gaps (the MArk code drew
Poisson-distributed gaps, which is not a Poisson process). An MMPP (Markov-modulated
Poisson process) switches between k states with exponential dwell times; in state i it
emits a Poisson process of rate ``rates[i]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mark.core.workload.traces import Trace

Seed = int | np.random.Generator | None


def _rng(seed: Seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _check_duration(duration_s: float) -> None:
    if not np.isfinite(duration_s) or duration_s < 0:
        raise ValueError(f"duration_s must be finite and non-negative, got {duration_s}")


def poisson_arrivals(rate_per_s: float, duration_s: float, seed: Seed = None) -> np.ndarray:
    """Homogeneous Poisson arrivals on ``[0, duration_s)``: cumulated exponential gaps."""
    _check_duration(duration_s)
    if not np.isfinite(rate_per_s) or rate_per_s < 0:
        raise ValueError(f"rate_per_s must be finite and non-negative, got {rate_per_s}")
    rng = _rng(seed)
    if rate_per_s == 0 or duration_s == 0:
        return np.empty(0, dtype=np.float64)
    expected = rate_per_s * duration_s
    chunks: list[np.ndarray] = []
    t = 0.0
    while t < duration_s:
        n = int(expected - t * rate_per_s + 6.0 * np.sqrt(expected) + 16)
        times = t + np.cumsum(rng.exponential(1.0 / rate_per_s, size=n))
        chunks.append(times)
        t = float(times[-1])
    out = np.concatenate(chunks)
    return out[: np.searchsorted(out, duration_s)]


@dataclass(frozen=True)
class MMPPSample:
    """An MMPP realisation: the arrivals and the hidden state path.

    ``states[j]`` is the state entered at ``entry_s[j]`` (``entry_s[0] == 0``); it holds
    until ``entry_s[j + 1]`` or ``duration_s``.
    """

    arrivals: np.ndarray
    states: np.ndarray
    entry_s: np.ndarray
    duration_s: float

    def dwell_s(self) -> np.ndarray:
        """Time spent in each visit (the last visit is cut off at ``duration_s``)."""
        return np.diff(np.append(self.entry_s, self.duration_s))


def _check_mmpp(rates: Sequence[float], switch_rates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lam = np.asarray(rates, dtype=np.float64)
    q = np.array(switch_rates, dtype=np.float64)
    k = lam.size
    if lam.ndim != 1 or k == 0:
        raise ValueError("rates must be a non-empty sequence of per-second rates")
    if q.shape != (k, k):
        raise ValueError(f"switch_rates must be {k}x{k} to match {k} rates, got {q.shape}")
    np.fill_diagonal(q, 0.0)
    if not (np.all(np.isfinite(lam)) and np.all(np.isfinite(q))):
        raise ValueError("MMPP rates and switch rates must be finite")
    if lam.min() < 0 or q.min() < 0:
        raise ValueError("MMPP rates and off-diagonal switch rates must be non-negative")
    return lam, q


def _state_path(
    q: np.ndarray, duration_s: float, rng: np.random.Generator, initial_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """Entry times and states of a continuous-time Markov chain with generator off-diagonals q."""
    k = q.shape[0]
    if not 0 <= initial_state < k:
        raise ValueError(f"initial_state must be in 0..{k - 1}, got {initial_state}")
    leave = q.sum(axis=1)
    jump_p = np.divide(q, leave[:, None], out=np.zeros_like(q), where=leave[:, None] > 0)
    cum_p = np.cumsum(jump_p, axis=1)
    states = [initial_state]
    entries = [0.0]
    t, s = 0.0, initial_state
    # draws come in blocks so the Python loop does only arithmetic per visit
    block = 1024
    exp_draws = rng.exponential(1.0, size=block)
    uni_draws = rng.random(size=block)
    i = 0
    while leave[s] > 0:
        if i == block:
            exp_draws, uni_draws, i = rng.exponential(1.0, size=block), rng.random(size=block), 0
        t += exp_draws[i] / leave[s]
        if t >= duration_s:
            break
        s = min(int(np.searchsorted(cum_p[s], uni_draws[i] * cum_p[s, -1], side="right")), k - 1)
        i += 1
        states.append(s)
        entries.append(t)
    return np.asarray(entries, dtype=np.float64), np.asarray(states, dtype=np.int64)


def mmpp_sample(
    rates: Sequence[float],
    switch_rates: np.ndarray,
    duration_s: float,
    seed: Seed = None,
    initial_state: int = 0,
) -> MMPPSample:
    """An MMPP on ``[0, duration_s)`` with its state path.

    Args:
        rates: arrival rate in each of the k states, requests per second.
        switch_rates: k x k matrix; entry (i, j) is the rate (per second) of jumping from
            state i to j. The diagonal is ignored. The mean dwell in state i is
            ``1 / sum_j switch_rates[i, j]``.
        duration_s: length in seconds.
        seed: int, None or a Generator.
        initial_state: the state at time 0.
    """
    _check_duration(duration_s)
    lam, q = _check_mmpp(rates, switch_rates)
    rng = _rng(seed)
    entry, states = _state_path(q, duration_s, rng, initial_state)
    dwell = np.diff(np.append(entry, duration_s))
    n = rng.poisson(lam[states] * dwell)
    starts = np.repeat(entry, n)
    arrivals = starts + rng.random(starts.size) * np.repeat(dwell, n)
    arrivals.sort()
    return MMPPSample(arrivals, states, entry, float(duration_s))


def mmpp_arrivals(
    rates: Sequence[float],
    switch_rates: np.ndarray,
    duration_s: float,
    seed: Seed = None,
    initial_state: int = 0,
) -> np.ndarray:
    """Sorted MMPP arrival times; see :func:`mmpp_sample` for the parameters."""
    return mmpp_sample(rates, switch_rates, duration_s, seed, initial_state).arrivals


def mmpp_trace(
    rates: Sequence[float],
    switch_rates: np.ndarray,
    duration_s: int,
    seed: Seed = None,
    initial_state: int = 0,
    name: str = "mmpp",
) -> Trace:
    """Per-second counts of an MMPP (same law as binning :func:`mmpp_arrivals`).

    Given the state path, the count in second s is Poisson with mean the integral of the
    rate over that second, so no individual arrival is drawn: a week at hundreds of
    requests per second costs only the state path.
    """
    _check_duration(duration_s)
    lam, q = _check_mmpp(rates, switch_rates)
    rng = _rng(seed)
    entry, states = _state_path(q, duration_s, rng, initial_state)
    knots = np.append(entry, duration_s)
    cum = np.concatenate(([0.0], np.cumsum(lam[states] * np.diff(knots))))
    seconds = np.arange(int(duration_s) + 1, dtype=np.float64)
    expected = np.diff(np.interp(seconds, knots, cum))
    return Trace(rng.poisson(np.maximum(expected, 0.0)), 1, name)


def spread_trace(trace: Trace, seed: Seed = None) -> np.ndarray:
    """Arrival times placing each step's count uniformly at random within its step.

    Vectorised: one uniform per request added to its step's start, then one in-place sort
    (about a second per 17 million arrivals).
    """
    if trace.kind != "count":
        raise ValueError(f"trace {trace.name!r} holds peak rates, not counts; cannot spread it")
    rng = _rng(seed)
    times = np.repeat(np.arange(trace.counts.size, dtype=np.float64), trace.counts)
    times += rng.random(times.size)
    times.sort()
    times *= float(trace.step_s)
    return times


def surge_rate(
    base: np.ndarray, at_s: float, length_s: float, factor: float, step_s: int = 1
) -> np.ndarray:
    """A copy of ``base`` with the rate multiplied by ``factor`` on ``[at_s, at_s + length_s)``.

    ``base`` is a rate series in requests per second, one value per ``step_s`` seconds
    (per second by default). MArk's surge tests used factors 1.75 (+75%) and 2.0 (+100%).
    A step only partly inside the window gets the time-weighted factor, so the mean rate
    over any interval is exact.
    """
    rates = np.asarray(base, dtype=np.float64)
    if rates.ndim != 1:
        raise ValueError("base must be a one-dimensional rate series")
    if not np.isfinite(factor) or factor < 0:
        raise ValueError(f"surge factor must be finite and non-negative, got {factor}")
    if at_s < 0 or length_s < 0:
        raise ValueError(f"surge start and length must be non-negative, got {at_s}, {length_s}")
    starts = np.arange(rates.size, dtype=np.float64) * step_s
    overlap = np.clip(np.minimum(starts + step_s, at_s + length_s) - np.maximum(starts, at_s), 0, step_s)
    return rates * (1.0 + (factor - 1.0) * overlap / step_s)


def rate_to_counts(rates: np.ndarray, seed: Seed = None, step_s: int = 1) -> np.ndarray:
    """Poisson counts per step (int64) for rates in requests per second over ``step_s`` steps."""
    lam = np.asarray(rates, dtype=np.float64)
    if lam.size and (not np.all(np.isfinite(lam)) or lam.min() < 0):
        raise ValueError("rates must be finite and non-negative")
    return _rng(seed).poisson(lam * step_s).astype(np.int64)


def rates_to_trace(
    rates: np.ndarray, seed: Seed = None, step_s: int = 1, name: str = "rates"
) -> Trace:
    """A count :class:`Trace` of Poisson counts for a per-step rate series (requests/s)."""
    return Trace(rate_to_counts(rates, seed, step_s), step_s, name)
