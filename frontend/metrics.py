"""Prometheus metrics of the front end, one aggregate over all its worker processes.

prometheus-client's multiprocess mode: every process writes its series to its own
memory-mapped files in one directory (``PROMETHEUS_MULTIPROC_DIR``); ``GET /metrics``,
answered by whichever process takes the connection, merges the files of all of them.

The directory is fixed once per process (:func:`setup_multiprocess`): prometheus-client
keeps a process's files open for good, so a second cluster in the same process (tests) writes
into the first one's directory; series carry the model in their labels, so such clusters keep
apart by model name. The serving process fixes it first (and clears it) and puts it in
``PROMETHEUS_MULTIPROC_DIR`` before it starts worker processes, which inherit it: the library
chooses its value class from that variable when it is imported, and :func:`setup_multiprocess`
switches the class too for a process that imported it earlier. Without a directory the
metrics are this process's alone (a front end built by hand).

The request path pays little: :meth:`FrontendMetrics.record` adds to plain in-process sums
(about 1 µs); a timer writes them to the files a quarter second later (``flush_s``), and
``/metrics`` answered by this process flushes first. A process killed hard loses at most that
quarter second.

Series (the dashboard and ``mark.control.metrics`` read these names):

- ``mark_requests_total{model,backend,status}``: inference replies; backend ``iaas``,
  ``faas``, or ``none`` for what the front end answered itself (400, 404, 503, ...); a model
  the front end does not know is labelled ``_unknown`` (labels never take client input);
- ``mark_request_duration_seconds``, ``mark_queue_duration_seconds``,
  ``mark_upstream_duration_seconds`` ``{model,backend}``: arrival to reply, arrival until
  sent upstream, sent until reply (histograms, 5 ms .. 30 s);
- ``mark_slo_requests_total{model}``, ``mark_slo_met_total{model}``: replies that count for
  the SLO (every one but a 4xx: client errors are not the service's) and those within the
  model's latency bound at the time (a 5xx never is);
- ``mark_spills_total{model,reason}`` (``slo_at_risk``, ``no_instance``, ``retry``);
  ``mark_faas_invocations_total``, ``mark_faas_cold_starts_total``,
  ``mark_faas_throttles_total`` ``{model}``.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import threading
from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.samples import Sample
from sanic import Request, Sanic, response
from sanic.response import HTTPResponse

from frontend.timing import RequestTiming, TimingLog

if TYPE_CHECKING:
    from mark.core.config import ModelConfig

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: histogram upper bounds (s), finer around the usual SLO bounds (100 ms .. 1 s)
BUCKETS_S: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3,
                                 0.4, 0.5, 0.6, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0,
                                 30.0)
UNKNOWN_MODEL = "_unknown"
SPILL_REASONS = ("slo_at_risk", "no_instance", "retry")
_NB = len(BUCKETS_S) + 1  # + Inf
T = TypeVar("T")


class _State:
    """This process's metrics: the directory (None: single-process) and the families."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self.local = CollectorRegistry(auto_describe=True) if directory is None else None
        self.families: dict[str, Any] = {}
        self.recording = False  # a FrontendMetrics exists: FaaS calls are counted too
        self.flushers: list[tuple[int, Callable[[], None]]] = []  # (thread, flush)


_state = _State(None)


def setup_multiprocess(directory: str | Path, worker: bool = False) -> Path:
    """Fix this process's metrics directory (once per process; later calls return the first).

    The serving process (``worker`` false) takes ``directory`` and clears the files of an
    earlier run there (those of processes no longer alive: a front end and a provisioner on
    one host may share it); a ``PROMETHEUS_MULTIPROC_DIR`` it inherited is not its own (a
    test process's, say) and is replaced. A ``worker`` takes the directory it inherited in
    ``PROMETHEUS_MULTIPROC_DIR`` (``directory`` only without one) and clears nothing. The
    directory is put in the environment: prometheus-client reads it there whenever a series
    is made, and processes started from here on inherit it.
    """
    global _state
    if _state.directory is not None:
        return _state.directory
    env = os.environ.get(ENV)
    d = Path(env if worker and env else directory).resolve()
    d.mkdir(parents=True, exist_ok=True)
    if not worker:
        for p in d.glob("*.db"):
            if not _alive(p):
                p.unlink(missing_ok=True)
    os.environ[ENV] = str(d)
    if not getattr(values.ValueClass, "_multiprocess", False):  # imported before the env was set
        values.ValueClass = values.MultiProcessValue()
    for _, flush in _state.flushers:  # sums so far go to the single-process families they
        flush()  # were counted for (dropped with them); from here on everything goes to files
    _state = _State(d)
    log.info("metrics of every front-end process in %s", d)
    return d


def _alive(path: Path) -> bool:
    """Whether the process that writes ``path`` (``<kind>_<pid>.db``) is running (not us:
    our files are never from before)."""
    try:
        pid = int(path.stem.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def metrics_dir() -> Path | None:
    """The directory this process's metrics go to (None: single-process)."""
    return _state.directory


def family(name: str, make: Callable[[CollectorRegistry | None], T]) -> T:
    """The process's one ``name`` metric, made by ``make(registry)`` on first use.

    ``registry`` is where a single-process metric registers (None in multiprocess mode, where
    the files are what is collected). Metrics live as long as the process (or until the
    directory is fixed), shared by every front end and control loop in it.
    """
    fam = _state.families.get(name)
    if fam is None:
        fam = _state.families[name] = make(_state.local)
    return fam


def _counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
    return family(name, lambda reg: Counter(name, doc, labels, registry=reg))


def _histogram(name: str, doc: str) -> Histogram:
    return family(name, lambda reg: Histogram(name, doc, ("model", "backend"), buckets=BUCKETS_S,
                                              registry=reg))


def registry() -> CollectorRegistry:
    """What ``/metrics`` renders: every process's files merged, or this process's metrics."""
    if _state.local is not None:
        return _state.local
    reg = _state.families.get("_registry")
    if reg is None:
        reg = _state.families["_registry"] = CollectorRegistry(auto_describe=True)
        MultiProcessCollector(reg, path=str(_state.directory))
    return reg


def flush_all() -> None:
    """Write the pending sums of the front ends that record on this thread (before reading
    the files); others in the process (tests run several clusters) flush on their timers."""
    me = threading.get_ident()
    for thread, flush in list(_state.flushers):
        if thread == me:
            flush()


class _KnownModels:
    """``reg``'s families with the gauges of models not in ``models`` left out: a deleted
    model's last values (written to files that outlive the series) are not current. Its
    counters stay: what was served was served."""

    def __init__(self, reg: CollectorRegistry, models: Collection[str]) -> None:
        self.reg, self.models = reg, models

    def collect(self) -> Iterator[Metric]:
        for fam in self.reg.collect():
            if fam.type == "gauge":
                fam.samples = [s for s in fam.samples
                               if s.labels.get("model", "") in self.models
                               or "model" not in s.labels]
            yield fam


def render(flush: bool = True, models: Collection[str] | None = None) -> bytes:
    """The Prometheus text exposition of every process's metrics (``flush``: this process's
    pending sums first; only on the thread its front ends record on). ``models``: the models
    known now; gauges of others (deleted ones) are left out (None: all are rendered)."""
    if flush:
        flush_all()
    reg = registry()
    return generate_latest(reg if models is None else _KnownModels(reg, models))


def aggregate(names: Iterable[str]) -> dict[str, list[Sample]]:
    """The merged samples of the metric families ``names`` (as registered, e.g.
    ``mark_slo_met`` for the counter ``mark_slo_met_total``), over every process. Reads
    files only (any thread); call :func:`flush_all` first on the recorders' thread."""
    wanted = set(names)
    if _state.directory is None:
        fams: Iterable[Any] = registry().collect()
    else:
        files = glob.glob(os.path.join(_state.directory, "*.db"))
        fams = MultiProcessCollector.merge(files, accumulate=True)
    return {f.name: list(f.samples) for f in fams if f.name in wanted}


def process_dead(pid: int) -> None:
    """A worker process ended: drop its live gauges (its counters stay, as counters must)."""
    if _state.directory is not None:
        mark_process_dead(pid, str(_state.directory))


class _Reply:
    """Pending sums of one (model, backend, status): count, SLO met, three histograms."""

    __slots__ = ("buckets", "met", "n", "sums")

    def __init__(self) -> None:
        self.n = 0
        self.met = 0
        self.buckets = [0] * (3 * _NB)  # total, queue, upstream
        self.sums = [0.0, 0.0, 0.0]


class _Front(Protocol):
    @property
    def models(self) -> Mapping[str, ModelConfig]: ...


class FrontendMetrics:
    """One front end's recorder (see the module docstring). Made, fed and flushed on the
    thread of the front end's event loop.

    ``models`` maps each known model to its configuration (the SLO bound is read from it at
    each request, so an SLO update counts from then on).
    """

    def __init__(self, models: Callable[[], Mapping[str, ModelConfig]],
                 flush_s: float = 0.25) -> None:
        self._models = models
        self.flush_s = flush_s
        self._replies: dict[tuple[str, str, int], _Reply] = {}
        self._spills: dict[tuple[str, str], int] = {}
        self._touched: set[str] = set()
        self._armed = False
        self._requests = _counter("mark_requests", "inference replies by model, backend "
                                  "(iaas|faas|none) and HTTP status", ("model", "backend", "status"))
        self._hist = (
            _histogram("mark_request_duration_seconds", "arrival to reply (s)"),
            _histogram("mark_queue_duration_seconds", "arrival until sent upstream (s)"),
            _histogram("mark_upstream_duration_seconds", "sent upstream until reply (s)"),
        )
        self._slo_requests = _counter("mark_slo_requests", "replies that count for the SLO "
                                      "(all but 4xx)", ("model",))
        self._slo_met = _counter("mark_slo_met", "replies within the model's SLO latency bound",
                                 ("model",))
        self._spill_c = _counter("mark_spills", "requests spilled to FaaS, by reason "
                                 "(slo_at_risk|no_instance|retry)", ("model", "reason"))
        _faas_counters()  # listed from the start, at zero once a model's are used
        self._flusher = (threading.get_ident(), self.flush)
        _state.flushers.append(self._flusher)
        _state.recording = True

    def models(self) -> Mapping[str, ModelConfig]:
        """The models the front end knows now."""
        return self._models()

    @classmethod
    def attach(cls, front: _Front, timings: TimingLog) -> FrontendMetrics:
        """A recorder for ``front``, fed by its ``timings`` (a :class:`TimingLog`)."""
        m = cls(lambda: front.models)
        timings.observer = m.record
        return m

    def close(self) -> None:
        self.flush()
        if self._flusher in _state.flushers:
            _state.flushers.remove(self._flusher)

    # -- recording (the request path) ---------------------------------------------------
    def record(self, rec: RequestTiming) -> None:
        """One reply the front end proxied (``TimingLog.add`` calls this)."""
        key = (rec.model, rec.backend or "none", rec.status)
        acc = self._replies.get(key)
        if acc is None:
            acc = self._replies[key] = _Reply()
        q, u = rec.queued_s, rec.upstream_s
        total = q + u
        acc.n += 1
        b = acc.buckets
        b[bisect_left(BUCKETS_S, total)] += 1
        b[_NB + bisect_left(BUCKETS_S, q)] += 1
        b[2 * _NB + bisect_left(BUCKETS_S, u)] += 1
        s = acc.sums
        s[0] += total
        s[1] += q
        s[2] += u
        if rec.status < 400:
            mc = self._models().get(rec.model)
            if mc is not None and total * 1000.0 <= mc.slo_latency_ms:
                acc.met += 1
        if not self._armed:
            self._arm()

    def error(self, model: str, status: int, backend: str = "none") -> None:
        """A reply the front end answered itself (no timing: an error before or after)."""
        if model not in self._models():
            model = UNKNOWN_MODEL
        key = (model, backend, status)
        acc = self._replies.get(key)
        if acc is None:
            acc = self._replies[key] = _Reply()
        acc.n += 1
        if not self._armed:
            self._arm()

    def error_reply(self, request: Request, status: int, backend: str = "none") -> None:
        """Count ``status`` if ``request`` was an inference request (the error handler)."""
        if request.method != "POST" or not request.path.endswith("/infer"):
            return
        model = (request.match_info or {}).get("model")
        if not isinstance(model, str):  # no route matched: /v2/models/{m}[/versions/{v}]/infer
            parts = request.path.split("/")
            model = parts[3] if len(parts) > 4 and parts[2] == "models" else UNKNOWN_MODEL
        self.error(model, status, backend)

    def spilled(self, model: str, reason: str) -> None:
        key = (model, reason)
        self._spills[key] = self._spills.get(key, 0) + 1
        if not self._armed:
            self._arm()

    def _arm(self) -> None:
        self._armed = True
        try:
            asyncio.get_running_loop().call_later(self.flush_s, self.flush)
        except RuntimeError:  # no event loop: write now
            self.flush()

    # -- writing ------------------------------------------------------------------------
    def flush(self) -> None:
        """Write the pending sums to the metrics (the files, in multiprocess mode)."""
        self._armed = False
        replies, self._replies = self._replies, {}
        spills, self._spills = self._spills, {}
        slo_total: dict[str, int] = {}
        slo_met: dict[str, int] = {}
        for (model, backend, status), acc in replies.items():
            if model not in self._touched:
                self._touch(model)
            self._requests.labels(model, backend, str(status)).inc(acc.n)
            if model != UNKNOWN_MODEL and not 400 <= status < 500:
                slo_total[model] = slo_total.get(model, 0) + acc.n
                slo_met[model] = slo_met.get(model, 0) + acc.met
            if any(acc.buckets):  # proxied replies (errors carry no timing)
                for h, hist in enumerate(self._hist):
                    _add_observations(hist.labels(model, backend), acc.buckets[h * _NB:(h + 1) * _NB],
                                      acc.sums[h])
        for model, n in slo_total.items():
            self._slo_requests.labels(model).inc(n)
            self._slo_met.labels(model).inc(slo_met[model])
        for (model, reason), n in spills.items():
            self._spill_c.labels(model, reason).inc(n)


    def _touch(self, model: str) -> None:
        """Make a model's counters exist (at 0) before they first count: a series that
        appears only with its first event hides that event from ``rate()``."""
        self._touched.add(model)
        if model == UNKNOWN_MODEL:
            return
        self._slo_requests.labels(model)
        self._slo_met.labels(model)
        for reason in SPILL_REASONS:
            self._spill_c.labels(model, reason)
        for c in _faas_counters():
            c.labels(model)


def _add_observations(child: Histogram, counts: list[int], total: float) -> None:
    """Add pre-bucketed observations to a histogram child (its bucket values are per bucket,
    not cumulative, in prometheus-client; ``observe`` adds one to one bucket and the sum)."""
    child._sum.inc(total)
    for i, n in enumerate(counts):
        if n:
            child._buckets[i].inc(n)


def _faas_counters() -> tuple[Counter, Counter, Counter]:
    return (
        _counter("mark_faas_invocations", "FaaS invocations answered by the function (Lambda's "
                 "Invocations: function errors included, throttles not)", ("model",)),
        _counter("mark_faas_cold_starts", "FaaS invocations whose REPORT has an Init Duration "
                 "(a cold start)", ("model",)),
        _counter("mark_faas_throttles", "FaaS invocations refused with 429", ("model",)),
    )


def faas_call(model: str, status: int, cold: bool) -> None:
    """Count one answer of Lambda's Invoke API for ``model``: invoked (cold or warm), or 429.

    Written at once (an invocation carries a batch of requests and takes milliseconds); a
    no-op in a process without a front end's metrics.
    """
    if not _state.recording:
        return
    invoked, cold_starts, throttles = _faas_counters()
    if status == 429:
        throttles.labels(model).inc()
    elif status < 300:
        invoked.labels(model).inc()
        if cold:
            cold_starts.labels(model).inc()


# -- routes --------------------------------------------------------------------------------
def add_metrics_route(app: Sanic[Any, Any], metrics: FrontendMetrics | None) -> None:
    """``GET /metrics`` on ``app`` (not registered when metrics are off)."""
    if metrics is None:
        return

    async def metrics_route(request: Request) -> HTTPResponse:
        flush_all()  # here, on the loop the recorders run on; the files are read in a thread
        body = await asyncio.to_thread(render, False, frozenset(metrics.models()))
        return response.raw(body, content_type=CONTENT_TYPE)

    app.add_route(metrics_route, "/metrics", methods=["GET"], name="metrics")
