"""Instance headroom for what FaaS cannot absorb: its concurrency limit and scaling rate.

Spill is the planner's fallback at burst onsets, while new instances boot. But FaaS takes
at most ``min(concurrency limit, scaling burst)`` new environments at once (Lambda: 1,000
concurrent executions per account by default, and 1,000 new environments per 10 s per
function); a spill stream beyond what those environments serve builds a backlog that every
later spilled request waits behind, so *all* of it misses the SLO, not only the excess.

Two levers keep a burst onset within what FaaS absorbs, and the plan takes the cheaper mix:

- **instance headroom**: the fleet holds at least ``m`` x the *base* rate (the median of the
  last ``BASE_S`` seconds' 1-minute means: the level bursts start from; a burst in progress
  does not raise it, so the floor is not multiplied by the burst itself, and minute-to-minute
  noise does not move it, so it does not churn the fleet);
- **FaaS memory**: a larger function runs an inference faster (more vCPUs), so the same
  1,000 environments absorb more requests per second, at a higher price per request.

For each memory size at or above the cheapest FaaS settings' (each with its cheapest batching
for the spill stream), the history is replayed (:class:`Replay`) with a fleet of
``max(forecast, m x base)`` planned ``lag_s`` earlier (the forecast: the planner's quantile
of the previous two minutes' 5-second rates). The smallest ``m`` whose spill in the 5-second
windows where it exceeds ``UTILISATION`` x FaaS's rate stays within a share of the SLO's
slack (the rest is left to cold starts and prediction error) is the SLO's minimum; above it,
``m`` goes as far as the replayed cost (instances held x the cheapest type's price per
request-second, spill x that memory's FaaS price per request) keeps falling by at least 5%
(a GPU fleet is cheaper than the onset spill it saves; CPU instances usually are not). The
cheapest feasible (memory, ``m``) is planned; the memory in force is kept unless another
saves 5%. At small scale FaaS absorbs every burst, ``m`` is 0 (no floor) and the cheapest
FaaS settings stay. If no pair gets there, the plan holds ``max_multiplier`` with the
largest memory, accepts throttling and says so (``Decision.info``).

**Burst calendar.** Where bursts come on a schedule (the Twitter week's start within minutes
of the hour or the half hour: 01:32, 03:32, 06:02, 07:32, ...), a floor held all the time
pays for headroom the other 25 of every 30 minutes. With the time the counts end at
(``end_s``), each option is also replayed with the floor (and, for a larger memory, that
memory) held only in the windows of a :class:`Calendar` per period in ``PERIODS_S``: one
window per episode of unabsorbed spill (or, for a floor held for its cost rather than the
SLO, of any burst: spill beyond the base rate; a GPU's headroom is cheaper than Lambda for
the burst it saves, though FaaS would absorb it), from ``PHASE_MARGIN_S`` before its onset's
phase to ``ONSET_HOLD_S`` after it; once a burst has come the forecast holds what it needs, so the
replay keeps capacity a window held while the current level wants it (``KEEP_S``), and bills
the floor from a launch lead before each window to the scale-in hold after it. The calendar
is judged out of sample (leave one out: each episode against the calendar of the others),
so a burst at a phase no other burst had counts as unforeseen and bursts at no schedule keep
the constant floor. Bursts also keep their distance: a window that opens within half the
shortest gap between the history's bursts (at most a period) after one is skipped
(``Calendar.refractory_s``; the Twitter week's bursts come 1-5 h apart, so the half-hour
calendar's window right after each burst, about a quarter of its windows, held a floor for
nothing), judged out of sample alike. Only the half hour is tried: with 6 hours of history an hourly calendar
was fooled by two bursts at :32 before one at :02 (five minutes of a GPU fleet's onset on
Lambda, ~$25 of a ten-hour slice the hindsight plan runs for $28).

**Cold starts at a burst onset.** New environments serve nothing for the cold start, so in
its first seconds FaaS takes only ``faas_onset(...).rps`` (~350 req/s of Inception-v3 at
3,008 MB: 1,000 environments each 2.5 s cold and 0.38 s a request); the rest is throttled
and retried late. The replay counts it (:meth:`Replay.shares`) within the SLO's
allowance, and the plan says it accepts it (``throttling_reason`` 2; 3: spill beyond what FaaS
absorbs, also throttled, left within the allowance as the SLO's cheapest floor; 1: no
floor keeps the allowance).

Pure functions of the observed counts and the context.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from provisioner.capacity import saturation_rps
from provisioner.context import PolicyContext
from provisioner.faas_batching import choose_faas_config
from provisioner.records import FaasConfig, TypeServing
from provisioner.serving import default_serving_plan

RESOLUTION_S = 5  # rates are judged on 5-second means (cheap; Poisson noise smoothed)
LEVEL_S = 60  # the plan's view of the current rate: the last minute's mean
BASE_S = 1800  # the base rate: median of this many seconds' 1-minute means
UTILISATION = 0.8  # FaaS is planned to run at most this busy at a burst onset


def _environments(ctx: PolicyContext, cfg: FaasConfig) -> tuple[int, int, float] | None:
    """(environments FaaS can start at once: the concurrency limit, or the scaling burst if
    smaller; requests per invocation; seconds an invocation holds one, warm) under ``cfg``;
    None without a Lambda profile."""
    spec, lp = ctx.catalogue.lambda_, ctx.profile.lambda_
    if lp is None:
        return None
    b = max(cfg.batch, 1)
    svc = lp.service_s(cfg.memory_mb, b, spec.mb_per_vcpu, spec.max_vcpu) + cfg.timeout_s
    return min(spec.concurrency_limit, spec.scaling_per_10s), b, svc


def faas_absorb_rps(ctx: PolicyContext, cfg: FaasConfig) -> float:
    """Requests/s FaaS takes at a burst onset under ``cfg``: the environments it can start at
    once, each serving full batches back to back at the warm service time."""
    env = _environments(ctx, cfg)
    if env is None:
        return 0.0
    envs, b, svc = env
    return envs * b / svc


@dataclass(frozen=True)
class Onset:
    """What FaaS takes at a burst onset before new environments are up: ``rps`` while all
    of them start cold (:func:`faas_onset`), for ``cold_s``; environments stay warm for
    ``keep_alive_s`` after their last request."""

    rps: float
    cold_s: float
    keep_alive_s: float


def faas_onset(ctx: PolicyContext, cfg: FaasConfig) -> Onset | None:
    """:class:`Onset` under ``cfg``: the environments it may start at once each busy for a
    cold start and a batch (provisioned ones serve warm); None without a Lambda profile."""
    env = _environments(ctx, cfg)
    if env is None:
        return None
    envs, b, svc = env
    spec = ctx.catalogue.lambda_
    warm = min(cfg.provisioned, envs)
    rps = warm * b / svc + (envs - warm) * b / (spec.cold_start_s + svc)
    return Onset(rps, spec.cold_start_s, spec.keep_alive_s)


def _dilate(a: np.ndarray, before: int, after: int = 0) -> np.ndarray:
    """``out[i]`` = the largest of ``a[i - before .. i + after]`` (zeros past the ends)."""
    pad = np.concatenate((np.zeros(before), a, np.zeros(after)))
    return np.lib.stride_tricks.sliding_window_view(pad, before + after + 1).max(axis=1)


def base_rate(counts: np.ndarray, base_s: int = BASE_S) -> float:
    """Median of the 1-minute mean rates over the last ``base_s`` seconds (req/s)."""
    n = min(counts.size, base_s) // LEVEL_S
    if n == 0:
        return float(np.mean(counts)) if counts.size else 0.0
    w = np.asarray(counts[-n * LEVEL_S:], dtype=np.float64).reshape(n, LEVEL_S).mean(axis=1)
    return float(np.median(w))


@dataclass(frozen=True)
class Headroom:
    multiplier: float  # the fleet holds at least this x the base rate (0: no floor)
    base_rps: float  # the base rate now (the floor is multiplier x base_rps)
    unabsorbed_share: float  # of requests in the history, at that multiplier
    absorb_rps: float  # what FaaS takes at a burst onset under ``faas``
    accepted_throttling: bool  # no pair up to the maximum kept within the allowance
    faas: FaasConfig | None = None  # the FaaS settings planned with (None: unchanged)
    usd_per_h: float = 0.0  # replayed cost of the chosen pair, per hour of history
    calendar: Calendar | None = None  # the floor only in its windows (None: always)
    forced: bool = False  # the spill under way ruled out cheaper settings (not the replay)
    throttled_share: float = 0.0  # of requests, expected throttled at burst onsets

    @property
    def floor_rps(self) -> float:
        return self.multiplier * self.base_rps

    def in_window(self, t0: float, t1: float) -> bool:
        """Whether the calendar (if any; without one, always) has a window in [t0, t1]."""
        return self.calendar is None or self.calendar.active(t0, t1)

    def floor_between(self, t0: float, t1: float) -> float:
        """The floor for a plan whose capacity serves from ``t0`` to ``t1``: ``floor_rps``
        when the calendar has a window in that span, else 0."""
        return self.floor_rps if self.in_window(t0, t1) else 0.0

    def info(self) -> dict[str, float]:
        cal = self.calendar
        return {"headroom_x": self.multiplier, "headroom_base_rps": self.base_rps,
                "headroom_floor_rps": self.floor_rps, "faas_absorb_rps": self.absorb_rps,
                "headroom_period_s": cal.period_s if cal else 0.0,
                "headroom_duty": cal.duty if cal else 1.0,
                "faas_memory_mb": float(self.faas.memory_mb) if self.faas else math.nan,
                "expected_unabsorbed_share": self.unabsorbed_share,
                "expected_throttled_share": self.throttled_share,
                "headroom_replay_usd_per_h": self.usd_per_h,
                "throttling_accepted": float(self.accepted_throttling
                                             or self.unabsorbed_share > 0.0),
                "throttling_reason": float(self.throttling_reason)}

    @property
    def throttling_reason(self) -> int:
        """Why the plan accepts throttling: 1, no floor up to the maximum keeps the
        allowance; 3, it leaves spill beyond what FaaS takes at burst onsets (its limits:
        throttled and retried late) within the allowance, where more instances to absorb
        it would cost more; 2, only the cold-start throttling at burst onsets; 0, none
        expected (``expected_unabsorbed_share`` counts both 3's and 2's requests)."""
        if self.accepted_throttling:
            return 1
        if self.unabsorbed_share > self.throttled_share:
            return 3
        return 2 if self.throttled_share > 0.0 else 0


@dataclass(frozen=True)
class Replay:
    """5-second rates ``r`` and, aligned with them, what a plan made ``lag_s`` earlier saw:
    the last minute's rate ``lvl`` and the base rate ``base``."""

    r: np.ndarray
    lvl: np.ndarray
    base: np.ndarray
    burst_x: float = 1.0  # what the fleet serves in an overload, per request/s of capacity
    t: np.ndarray | None = None  # each window's end, on the policy's clock (None: unknown)
    mask: np.ndarray | None = None  # 1 where the floor is held (a burst calendar); None: all
    check: np.ndarray | None = None  # the mask :meth:`share` judges with (None: ``mask``)
    # outside the mask's windows FaaS runs its cheapest settings: what they absorb and
    # cost per request (None: the same settings everywhere)
    out_absorb_rps: float | None = None
    out_usd_per_req: float | None = None
    # what a plan made at the window's last minute boundary saw (the level existing
    # capacity is kept at: no launch delay), and for a mask, where capacity it held within
    # the last ``lag_s`` + ``KEEP_S`` is still there to be kept (``kept_check``: for
    # ``check``)
    lvl_now: np.ndarray | None = None
    kept: np.ndarray | None = None
    kept_check: np.ndarray | None = None
    lag_s: float = 0.0
    # where a mask's floor is billed: from a launch lead (``lag_s``, booting is billed)
    # before each window to ``HOLD_S`` after it (the scale-in hold)
    billed: np.ndarray | None = None

    @classmethod
    def of(cls, counts: np.ndarray, lag_s: float, q: float | None = None,
           burst_x: float = 1.0, end_s: float | None = None) -> Replay:
        """``q``: the plan covers the ``q``-quantile of the last two minutes' 5-second rates
        (the planner's forecast); None: the last minute's mean. ``burst_x``: requests/s the
        fleet serves in an overload per request/s of its capacity under the SLO (its
        instances' back-to-back throughput, :func:`overload_x`; 1: the capacity only).
        ``end_s``: the time the counts end at (the snapshot's ``now_s``), so windows have
        times a burst calendar can be learnt on (None: none)."""
        c = np.asarray(counts, dtype=np.float64)
        n_min = c.size // LEVEL_S
        empty = cls(np.zeros(0), np.zeros(0), np.zeros(0), burst_x)
        if n_min < 2:
            return empty
        c = c[c.size - n_min * LEVEL_S:]
        r = c.reshape(-1, RESOLUTION_S).mean(axis=1)
        mins = c.reshape(n_min, LEVEL_S).mean(axis=1)
        seen = mins
        if q is not None:
            per = LEVEL_S // RESOLUTION_S
            two = np.concatenate((r[:per], r)).reshape(n_min + 1, per)
            pairs = np.concatenate((two[:-1], two[1:]), axis=1)
            seen = np.quantile(pairs, q, axis=1)
        k = max(1, BASE_S // LEVEL_S)
        pad = np.concatenate((np.full(k - 1, mins[0]), mins))
        med = np.median(np.lib.stride_tricks.sliding_window_view(pad, k), axis=1)
        # window i ends at e_i; its fleet was planned at the last minute boundary <= e_i - lag
        ends = (np.arange(r.size) + 1) * RESOLUTION_S
        j = np.floor((ends - lag_s) / LEVEL_S).astype(np.int64) - 1  # the minute it saw
        ok = j >= 0
        if not ok.any():
            return empty
        j_now = np.floor(ends / LEVEL_S).astype(np.int64) - 1
        t = None if end_s is None else (end_s - n_min * LEVEL_S + ends)[ok].astype(np.float64)
        return cls(r[ok], seen[j[ok]], med[j[ok]], burst_x, t, lvl_now=seen[j_now[ok]],
                   lag_s=float(lag_s))

    def with_mask(self, mask: np.ndarray, check: np.ndarray | None = None) -> Replay:
        """This replay with the floor held where ``mask`` is 1 (judged with ``check``)."""
        keep = max(1, int((self.lag_s + KEEP_S) // RESOLUTION_S)) - 1
        lead = max(1, int(self.lag_s // RESOLUTION_S))
        hold = max(1, int(HOLD_S // RESOLUTION_S))
        return replace(self, mask=mask, check=check, kept=_dilate(mask, keep),
                       kept_check=None if check is None else _dilate(check, keep),
                       billed=_dilate(mask, hold, lead))

    def fleet(self, m: float | np.ndarray, checked: bool = False) -> np.ndarray:
        """The fleet with a floor of ``m`` x base (``m`` a column of multipliers gives a row
        per multiplier): where the mask holds it (``checked``: the out-of-sample one); after
        a window, what it held is kept while the plan's current level wants it (a burst that
        came)."""
        mask, kept = (self.check, self.kept_check) if checked and self.check is not None else (
            self.mask, self.kept)
        return self._held(m, mask, kept)

    def _held(self, m: float | np.ndarray, mask: np.ndarray | None,
              kept: np.ndarray | None) -> np.ndarray:
        """The fleet with a floor of ``m`` x base where ``mask`` is 1 (everywhere: None), and
        what it held where ``kept`` is 1 while the plan's current level wants it."""
        if mask is None:
            return np.maximum(self.lvl, m * self.base)
        out = np.maximum(self.lvl, m * self.base * mask)
        if kept is not None and self.lvl_now is not None:
            out = np.maximum(out, np.minimum(self.lvl_now, m * self.base * kept))
        return out

    @property
    def _kept_judged(self) -> np.ndarray | None:
        """Where a window's capacity (and larger memory) is kept, as judged: out of sample
        when there is a check."""
        return self.kept if self.check is None else self.kept_check

    def share(self, absorb_rps: float, m: float, onset: Onset | None = None) -> float:
        """Share of the requests spilled in windows where the spill exceeds ``UTILISATION`` x
        what FaaS takes (``absorb_rps``), with a floor of ``m`` x base (the fleet taking
        ``burst_x`` x its capacity before it spills); with ``onset``, plus those throttled
        while new environments start cold (:meth:`shares`)."""
        return sum(self.shares(absorb_rps, m, onset))

    def shares(self, absorb_rps: float, m: float, onset: Onset | None
               ) -> tuple[float, float]:
        """(unabsorbed, throttled) shares of the requests: spill in windows where it exceeds
        what FaaS absorbs, and, with ``onset``, what FaaS throttles at burst onsets in windows
        it otherwise absorbs: spill above what the warm environments (those the last
        ``keep_alive_s`` needed) serve must start new ones, which serve nothing for
        ``cold_s``; meanwhile FaaS takes at most ``onset.rps`` more (the concurrency limit's
        environments all cold). A throttled request is retried when a container frees: late."""
        total = float(self.r.sum())
        if total <= 0:
            return 0.0, 0.0
        spill = np.maximum(self.r - self.burst_x * self.fleet(m, checked=True), 0.0)
        absorb: float | np.ndarray = absorb_rps
        kept = self._kept_judged
        if kept is not None and self.out_absorb_rps is not None:
            # the larger memory from a window's start until its spill is over (the policy
            # keeps it while the spill under way needs it)
            absorb = np.where(kept > 0, absorb_rps, self.out_absorb_rps)
        over = spill > UTILISATION * absorb
        lost = float(spill[over].sum() / total)
        if onset is None or spill.size < 2:
            return lost, 0.0
        # what the environments warm in the keep-alive before each window serve
        k = max(1, int(onset.keep_alive_s // RESOLUTION_S))
        warm = _dilate(np.concatenate(([0.0], spill[:-1])), k - 1)
        cold = np.maximum(spill - np.maximum(warm, onset.rps), 0.0)
        cold[over] = 0.0  # counted as unabsorbed already
        secs = min(onset.cold_s, RESOLUTION_S) / RESOLUTION_S  # of a window's requests
        return lost, float(cold.sum() * secs / total)

    def usd_per_h(self, m: float | np.ndarray, inst_usd_per_req_s: float,
                  faas_usd_per_req: float) -> np.ndarray:
        """Replayed cost per hour for each multiplier in ``m``: the fleet held, at the
        cheapest type's price per request/s of capacity, plus the spill at the FaaS price."""
        ms = np.atleast_1d(np.asarray(m, dtype=np.float64))
        if self.r.size == 0:
            return np.zeros(ms.size)
        col = ms[:, None]
        # the spill is the out-of-sample calendar's (each burst against the windows of the
        # others: a calendar that foretold only itself saves nothing); the floor is billed on
        # the whole calendar's windows, from a launch lead before each to the hold after it
        serving = self.fleet(col, checked=True)
        fleet = serving if self.mask is None else self._held(
            col, self.mask if self.billed is None else self.billed, self.kept)
        spill = np.maximum(self.r[None, :] - self.burst_x * serving, 0.0)
        faas: float | np.ndarray = faas_usd_per_req
        kept = self._kept_judged
        if kept is not None and self.out_usd_per_req is not None:
            faas = np.where(kept > 0, faas_usd_per_req, self.out_usd_per_req)[None, :]
        per_s = (inst_usd_per_req_s * fleet.sum(axis=1)
                 + (faas * spill).sum(axis=1)) / self.r.size
        return per_s * 3600.0

    def cheapest_m(self, lo: float, hi: float, inst_usd_per_req_s: float,
                   faas_usd_per_req: float, min_saving: float = 0.05,
                   current: float | None = None) -> tuple[float, float]:
        """The multiplier in [lo, hi] (a coarse, then a fine grid) with the lowest replayed
        cost, and that cost per hour: more headroom than the SLO needs where instances are
        cheaper than the spill they save at burst onsets (a GPU fleet against FaaS). The
        replay is a model (a continuous fleet, the forecast as a quantile): a multiplier
        above ``lo`` is taken only if it saves at least ``min_saving`` of ``lo``'s cost.
        ``current``: the multiplier in force; once above ``lo`` (the cheapest saved
        ``min_saving`` when it was taken), the cheapest is kept while it saves anything on
        ``lo`` (hysteresis: a replay refreshed every few minutes moves the costs by a few
        per cent, and a floor that drops to ``lo`` and back ends and relaunches instances,
        or drops just before a burst: a GPU floor fell 4.1x -> 2.6x the base two minutes
        before one on the Twitter day at x20)."""
        args = (inst_usd_per_req_s, faas_usd_per_req)
        if current is not None and current > lo:
            min_saving = 0.0
        at_lo = float(self.usd_per_h(lo, *args)[0])
        coarse = np.linspace(lo, hi, 17)
        usd = self.usd_per_h(coarse, *args)
        i = int(np.argmin(usd))
        width = (hi - lo) / 16
        fine = np.linspace(max(lo, coarse[i] - width), min(hi, coarse[i] + width), 17)
        f_usd = self.usd_per_h(fine, *args)
        j = int(np.argmin(f_usd))
        m, best = (float(fine[j]), float(f_usd[j])) if f_usd[j] < usd[i] else (
            float(coarse[i]), float(usd[i]))
        if best >= (1.0 - min_saving) * at_lo:
            return lo, at_lo
        return m, best


PERIODS_S = (1800.0,)  # periods a burst calendar is tried on (scheduled traffic)
PHASE_MARGIN_S = 120.0  # a calendar window opens this long before a burst's phase ...
ONSET_HOLD_S = 180.0  # ... and closes this long after it (a burst that came is then in
# the forecast, which keeps the capacity held for it; one that did not frees it)
KEEP_S = 600.0  # capacity a window held is kept while the forecast wants it, this long
HOLD_S = 60.0  # the planner's scale-in hold: a window's floor is billed this long after it
EPISODE_GAP_S = 300.0  # unabsorbed windows closer than this are one episode
BURST_REL = 1.0  # a burst: spill with no floor above this x the base rate


@dataclass(frozen=True)
class Calendar:
    """Phases of a period in which bursts have started: ``windows`` as (start phase, length)
    in seconds of ``period_s``, on the policy's clock. Where bursts come on a schedule (the
    Twitter week's start within minutes of the hour or the half hour), the floor is held only
    in these windows and the fleet follows the forecast between them.

    ``onsets`` (the episodes' starts it was learnt on) and ``refractory_s``: no burst has come
    sooner than twice this after another, so a window that opens within it after an onset is
    skipped (the Twitter week's bursts come 1-5 h apart, never in the next half hour: a
    floor held at every half hour paid for that window after each burst, about a quarter of
    its windows). At most one period: a few hours of history say little about the longest
    quiet to expect (2-hour gaps, then a burst an hour later on the week's sixth day)."""

    period_s: float
    windows: tuple[tuple[float, float], ...]
    onsets: tuple[float, ...] = ()
    refractory_s: float = 0.0

    def mask(self, t: np.ndarray) -> np.ndarray:
        """1.0 where ``t`` falls in a window, else 0.0."""
        t = np.asarray(t, dtype=np.float64)
        ph = np.mod(t, self.period_s)
        out = np.zeros(ph.shape, dtype=bool)
        on = np.asarray(self.onsets, dtype=np.float64)
        for start, length in self.windows:
            into = np.mod(ph - start, self.period_s)
            inside = into < length
            if self.refractory_s > 0 and on.size:
                opened = t - into  # when this occurrence of the window opened
                i = np.searchsorted(on, opened, side="right") - 1
                since = np.where(i >= 0, opened - on[np.maximum(i, 0)], np.inf)
                inside &= ~((since > 0) & (since < self.refractory_s))
            out |= inside
        return out.astype(np.float64)

    def active(self, t0: float, t1: float) -> bool:
        """Whether some window (not skipped) overlaps [t0, t1]: :meth:`mask` on a 5 s grid
        (windows last minutes)."""
        grid = np.append(np.arange(t0, t1, RESOLUTION_S), t1)
        return bool(self.mask(grid).any())

    @property
    def duty(self) -> float:
        """Share of the period inside a window."""
        grid = np.arange(0.0, self.period_s, 5.0)
        return float(self.mask(grid).mean())


def episodes(rp: Replay, absorb_rps: float, bursts: bool = False
             ) -> list[tuple[float, np.ndarray]]:
    """(first window's start, window indices) of each run of windows whose
    spill, with no floor, is more than FaaS absorbs (``UTILISATION`` x ``absorb_rps``): the
    burst onsets a floor is for. ``bursts``: also those whose spill is more than the base
    rate (the load more than doubles past the fleet): the bursts a floor held for its cost
    is for (a GPU fleet's headroom is cheaper than the spill it saves, though FaaS would
    absorb it). Windows closer than ``EPISODE_GAP_S`` are one episode; one under way in the
    replay's first window is left out (its onset is before the history: a burst cut by the
    history's start put a window at a phase no burst had)."""
    if rp.t is None or rp.r.size == 0:
        return []
    spill = rp.r - rp.burst_x * rp.lvl
    over = UTILISATION * absorb_rps
    hot = np.flatnonzero(spill > (np.minimum(over, BURST_REL * rp.base) if bursts else over))
    if hot.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(rp.t[hot]) > EPISODE_GAP_S) + 1
    out = []
    for idx in np.split(hot, cuts):
        if idx[0] == 0:
            continue  # under way when the replay begins: its onset (and phase) is unknown
        out.append((float(rp.t[idx[0]]) - RESOLUTION_S, idx))
    return out


def calendar_of(eps: list[tuple[float, np.ndarray]], period_s: float) -> Calendar:
    """A window per episode, from ``PHASE_MARGIN_S`` before its phase (its first unabsorbed
    window) to ``ONSET_HOLD_S`` after it; with three episodes or more, a refractory time of
    half the shortest gap between them, at most a period (:class:`Calendar`)."""
    length = float(min(period_s, PHASE_MARGIN_S + ONSET_HOLD_S))
    onsets = tuple(sorted(a for a, _ in eps))
    gaps = np.diff(onsets)
    return Calendar(period_s, tuple((float((a - PHASE_MARGIN_S) % period_s), length)
                                    for a, _ in eps), onsets,
                    min(float(gaps.min()) / 2.0, period_s) if gaps.size >= 2 else 0.0)


def calendar_replay(rp: Replay, absorb_rps: float, period_s: float,
                    out: tuple[float, float] | None = None, bursts: bool = False
                    ) -> tuple[Replay, Calendar] | None:
    """``rp`` with the floor (and FaaS settings that absorb ``absorb_rps``) held only in the
    windows of a calendar of ``period_s`` learnt on its episodes, and judged out of sample:
    each episode's windows are checked against the calendar of the *other* episodes (leave
    one out), so a burst at a phase no other burst had counts as unforeseen. ``out``: (what
    FaaS absorbs, its price per request) outside the windows, where it runs its cheapest
    settings; the episodes are then those of these settings (None: ``absorb_rps``
    everywhere). ``bursts``: learnt on every burst, not only those FaaS cannot absorb
    (:func:`episodes`). None with fewer than two episodes."""
    t = rp.t
    eps = episodes(rp, absorb_rps if out is None else min(absorb_rps, out[0]), bursts)
    if len(eps) < 2 or t is None:
        return None
    if out is not None:
        rp = replace(rp, out_absorb_rps=out[0], out_usd_per_req=out[1])
    cal = calendar_of(eps, period_s)
    mask = cal.mask(t)
    check = mask.copy()
    for k, (_, idx) in enumerate(eps):
        others = calendar_of(eps[:k] + eps[k + 1:], period_s)
        check[idx] = others.mask(t[idx])
    return rp.with_mask(mask, check), cal


def _smallest_m(rp: Replay, absorb: float, allowed: float, max_m: float,
                onset: Onset | None = None) -> float | None:
    if rp.share(absorb, 0.0, onset) <= allowed:
        return 0.0
    if rp.share(absorb, max_m, onset) > allowed:
        return None
    lo, hi = 0.0, max_m
    while hi - lo > 0.02:
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if rp.share(absorb, mid, onset) <= allowed else (mid, hi)
    return hi


def memory_options(ctx: PolicyContext, cfg: FaasConfig, rate_rps: float) -> list[FaasConfig]:
    """``cfg`` and, per larger memory size, its cheapest settings for a stream of
    ``rate_rps`` (memoised per ~5% rate bin): what the plan may trade price for absorption."""
    key = ("faas-mem", cfg, round(math.log(max(rate_rps, 1e-3)) * 20))
    out = ctx.memo.get(key)
    if out is None:
        out = [cfg] + [choose_faas_config(ctx, math.exp(key[2] / 20), memories_mb=(m,))
                       for m in ctx.catalogue.lambda_.memory_mb if m > cfg.memory_mb]
        ctx.memo[key] = out
    assert isinstance(out, list)
    return out


def cheapest_instance(ctx: PolicyContext,
                      types: Mapping[str, TypeServing] | None = None) -> tuple[float, float]:
    """($ per second per request/s of capacity, capacity in requests/s) of the cheapest
    type and market per request under the SLO (``(inf, 0)`` without types); ``types``:
    the serving plan's (default: the context's default plan)."""
    return _cheapest(ctx, types)[:2]


def overload_x(ctx: PolicyContext, types: Mapping[str, TypeServing] | None = None) -> float:
    """What the cheapest type (:func:`cheapest_instance`) serves in an overload per request/s
    of its capacity under the SLO: its back-to-back throughput with full batches
    (:func:`provisioner.capacity.saturation_rps`) over that capacity, at least 1. At a burst
    onset the spill test keeps each instance's queue within its wait budget and sends only
    the rest to FaaS, so an Inception-v3 CPU fleet (one request at a time, 132 ms on a
    c5.xlarge against a 465 ms budget) takes ~2.2x its capacity before it spills; a GPU
    batching 16 at its capacity's edge, ~1x."""
    return _cheapest(ctx, types)[2]


def _cheapest(ctx: PolicyContext, types: Mapping[str, TypeServing] | None
              ) -> tuple[float, float, float]:
    plan = default_serving_plan(ctx).types if types is None else types
    best = (math.inf, 0.0, 1.0)
    for t, ts in plan.items():
        for m in ctx.markets:
            usd = ctx.price_usd_per_h(t, m) / 3600.0 / ts.capacity_rps
            if usd < best[0]:
                sat = saturation_rps(ctx.profile.of(t).table_s(), ts.batch)
                best = (usd, ts.capacity_rps, max(1.0, sat / ts.capacity_rps))
    return best


@dataclass(frozen=True)
class Option:
    """One FaaS memory size replayed: its settings, what they absorb at a burst onset, the
    multiplier chosen (None: none up to the maximum keeps the allowance), its replayed cost
    per hour and unabsorbed share."""

    faas: FaasConfig
    absorb_rps: float
    multiplier: float | None
    usd_per_h: float
    unabsorbed_share: float
    calendar: Calendar | None = None
    throttled_share: float = 0.0  # of it, throttled at burst onsets (cold starts)


def headroom_options(ctx: PolicyContext, cfg: FaasConfig, counts: np.ndarray, lag_s: float,
                     window_s: int, slack_use: float = 0.5, max_multiplier: float = 8.0,
                     spill_rps: float = 0.0, memories: bool = True,
                     inst: tuple[float, float] | None = None, q: float | None = None,
                     burst_x: float | None = None,
                     current: tuple[float, float] | None = None, end_s: float | None = None,
                     periods_s: tuple[float, ...] = PERIODS_S) -> tuple[Option, ...]:
    """Per FaaS memory size (``cfg``'s and larger ones, each with its cheapest batching for
    a spill stream of ``spill_rps``; only ``cfg`` with ``memories=False``): the cheapest
    multiplier whose unabsorbed share over the last ``window_s`` seconds is within
    ``slack_use`` x the SLO percentile's slack. ``inst``: (price of a request/s of instance
    capacity per second, capacity of one instance), default the cheapest type's; ``q``: the
    planner's forecast quantile (see :meth:`Replay.of`); ``burst_x``: what the fleet takes
    in an overload per request/s of capacity (default: :func:`overload_x`); ``current``:
    (FaaS memory in MB, multiplier) in force: that memory's option keeps the multiplier
    unless another saves 5% on it (:meth:`Replay.cheapest_m`). ``end_s``: the time the
    counts end at; given, each memory size is also replayed with the floor held only in a
    burst calendar's windows (:func:`calendar_replay`, per period in ``periods_s``), judged
    out of sample, so a plan holds headroom where bursts come on a schedule only around
    their times. The expensive half of
    :func:`plan_headroom`: a policy may keep it for a few minutes (the history window moves
    slowly) and re-choose with :func:`choose_headroom` at every decision."""
    w = np.asarray(counts[-window_s:], dtype=np.float64)
    rp = Replay.of(w, lag_s, q, overload_x(ctx) if burst_x is None else burst_x, end_s)
    allowed = slack_use * (100.0 - ctx.slo.percentile) / 100.0
    opts = memory_options(ctx, cfg, max(spill_rps, 1.0)) if memories else [cfg]
    price = cheapest_instance(ctx)[0] if inst is None else inst[0]
    cheap = replace(opts[0], provisioned=cfg.provisioned)
    cheap_absorb, cheap_usd = faas_absorb_rps(ctx, cheap), cheap.cost_per_request_usd
    out = []
    for o in opts:
        o = replace(o, provisioned=cfg.provisioned)
        absorb = faas_absorb_rps(ctx, o)
        cur = current[1] if current is not None and current[0] == o.memory_mb else None
        onset = faas_onset(ctx, o)
        const = _option(rp, o, absorb, allowed, max_multiplier, price, cur, onset=onset)
        out.append(const)
        larger = o.memory_mb > cfg.memory_mb
        if const.multiplier == 0.0 and not larger:
            continue  # nothing held for bursts: nothing to hold on a calendar either
        for period in periods_s:
            seen: list[Calendar] = []
            for bursts in (False, True):
                # a larger memory only in the windows, the cheapest settings between them;
                # windows at the bursts FaaS cannot absorb, or at every burst (a floor held
                # for its cost: a GPU fleet's headroom against an absorbed spill)
                phased = calendar_replay(rp, absorb, period,
                                         (cheap_absorb, cheap_usd) if larger else None, bursts)
                if phased is None or phased[1] in seen:
                    continue  # fewer than two episodes, or the same calendar
                seen.append(phased[1])
                opt = _option(phased[0], o, absorb, allowed, max_multiplier, price, cur,
                              phased[1], onset)
                if opt.multiplier is not None:
                    out.append(opt)
    return tuple(out)


def _option(rp: Replay, o: FaasConfig, absorb: float, allowed: float, max_multiplier: float,
            price: float, current: float | None, cal: Calendar | None = None,
            onset: Onset | None = None) -> Option:
    """``o`` replayed on ``rp`` (with ``cal``'s windows, if any: ``rp`` holds its mask)."""
    m = _smallest_m(rp, absorb, allowed, max_multiplier, onset)
    usd = math.inf
    if m is not None and math.isfinite(price):
        m, usd = rp.cheapest_m(m, max_multiplier, price, o.cost_per_request_usd,
                               current=current)
    mm = max_multiplier if m is None else m
    lost, throttled = rp.shares(absorb, mm, onset)
    return Option(o, absorb, m, usd, lost + throttled, cal, throttled)


def choose_headroom(options: tuple[Option, ...], base_rps: float, need_rps: float = 0.0,
                    max_multiplier: float = 8.0, memory_mb: float | None = None,
                    min_saving: float = 0.05) -> Headroom:
    """The cheapest feasible option whose FaaS settings absorb ``need_rps`` (spill seen or
    planned now, a burst under way) at ``UTILISATION``; if none absorbs it, the largest;
    if none is feasible, the largest at the maximum multiplier, throttling accepted.
    ``memory_mb``: the memory size the FaaS settings have now; its option is kept unless
    another saves ``min_saving`` of its replayed cost (the options are priced for the spill
    stream of when they were replayed: near-ties are noise). ``Headroom.forced``: the spill
    under way ruled out a cheaper option (a burst the replay did not plan for): the memory
    is for now, not the one to keep."""
    fits = [o for o in options if UTILISATION * o.absorb_rps >= need_rps]
    pool = fits or [max(options, key=lambda o: o.absorb_rps)]
    ok = [o for o in pool if o.multiplier is not None]
    if ok:
        o = min(ok, key=lambda o: o.usd_per_h)  # first (cheapest settings) on ties
        same = [c for c in ok if c.faas.memory_mb == memory_mb]
        kept = min(same, key=lambda c: c.usd_per_h) if same else None
        if kept is not None and o.faas.memory_mb != memory_mb and (
                o.usd_per_h > (1.0 - min_saving) * kept.usd_per_h):
            o = kept
        assert o.multiplier is not None
        forced = len(pool) < len(options) and o.usd_per_h > min(
            (c.usd_per_h for c in options if c.multiplier is not None), default=math.inf)
        return Headroom(o.multiplier, base_rps, o.unabsorbed_share, o.absorb_rps, False,
                        o.faas, o.usd_per_h if math.isfinite(o.usd_per_h) else 0.0,
                        o.calendar, forced, o.throttled_share)
    o = max(pool, key=lambda o: o.absorb_rps)
    return Headroom(max_multiplier, base_rps, o.unabsorbed_share, o.absorb_rps, True, o.faas,
                    forced=len(pool) < len(options), throttled_share=o.throttled_share)


def plan_headroom(ctx: PolicyContext, cfg: FaasConfig, counts: np.ndarray, lag_s: float,
                  window_s: int, slack_use: float = 0.5, max_multiplier: float = 8.0,
                  spill_rps: float = 0.0, memories: bool = True,
                  inst: tuple[float, float] | None = None, need_rps: float = 0.0,
                  q: float | None = None, burst_x: float | None = None,
                  end_s: float | None = None) -> Headroom:
    """:func:`headroom_options` then :func:`choose_headroom` at the base rate now (see the
    module docstring); ``need_rps``: spill seen or planned now, so the first burst, before
    the history knows any, is met by FaaS's fastest settings; ``end_s``: the time the
    counts end at (a burst calendar is tried only with it)."""
    opts = headroom_options(ctx, cfg, counts, lag_s, window_s, slack_use, max_multiplier,
                            spill_rps, memories, inst, q, burst_x, end_s=end_s)
    return choose_headroom(opts, base_rate(np.asarray(counts[-window_s:])), need_rps,
                           max_multiplier)
