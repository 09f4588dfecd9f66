"""Soak: a trace slice through the deployed topology for a long while, with faults every few
minutes; the front end's memory and file descriptors must stay flat and nothing may be lost
or left behind.

The stack of ``bench/faults.py`` (Redis, the function runtime, ``mark provisioner``, ``mark up
--frontend-only`` with two front-end processes; ``profiled`` Inception-v3; control loop with
spot and spill on) replays ``--minutes`` of the shipped Twitter trace (from ``--start-min``),
scaled so that its mean rate is ``--load`` (0.7) of the starting fleet's capacity, open loop.
Every ``--every`` minutes (the first half way into the first period) the next fault of
``--faults`` is injected with ``bench/faults.py``'s injectors, in turn.

Every ``--sample`` seconds the RSS and open file descriptors of every front-end process (the
main one and its workers: a killed worker is replaced by a new pid) are read from /proc.
Reported: per process and for all of them together, the value at the start (after the first
minute, once warm), the peak and the end; requests sent, answered, errors by status and
reason, lost (must be 0) and retried (connection resets sent once more, counted apart), the
SLO attainment per minute; and what is left of every process the stack started once it is
stopped (SIGTERM, as ``docker-compose down``): Triton instances, their Python-backend stubs,
function sandboxes (must be none).

    .venv/bin/python bench/soak.py [--minutes 30] [--every 3] [--json bench/results/soak.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.faults import (  # noqa: E402
    FAULTS,
    RESULTS,
    SLO_PERCENTILE,
    Load,
    Stack,
    StackOptions,
    capacity,
    keep_logs,
    open_fds,
    rss_kib,
    summarise,
)
from mark.core.workload import load_trace  # noqa: E402
from mark.core.workload.arrivals import spread_trace  # noqa: E402
from mark.core.workload.traces import Trace  # noqa: E402

DEFAULT_FAULTS = ("instance-kill", "worker-kill", "redis-restart", "instance-stop",
                  "faas-kill", "spot-notice", "provisioner-kill", "faas-throttle")
WARM_S = 60.0  # the start of the flatness comparison: after the first minute


def trace_slice(start_min: int, minutes: float, mean_rps: float, seed: int) -> np.ndarray:
    """Per-second counts of the Twitter trace from ``start_min``, scaled to ``mean_rps``."""
    c = load_trace("twitter-2021-08-week1").counts
    n = round(minutes * 60)
    part = c[start_min * 60: start_min * 60 + n].astype(np.float64)
    x = part * (mean_rps / max(part.mean(), 1e-9))
    base = np.floor(x)
    return (base + (np.random.default_rng(seed).random(x.size) < x - base)).astype(np.int64)


@dataclass
class Sample:
    t: float  # seconds since the replay began
    procs: dict[str, tuple[int, int | None, int | None]]  # role -> (pid, RSS KiB, fds)


@dataclass
class Sampler:
    """RSS and open file descriptors of every front-end process, every ``every_s``."""

    stack: Stack
    t0: float
    every_s: float
    samples: list[Sample] = field(default_factory=list)

    def take(self) -> None:
        pids = self.stack.frontend_pids()
        procs = {("main" if i == 0 else f"worker{i}"): (pid, rss_kib(pid), open_fds(pid))
                 for i, pid in enumerate(pids)}
        prov = self.stack.procs["provisioner"]
        if prov.running():
            procs["provisioner"] = (prov.pid, rss_kib(prov.pid), open_fds(prov.pid))
        self.samples.append(Sample(round(time.monotonic() - self.t0, 1), procs))

    async def run(self) -> None:
        while True:
            await asyncio.to_thread(self.take)
            await asyncio.sleep(self.every_s)

    def series(self, role: str, index: int) -> list[tuple[float, int, int]]:
        """(t, pid, value) of ``role``'s RSS (index 1) or fds (index 2) where known."""
        out = []
        for s in self.samples:
            got = s.procs.get(role)
            value = None if got is None else got[index]
            if got is not None and value is not None:
                out.append((s.t, got[0], value))
        return out

    def totals(self, index: int) -> list[tuple[float, int, int]]:
        """(t, -, sum over the front-end processes) of RSS or fds."""
        out = []
        for s in self.samples:
            vals = [v[index] for role, v in s.procs.items() if role != "provisioner"]
            if vals and all(v is not None for v in vals):
                out.append((s.t, 0, int(sum(v for v in vals if v is not None))))
        return out


def start_peak_end(series: list[tuple[float, int, int]], warm_s: float) -> dict[str, Any]:
    """The value at the first sample past ``warm_s``, the peak after it and the last one
    (with the pids seen: a restarted process has a new one)."""
    after = [x for x in series if x[0] >= warm_s] or series
    if not after:
        return {"start": None, "peak": None, "end": None, "pids": []}
    return {"start": after[0][2], "peak": max(v for _, _, v in after), "end": after[-1][2],
            "pids": sorted({p for _, p, _ in after if p})}


def per_minute(load: Load, t0: float, minutes: float) -> list[dict[str, Any]]:
    out = []
    for m in range(int(np.ceil(minutes))):
        recs = [r for r in load.records if t0 + 60 * m <= r.t0 < t0 + 60 * (m + 1)]
        s = summarise(recs)
        out.append({"minute": m, "sent": s["sent"], "ok": s["ok"], "errors": s["errors"],
                    "lost": s["lost"], "retried": s["retried"], "spilled": s["spilled"],
                    "slo_attainment": s["slo_attainment"], "p98_ms": s["p98_ms"]})
    return out


async def soak(minutes: float, every_min: float, names: list[str], opts: StackOptions,
               load_share: float, start_min: int, sample_s: float, seed: int,
               keep: Path | None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="mark-soak-"))
    stack = Stack(tmp, opts)
    out: dict[str, Any] = {}
    try:
        await stack.start()
        cap = await capacity(stack)
        mean = load_share * cap
        counts = trace_slice(start_min, minutes, mean, seed)
        arrivals = spread_trace(Trace(counts, 1), seed)
        print(f"stack up: capacity {cap:.1f} req/s; replaying {minutes:g} min of the trace "
              f"from minute {start_min}: mean {counts.mean():.1f} req/s, peak {counts.max()} "
              f"req/s, {counts.sum()} requests; a fault every {every_min:g} min", flush=True)
        load = Load(stack.url, mean, seed, arrivals_s=arrivals)
        await load.start()
        t0 = load.t_start
        sampler = Sampler(stack, t0, sample_s)
        sampling = asyncio.create_task(sampler.run())
        faults: list[dict[str, Any]] = []
        at = every_min * 60.0 / 2
        k = 0
        while at < minutes * 60.0 - 5.0:
            await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
            name = names[k % len(names)]
            k += 1
            t_inj = time.monotonic()
            try:
                inj = await FAULTS[name](stack, None)
                faults.append({"fault": name, "at_s": round(inj.t_inject - t0, 1),
                               "cleared_s": round(inj.t_clear - t0, 1), "notes": inj.notes})
            except Exception as exc:  # noted; the soak goes on
                faults.append({"fault": name, "at_s": round(t_inj - t0, 1),
                               "error": f"{type(exc).__name__}: {exc}"})
            print(f"{time.monotonic() - t0:7.1f} s  {faults[-1]}", flush=True)
            at += every_min * 60.0
        await load.sent_all()
        await load.stop()
        sampler.take()
        sampling.cancel()
        await asyncio.gather(sampling, return_exceptions=True)
        total = summarise(load.records)
        memory = {role: start_peak_end(sampler.series(role, 1), WARM_S)
                  for role in ("main", "worker1", "provisioner")}
        memory["frontend_total"] = start_peak_end(sampler.totals(1), WARM_S)
        fds = {role: start_peak_end(sampler.series(role, 2), WARM_S)
               for role in ("main", "worker1", "provisioner")}
        fds["frontend_total"] = start_peak_end(sampler.totals(2), WARM_S)
        out = {
            "setup": {"minutes": minutes, "trace": "twitter-2021-08-week1",
                      "start_min": start_min, "mean_rps": round(float(counts.mean()), 2),
                      "peak_rps": int(counts.max()), "starting_capacity_rps": round(cap, 2),
                      "load_share": load_share, "fault_every_min": every_min,
                      "faults_cycled": names, "sample_s": sample_s,
                      "slo_percentile": SLO_PERCENTILE, "warm_s": WARM_S,
                      "client_retries_resets_once": True},
            "requests": {k: total[k] for k in ("sent", "ok", "errors", "lost", "retried",
                                               "spilled", "slo_attainment", "p50_ms",
                                               "p98_ms", "errors_by", "lost_by")},
            "faults": faults,
            "rss_kib": memory,
            "open_fds": fds,
            "per_minute": per_minute(load, t0, minutes),
            "samples": [{"t": s.t, **{r: {"pid": v[0], "rss_kib": v[1], "fds": v[2]}
                                      for r, v in s.procs.items()}}
                        for s in sampler.samples],
        }
    finally:
        stopped = await asyncio.to_thread(stack.stop)
        out["stop"] = stopped
        await asyncio.to_thread(keep_logs, tmp, keep)
    return out


def verdict(x: dict[str, Any], slack: float, abs_slack: int) -> str:
    if x["start"] is None:
        return "no samples"
    grew = x["end"] - x["start"]
    flat = grew <= max(slack * x["start"], abs_slack)
    return f"{'flat' if flat else 'GREW'} ({grew:+d})"


def report(out: dict[str, Any]) -> list[str]:
    lines = []
    r = out["requests"]
    lines.append(f"requests {r['sent']}  ok {r['ok']}  errors {r['errors']}  lost {r['lost']}  "
                 f"retried {r['retried']}  spilled {r['spilled']}  SLO attainment "
                 f"{(r['slo_attainment'] or 0):.2%}  p98 {r['p98_ms']} ms")
    for e in r["errors_by"]:
        lines.append(f"  {e['n']} x {e['status']} {e['reason']}")
    for why, n in r["lost_by"].items():
        lines.append(f"  {n} lost ({why})")
    lines.append(f"{'':16s} {'RSS MiB start':>13s} {'peak':>7s} {'end':>7s}   "
                 f"{'fds start':>9s} {'peak':>5s} {'end':>5s}")
    for role in ("main", "worker1", "frontend_total", "provisioner"):
        m, f = out["rss_kib"][role], out["open_fds"][role]
        if m["start"] is None:
            continue
        lines.append(f"{role:16s} {m['start'] / 1024:13.1f} {m['peak'] / 1024:7.1f} "
                     f"{m['end'] / 1024:7.1f}   {f['start']:9d} {f['peak']:5d} {f['end']:5d}"
                     f"   rss {verdict(m, 0.25, 16 * 1024)}, fds {verdict(f, 0.25, 16)}"
                     f"   pids {m['pids']}")
    for fl in out["faults"]:
        lines.append(f"  fault {fl['fault']:17s} at {fl['at_s']:7.1f} s"
                     + (f"  FAILED: {fl['error']}" if "error" in fl else ""))
    left = out["stop"]["left_behind"]
    lines.append(f"left behind once stopped: {len(left)} process(es)"
                 + (f": {left}" if left else "") + f"; exit codes {out['stop']['exit_codes']}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--every", type=float, default=3.0, help="minutes between faults")
    ap.add_argument("--faults", default=",".join(DEFAULT_FAULTS),
                    help=f"comma-separated, cycled in turn; of {list(FAULTS)}")
    ap.add_argument("--load", type=float, default=0.7, help="mean rate / starting capacity")
    ap.add_argument("--instances", type=int, default=6, help="the starting fleet")
    ap.add_argument("--start-min", type=int, default=200, help="minute of the trace to start")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between /proc samples")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(RESULTS / "soak.json"))
    ap.add_argument("--logs", help="copy the processes' logs into this directory")
    args = ap.parse_args()
    names = [n.strip() for n in args.faults.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAULTS]
    if unknown or not names:
        ap.error(f"unknown faults {unknown}; known: {list(FAULTS)}")
    if args.minutes <= 0 or args.every <= 0:
        ap.error("--minutes and --every must be > 0")
    out = asyncio.run(soak(args.minutes, args.every, names, StackOptions(instances=args.instances),
                           args.load, args.start_min, args.sample, args.seed,
                           Path(args.logs) if args.logs else None))
    for line in report(out):
        print(line)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
