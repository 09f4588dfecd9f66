"""The request hot path: compiled per-request recurrences (numba ``njit``).

How it is made fast: the discrete-event core (``core.py``) only sees control events (policy
ticks, launches becoming ready, spot notices, terminations), a few thousand per simulated
day. Requests never become events. Between two control events the fleet is fixed, so all
requests of that segment are served by one call of :func:`serve_segment`, a single pass in
arrival order over float64/int32 arrays that applies, per request, the Triton
dynamic-batcher recurrence of its instance and the spill test. Instance state (busy-until,
the open batch) lives in arrays indexed by instance slot and carries over between segments.
Spilled requests are then served in one pass by :func:`serve_faas` (buffer + container
pool with cold starts, keep-alive, a concurrency limit, Lambda's scaling rate, provisioned
containers and per-ms billing). Both passes are O(n) (the FaaS pool adds O(log containers)) and compile
once per process (cached).

Dynamic-batcher semantics (Triton, one model instance per server): a batch opens with its
first request at ``a0`` and is dispatched at ``max(busy_until, a0 + max_queue_delay)``, or
as soon as it holds ``max_batch`` requests and the server is free; requests arriving before
dispatch join it. Its members all finish at ``dispatch + service[batch size]``.

Given ``batch_slot`` (an int32 array indexed by batch id), the serving passes record the slot
of each batch they open: what an instance still holds at a time is then its batches
completing after it (the simulator's spot reclaims lose exactly those, see
:mod:`mark.sim.world`). Per instance, completions follow arrival order (FIFO).

Spill test: a request whose predicted completion (server backlog, batch in flight, the
batch it would join, profile) exceeds its instance's wait budget, or would push the oldest
member of that batch past the budget, goes to FaaS instead.

Service times vary (``sigma`` > 0, :func:`serve_segment_spread`): a batch's actual service
time is its profiled mean times a lognormal factor of mean 1 (log-sd ``sigma``, truncated at
``Z_MAX`` standard deviations either side: :func:`factor_floor` is the least it can be),
drawn from a hash of ``(seed, batch id)`` (deterministic, no RNG state). The spill test
then predicts as a front end can, with the profiled means and what it has seen: the
batches whose replies came back (actual completion <= now) are known; those still out are
predicted at their means. Per instance a ring of its outstanding batches keeps the sum
``DSUM`` of (actual - mean) service over them, so the predicted busy-until is
``BUSY - DSUM`` (back to back behind the server, as they run), at least now while anything
is out, and exact once the instance is idle. So a kept request can miss the SLO when its
batch, or one ahead of it, runs long; the error never builds up beyond the batches in
flight. With ``sigma`` = 0 (:func:`serve_segment`) the prediction is exact and a kept
request never misses the budget. Which batch a request joins follows the actual dispatch
(Triton's), the prediction only decides spill.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# state columns of the per-instance float array
BUSY = 0  # time the server finishes everything dispatched so far
A0 = 1  # arrival of the oldest request in the open batch
DSUM = 2  # sum of (actual - mean) service of the batches still out (see the docstring)
N_FSTATE = 3
# int state columns
CNT = 0  # requests in the open batch (0: none)
BID = 1  # global id of the open batch
N_ISTATE = 2
#: outstanding batches remembered per instance (:func:`serve_segment_spread`); past it the
#: oldest is taken as known (its error forgotten)
RING = 64
# columns of the ring's int array: first entry, entries
R_HEAD = 0
R_LEN = 1
#: service-time factors are truncated at this many log-sds either side of the mean
Z_MAX = 3.0


def log_sd(cv: float) -> float:
    """The lognormal's log-sd for a coefficient of variation ``cv``."""
    return float(np.sqrt(np.log1p(cv * cv)))


def factor_floor(cv: float) -> float:
    """The least factor :func:`service_factor` draws at spread ``cv``: a batch never runs
    faster than this times its profiled mean (what :mod:`provisioner.bound` relies on)."""
    sigma = log_sd(cv)
    return float(np.exp(-Z_MAX * sigma - 0.5 * sigma * sigma))


@njit(cache=True, nogil=True, inline="always")
def _mix(x: np.uint64) -> np.uint64:
    """splitmix64's finaliser."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit(cache=True, nogil=True)
def service_factor(sigma: float, seed: int, bid: int) -> float:
    """Lognormal factor of mean 1 and log-sd ``sigma`` for batch ``bid`` (1.0 at sigma 0):
    Box-Muller over two splitmix64 hashes of ``(seed, bid)``."""
    if sigma == 0.0:
        return 1.0
    g = np.uint64(0x9E3779B97F4A7C15)
    x = np.uint64(seed) * g + np.uint64(bid) * np.uint64(2) + g
    h1 = _mix(x)
    h2 = _mix(x + g)
    u1 = (float(h1 >> np.uint64(11)) + 0.5) * (1.0 / 9007199254740992.0)
    u2 = float(h2 >> np.uint64(11)) * (1.0 / 9007199254740992.0)
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    z = min(max(z, -Z_MAX), Z_MAX)
    return float(np.exp(sigma * z - 0.5 * sigma * sigma))


@njit(cache=True, nogil=True, inline="always")
def _out(k: int, done: float, delta: float, fstate: np.ndarray, ring_t: np.ndarray,
         ring_d: np.ndarray, ring_p: np.ndarray) -> None:
    """A batch of instance ``k`` is dispatched: remember its completion and its error."""
    r = ring_t.shape[1]
    head = ring_p[k, R_HEAD]
    n = ring_p[k, R_LEN]
    if n == r:  # full: the oldest is taken as known
        fstate[k, DSUM] -= ring_d[k, head]
        head = (head + 1) % r
        n -= 1
    j = (head + n) % r
    ring_t[k, j] = done
    ring_d[k, j] = delta
    fstate[k, DSUM] += delta
    ring_p[k, R_HEAD] = head
    ring_p[k, R_LEN] = n + 1


@njit(cache=True, nogil=True)
def _serve(arr: np.ndarray, assign: np.ndarray, svc: np.ndarray, max_batch: np.ndarray,
           delay: np.ndarray, budget: np.ndarray, fstate: np.ndarray, istate: np.ndarray,
           batch_done: np.ndarray, batch_size: np.ndarray, next_bid: int, out_bid: np.ndarray,
           busy_acc: np.ndarray, sigma: float, seed: int, ring_t: np.ndarray,
           ring_d: np.ndarray, ring_p: np.ndarray, batch_slot: np.ndarray,
           track: bool) -> int:
    spread = sigma > 0.0
    r = ring_t.shape[1]
    n = arr.shape[0]
    for i in range(n):
        t = arr[i]
        k = assign[i]
        if k < 0:
            out_bid[i] = -1
            continue
        busy = fstate[k, BUSY]
        cnt = istate[k, CNT]
        mb = max_batch[k]
        d = delay[k]
        # close the open batch if its dispatch time has passed
        if cnt > 0:
            disp = max(busy, fstate[k, A0] + d)
            if t >= disp:
                bid = istate[k, BID]
                s = svc[k, cnt]
                if spread:
                    s *= service_factor(sigma, seed, bid)
                    _out(k, disp + s, s - svc[k, cnt], fstate, ring_t, ring_d, ring_p)
                batch_done[bid] = disp + s
                batch_size[bid] = cnt
                busy_acc[k] += s
                busy = disp + s
                fstate[k, BUSY] = busy
                cnt = 0
                istate[k, CNT] = 0
        pb = busy  # the busy-until the prediction uses
        if spread:
            # replies seen by now: those batches are known; the rest at their means
            head = ring_p[k, R_HEAD]
            m = ring_p[k, R_LEN]
            while m > 0 and ring_t[k, head] <= t:
                fstate[k, DSUM] -= ring_d[k, head]
                head = (head + 1) % r
                m -= 1
            ring_p[k, R_HEAD] = head
            ring_p[k, R_LEN] = m
            if m == 0:
                fstate[k, DSUM] = 0.0
            else:
                pb = max(busy - fstate[k, DSUM], t)
        if cnt > 0:
            a0 = fstate[k, A0]
            done = (max(pb, t) if cnt + 1 == mb else max(pb, a0 + d)) + svc[k, cnt + 1]
            if done - a0 > budget[k]:
                out_bid[i] = -1
                continue
            bid = istate[k, BID]
            out_bid[i] = bid
            cnt += 1
            if cnt == mb:
                disp = max(busy, t)
                s = svc[k, cnt]
                if spread:
                    s *= service_factor(sigma, seed, bid)
                    _out(k, disp + s, s - svc[k, cnt], fstate, ring_t, ring_d, ring_p)
                batch_done[bid] = disp + s
                batch_size[bid] = cnt
                busy_acc[k] += s
                fstate[k, BUSY] = disp + s
                istate[k, CNT] = 0
            else:
                istate[k, CNT] = cnt
        else:
            done = max(pb, t + d) + svc[k, 1]
            if mb == 1:
                done = max(pb, t) + svc[k, 1]
            if done - t > budget[k]:
                out_bid[i] = -1
                continue
            bid = next_bid
            next_bid += 1
            out_bid[i] = bid
            if track:
                batch_slot[bid] = k
            if mb == 1:
                disp = max(busy, t)
                s = svc[k, 1]
                if spread:
                    s *= service_factor(sigma, seed, bid)
                    _out(k, disp + s, s - svc[k, 1], fstate, ring_t, ring_d, ring_p)
                batch_done[bid] = disp + s
                batch_size[bid] = 1
                busy_acc[k] += s
                fstate[k, BUSY] = disp + s
            else:
                fstate[k, A0] = t
                istate[k, CNT] = 1
                istate[k, BID] = bid
    return next_bid


@njit(cache=True, nogil=True)
def serve_segment(
    arr: np.ndarray,  # float64 arrival times of this segment, sorted
    assign: np.ndarray,  # int32 instance slot per request (-1: no instance, spill)
    svc: np.ndarray,  # float64 [slots, max_batch+1] service seconds by batch size
    max_batch: np.ndarray,  # int32 [slots]
    delay: np.ndarray,  # float64 [slots] max queue delay, seconds
    budget: np.ndarray,  # float64 [slots] wait budget (predicted latency bound), seconds
    fstate: np.ndarray,  # float64 [slots, N_FSTATE]
    istate: np.ndarray,  # int64 [slots, N_ISTATE]
    batch_done: np.ndarray,  # float64 [>= n_batches] completion time per global batch id
    batch_size: np.ndarray,  # int32 per batch id
    next_bid: int,  # next free global batch id
    out_bid: np.ndarray,  # int64 per request: batch id, or -1 when spilled
    busy_acc: np.ndarray,  # float64 [slots] busy seconds accumulated (utilisation)
    batch_slot: np.ndarray | None = None,  # int32 per batch id: its instance slot (if given)
) -> int:
    """Serve one segment with service times exactly the profiled ones (the prediction is
    exact); returns the next free batch id."""
    none = np.zeros((1, 1))
    if batch_slot is None:
        return _serve(arr, assign, svc, max_batch, delay, budget, fstate, istate, batch_done,
                      batch_size, next_bid, out_bid, busy_acc, 0.0, 0, none, none,
                      np.zeros((1, 2), dtype=np.int64), np.zeros(1, dtype=np.int32), False)
    return _serve(arr, assign, svc, max_batch, delay, budget, fstate, istate, batch_done,
                  batch_size, next_bid, out_bid, busy_acc, 0.0, 0, none, none,
                  np.zeros((1, 2), dtype=np.int64), batch_slot, True)


@njit(cache=True, nogil=True)
def serve_segment_spread(
    arr: np.ndarray, assign: np.ndarray, svc: np.ndarray, max_batch: np.ndarray,
    delay: np.ndarray, budget: np.ndarray, fstate: np.ndarray, istate: np.ndarray,
    batch_done: np.ndarray, batch_size: np.ndarray, next_bid: int, out_bid: np.ndarray,
    busy_acc: np.ndarray,
    sigma: float,  # log-sd of the actual service time around the profiled mean
    seed: int,  # of the service-time factors
    ring_t: np.ndarray,  # float64 [slots, RING] completion of each outstanding batch
    ring_d: np.ndarray,  # float64 [slots, RING] its actual - mean service
    ring_p: np.ndarray,  # int64 [slots, 2] R_HEAD, R_LEN
    batch_slot: np.ndarray | None = None,  # as for serve_segment
) -> int:
    """:func:`serve_segment` with service times that vary around the profiled means, which
    the spill test predicts with (see the module docstring)."""
    if batch_slot is None:
        return _serve(arr, assign, svc, max_batch, delay, budget, fstate, istate, batch_done,
                      batch_size, next_bid, out_bid, busy_acc, sigma, seed, ring_t, ring_d,
                      ring_p, np.zeros(1, dtype=np.int32), False)
    return _serve(arr, assign, svc, max_batch, delay, budget, fstate, istate, batch_done,
                  batch_size, next_bid, out_bid, busy_acc, sigma, seed, ring_t, ring_d, ring_p,
                  batch_slot, True)


@njit(cache=True, nogil=True)
def flush_instance(
    k: int,
    svc: np.ndarray,
    delay: np.ndarray,
    fstate: np.ndarray,
    istate: np.ndarray,
    batch_done: np.ndarray,
    batch_size: np.ndarray,
    busy_acc: np.ndarray,
    sigma: float = 0.0,
    seed: int = 0,
) -> float:
    """Dispatch instance ``k``'s open batch (it receives nothing more); returns busy-until."""
    cnt = istate[k, CNT]
    if cnt > 0:
        disp = max(fstate[k, BUSY], fstate[k, A0] + delay[k])
        bid = istate[k, BID]
        s = svc[k, cnt] * service_factor(sigma, seed, bid)
        batch_done[bid] = disp + s
        batch_size[bid] = cnt
        busy_acc[k] += s
        fstate[k, BUSY] = disp + s
        istate[k, CNT] = 0
    return fstate[k, BUSY]


@njit(cache=True, nogil=True)
def _heap_push(h: np.ndarray, n: int, v: float) -> int:
    i = n
    h[i] = v
    while i > 0:
        p = (i - 1) >> 1
        if h[p] <= h[i]:
            break
        h[p], h[i] = h[i], h[p]
        i = p
    return n + 1


@njit(cache=True, nogil=True)
def _heap_pop(h: np.ndarray, n: int) -> int:
    n -= 1
    h[0] = h[n]
    i = 0
    while True:
        lft = 2 * i + 1
        if lft >= n:
            break
        c = lft
        if lft + 1 < n and h[lft + 1] < h[lft]:
            c = lft + 1
        if h[i] <= h[c]:
            break
        h[i], h[c] = h[c], h[i]
        i = c
    return n


@njit(cache=True, nogil=True)
def serve_faas(
    arr: np.ndarray,  # float64 arrival times of spilled requests, sorted
    param_step_s: float,  # the FaaS parameters below change every param_step_s seconds
    p_batch: np.ndarray,  # int32 per parameter step: buffer releases at this size
    p_timeout: np.ndarray,  # float64 per step: ... or when its oldest waited this long
    p_mem: np.ndarray,  # int32 per step: index into mem_mb / svc rows
    p_warm: np.ndarray,  # int32 per step: containers kept initialised (provisioned concurrency)
    mem_mb: np.ndarray,  # float64 memory sizes
    svc: np.ndarray,  # float64 [n_mem, max_batch+1] service seconds
    cold_s: float,
    keep_alive_s: float,
    limit: int,
    scale_per_s: float,  # new execution environments per second (token refill rate) ...
    scale_burst: float,  # ... into a bucket of this many (Lambda: 1000 per 10 s, refilled)
    init_billed: bool,
    gran_ms: float,
    out_lat: np.ndarray,  # float64 latency per request
    out_stats: np.ndarray,  # float64 [5]: mb_ms billed, invocations, cold starts, throttled, max conc
) -> None:
    """Serve the spilled requests on a FaaS pool (see the module docstring).

    A batch that finds no warm container starts a new one (cold) if the concurrency limit
    and the scaling rate allow; otherwise it is throttled (429) and retried, as a client with
    backoff would, on the first container to come free or the first new environment the
    scaling rate grants, whichever is earlier. Throttled invocations are counted.
    """
    n = arr.shape[0]
    tokens = scale_burst  # new environments that may start now
    t_tok = 0.0  # time ``tokens`` was last brought up to date
    heap = np.empty(limit + 1, dtype=np.float64)  # busy-until per live container
    hn = 0
    alive = 0
    i = 0
    nsteps = p_batch.shape[0]
    while i < n:
        a0 = arr[i]
        st = min(int(a0 / param_step_s), nsteps - 1)
        b = p_batch[st]
        tmo = p_timeout[st]
        m = p_mem[st]
        # members: i .. j-1 ; release at size b or a0 + timeout
        j = i + 1
        while j < n and j - i < b and arr[j] <= a0 + tmo:
            j += 1
        k = j - i
        disp = arr[j - 1] if k == b else a0 + tmo
        warm = p_warm[st]
        # containers idle past keep-alive are gone (provisioned ones stay)
        while hn > 0 and heap[0] + keep_alive_s < disp and alive > warm:
            hn = _heap_pop(heap, hn)
            alive -= 1
        if hn > 0 and heap[0] <= disp:
            start = disp
            hn = _heap_pop(heap, hn)
            init = 0.0
        elif alive < limit and alive < warm:  # a provisioned container: initialised ahead
            alive += 1
            start = disp
            init = 0.0
        elif alive < limit:
            if disp > t_tok:
                tokens = min(scale_burst, tokens + (disp - t_tok) * scale_per_s)
                t_tok = disp
            if tokens >= 1.0:
                tokens -= 1.0
                alive += 1
                start = disp + cold_s
                init = cold_s
                out_stats[2] += 1.0
            else:  # over the scaling rate: 429 until a token accrues or a container frees
                t_new = t_tok + (1.0 - tokens) / scale_per_s
                out_stats[3] += 1.0
                if hn > 0 and heap[0] <= t_new:
                    start = heap[0]
                    hn = _heap_pop(heap, hn)
                    init = 0.0
                else:
                    tokens = 0.0
                    t_tok = t_new
                    alive += 1
                    start = t_new + cold_s
                    init = cold_s
                    out_stats[2] += 1.0
        else:
            start = heap[0]
            hn = _heap_pop(heap, hn)
            init = 0.0
            out_stats[3] += 1.0
        s = svc[m, k]
        end = start + s
        hn = _heap_push(heap, hn, end)
        if alive > out_stats[4]:
            out_stats[4] = alive
        billed = s + (init if init_billed else 0.0)
        units = np.ceil(billed * 1000.0 / gran_ms - 1e-9)
        if units < 1.0:
            units = 1.0
        out_stats[0] += units * gran_ms * mem_mb[m]
        out_stats[1] += 1.0
        for q in range(i, j):
            out_lat[q] = end - arr[q]
        i = j
