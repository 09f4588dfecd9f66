"""Front-end overhead: the same closed-loop load straight to Triton and through mark.

One `mark up` (one instance serving the trivial and the real model, a fixed fleet) runs as
a child process so its CPU time can be read from /proc; each (model, concurrency) is driven
direct and through the front end back to back in one run. Then a second `mark up` with the
spill path on (control loop and FaaS runtime; the trivial model planned with the MiniLM
profile so each request's completion is predicted, and kept: nothing spills at this load)
and the first one are driven through their front ends in alternating rounds (medians): the
spill check's cost per request.
Prints a table with the front/direct ratios and the spill on/off ratio of the front end's
CPU per request, and writes JSON rows:
{"model", "concurrency", "target", "throughput_rps", "p50_ms", "p99_ms",
 "frontend_cpu_ms_per_request"} (target: direct, frontend, and "frontend (alt)" /
"frontend+spill (alt)" for the alternating rounds, each round's CPU in "rounds_cpu_ms").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from mark.backends.local import free_port
from mark.loadgen import LoadClient

CASES = [("identity", 1), ("identity", 4), ("minilm", 16)]


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


SPILL_CASES = [("identity", 1), ("identity", 4)]


def start_cluster(tmp: Path, spill: bool = False) -> tuple[subprocess.Popen[bytes], str, str]:
    port = free_port()
    cfg = tmp / "bench.yaml"
    if spill:
        cfg.write_text(
            "models:\n  - {name: identity, kind: identity, profile: minilm}\n"
            "control: {interval_s: 3600, types: [c5.large]}\nfaas: {port: 0}\n"
            f"fleet: {{instances: 1}}\nruntime_dir: {tmp / 'rt-spill'}\n"
        )
    else:
        cfg.write_text(
            "models:\n  - {name: identity, kind: identity}\n  - {name: minilm, kind: minilm}\n"
            f"control: {{enabled: false}}\nfleet: {{instances: 1}}\nruntime_dir: {tmp / 'rt'}\n"
        )
    out = (tmp / "up.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "mark", "up", "--config", str(cfg),
                             "--port", str(port)], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(1200):
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.25)
    else:
        proc.kill()
        raise SystemExit("mark up did not become ready")
    # the one instance's own URL, from mark up's log line "launched <id> pid=<pid> at <url>"
    line = next(x for x in (tmp / "up.log").read_text().splitlines()
                if " launched " in x and " at http" in x)
    return proc, url, line.split(" at ")[-1].split()[0]


async def drive(url: str, model: str, conc: int, duration: float) -> dict[str, float]:
    async with LoadClient(url, model) as client:
        res = await client.closed_loop(conc, duration, warmup_s=1.0)
    j = res.to_json()
    assert j["errors"] == 0 and j["lost"] == 0, j
    return {"throughput_rps": j["throughput_rps"], "p50_ms": j["latency_ms"]["p50"],
            "p99_ms": j["latency_ms"]["p99"], "requests": j["ok"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds, spill on/off")
    ap.add_argument("--json", default="bench/results/frontend_overhead.json")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mark-bench-") as tmp:
        proc, front, direct = start_cluster(Path(tmp))
        try:
            for model, conc in CASES:
                for target, url in (("direct", direct), ("frontend", front)):
                    c0 = cpu_s(proc.pid)
                    r = asyncio.run(drive(url, model, conc, args.duration))
                    cpu = cpu_s(proc.pid) - c0
                    n = r.pop("requests")
                    per_req = cpu * 1000 / n if target == "frontend" else 0.0
                    rows.append({"model": model, "concurrency": conc, "target": target, **r,
                                 "frontend_cpu_ms_per_request": per_req})
            # the spill check's cost: both front ends up at once, driven in alternation
            # (rounds, medians), so drift on the machine hits both alike
            sproc, sfront, _ = start_cluster(Path(tmp), spill=True)
            try:
                for model, conc in SPILL_CASES:
                    got: dict[str, list[dict[str, float]]] = {"frontend": [], "frontend+spill": []}
                    for _ in range(args.rounds):
                        for target, p, url in (("frontend", proc, front),
                                               ("frontend+spill", sproc, sfront)):
                            c0 = cpu_s(p.pid)
                            r = asyncio.run(drive(url, model, conc, args.duration / 2))
                            r["cpu_ms"] = (cpu_s(p.pid) - c0) * 1000 / r.pop("requests")
                            got[target].append(r)
                    for target, runs in got.items():
                        med = {k: float(np.median([x[k] for x in runs])) for k in runs[0]}
                        rows.append({"model": model, "concurrency": conc,
                                     "target": f"{target} (alt)",
                                     "throughput_rps": med["throughput_rps"],
                                     "p50_ms": med["p50_ms"], "p99_ms": med["p99_ms"],
                                     "frontend_cpu_ms_per_request": med["cpu_ms"],
                                     "rounds_cpu_ms": [round(x["cpu_ms"], 4) for x in runs]})
            finally:
                sproc.terminate()
                sproc.wait(30)
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"{'model':9} {'conc':>4} {'target':14} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'fe cpu ms/req':>13}")
    for r in rows:
        print(f"{r['model']:9} {r['concurrency']:>4} {r['target']:14} {r['throughput_rps']:>8.1f} "
              f"{r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['frontend_cpu_ms_per_request']:>13.3f}")
    pairs = [r for r in rows if r["target"] in ("direct", "frontend")]
    print("\nfront/direct ratios")
    for d, f in zip(pairs[::2], pairs[1::2], strict=True):
        ratio = f["throughput_rps"] / d["throughput_rps"]
        print(f"{d['model']:9} c={d['concurrency']:<3} throughput x{ratio:.3f}"
              f"  p50 x{f['p50_ms'] / d['p50_ms']:.2f} (+{f['p50_ms'] - d['p50_ms']:.2f} ms)"
              f"  p99 x{f['p99_ms'] / d['p99_ms']:.2f}")
    print("\nspill on/off: front-end CPU per request, medians of alternating rounds "
          "(target: at most x1.10)")
    for r in rows:
        if r["target"] != "frontend+spill (alt)":
            continue
        off = next(x for x in rows if x["target"] == "frontend (alt)" and x["model"] == r["model"]
                   and x["concurrency"] == r["concurrency"])
        print(f"{r['model']:9} c={r['concurrency']:<3} "
              f"x{r['frontend_cpu_ms_per_request'] / off['frontend_cpu_ms_per_request']:.3f}"
              f"  ({off['frontend_cpu_ms_per_request']:.3f} -> "
              f"{r['frontend_cpu_ms_per_request']:.3f} ms; rounds {off['rounds_cpu_ms']} vs "
              f"{r['rounds_cpu_ms']})")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
