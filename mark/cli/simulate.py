"""``mark simulate``: run a provisioning policy over a trace on a virtual clock."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mark.core.errors import ConfigError


def register(subparsers: Any) -> None:
    from predictor import available_forecasters
    from provisioner import DEFAULT_FORECAST, POLICIES

    p: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="run a policy over a trace in the simulator",
        description="Replay a trace (requests per second) against a provisioning policy on a "
        "virtual clock; report latency percentiles, SLO attainment, cost and spill share.",
    )
    p.add_argument("--trace", required=True, help="trace file (text/CSV, .gz accepted)")
    p.add_argument("--policy", default="mark", help=f"one of: {', '.join(sorted(POLICIES))}")
    p.add_argument("--forecaster", default=None, metavar="NAME",
                   help="peak-rate forecast of the mark policy, any forecaster registered "
                   f"in predictor: {', '.join(available_forecasters())} (default: "
                   f"{DEFAULT_FORECAST})")
    p.add_argument("--forecaster-param", action="append", default=[], metavar="K=V",
                   help="keyword argument of the forecaster (repeatable; V is parsed as "
                   "JSON when it can be, e.g. season=1440, order=[1,0,1])")
    p.add_argument("--spot", action="store_true", help="allow spot instances")
    p.add_argument("--slo-ms", type=float, default=200.0, help="latency bound (ms)")
    p.add_argument("--slo-percentile", type=float, default=98.0,
                   help="percent of requests that must meet the bound")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the trace's counts")
    p.add_argument("--start-s", type=int, default=0, help="simulate from this second")
    p.add_argument("--duration-s", type=int, default=None, help="simulate this many seconds")
    p.add_argument("--warmup-s", type=int, default=3600,
                   help="seconds of the trace before --start-s the policy sees as its past "
                   "(a separate warm-up slice, not simulated; at the trace's start there is "
                   "none: the policy starts with no past)")
    p.add_argument("--service-cv", type=float, default=None,
                   help="spread of instance service times around the profile's means "
                   "(coefficient of variation; default: the profile's service_cv)")
    p.add_argument("--profile", default="minilm",
                   help="model profile: a shipped name or a JSON file")
    p.add_argument("--catalogue", default=None, help="catalogue JSON (default: shipped)")
    p.add_argument("--types", default=None,
                   help="comma-separated instance types to use (default: all profiled)")
    p.add_argument("--no-ml-premium", action="store_true",
                   help="bill the SageMaker baseline at EC2 prices instead of ml.*")
    p.add_argument("--spot-interruption-scale", type=float, default=1.0,
                   help="multiply the catalogue's spot interruption rates (stress test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", dest="json_path", default=None, help="write results here")
    p.add_argument("--plot", default=None, help="write a PNG timeline here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` to a dict; values parsed as JSON where possible, else strings."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--forecaster-param takes K=V, got {pair!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def forecaster_policy_kw(policy: str, name: str | None, params: dict[str, Any]
                         ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(policy_kw, the forecaster as reported) for ``--forecaster``/``--forecaster-param``.

    Only a policy whose constructor takes ``forecast`` accepts a forecaster; the name (any
    in :func:`predictor.available_forecasters`) and its parameters are checked by building
    the forecast once with :func:`predictor.make_rate_forecast`, as the policy will.
    """
    import inspect

    from predictor import make_rate_forecast
    from provisioner import DEFAULT_FORECAST, POLICIES

    takes = "forecast" in inspect.signature(POLICIES[policy]).parameters
    if name is None and not params:
        return {}, ({"name": DEFAULT_FORECAST, "params": {}} if takes else None)
    if not takes:
        users = sorted(p for p, f in POLICIES.items()
                       if "forecast" in inspect.signature(f).parameters)
        raise ConfigError(f"--forecaster applies to policies that take a forecast "
                          f"({', '.join(users)}), not {policy!r}")
    name = name or DEFAULT_FORECAST
    # unknown names (the error lists every registered one) and bad parameters fail here,
    # not mid-run
    make_rate_forecast(name, **params)
    return {"forecast": name, "forecast_kw": params}, {"name": name, "params": params}


def run(args: argparse.Namespace) -> int:
    from mark.core.catalogue import load_catalogue
    from mark.core.slo import Slo
    from mark.core.workload.traces import load_trace
    from mark.sim.simulator import simulate
    from provisioner import POLICIES

    if args.policy not in POLICIES:
        raise ConfigError(f"unknown policy {args.policy!r}; registered: {sorted(POLICIES)}")
    policy_kw, forecaster = forecaster_policy_kw(
        args.policy, args.forecaster, parse_params(args.forecaster_param))
    if args.scale <= 0:
        raise ConfigError(f"--scale must be > 0, got {args.scale}")
    trace = load_trace(args.trace)
    if args.warmup_s < 0:
        raise ConfigError(f"--warmup-s must be >= 0, got {args.warmup_s}")
    history = None
    if args.start_s > 0 and args.warmup_s > 0:  # the policy's past: the trace before the start
        try:
            history = trace.slice(max(0, args.start_s - args.warmup_s), args.start_s)
        except ValueError as exc:
            raise ConfigError(f"--start-s/--warmup-s: {exc}") from exc
    end = None if args.duration_s is None else args.start_s + args.duration_s
    if args.start_s or end is not None:
        try:
            trace = trace.slice(args.start_s, end)
        except ValueError as exc:
            raise ConfigError(f"--start-s/--duration-s: {exc}") from exc
    types = tuple(t.strip() for t in args.types.split(",")) if args.types else None
    res = simulate(
        trace,
        args.policy,
        profile=args.profile,
        catalogue=load_catalogue(args.catalogue),
        slo=Slo(args.slo_ms, args.slo_percentile),
        spot=args.spot,
        scale=args.scale,
        seed=args.seed,
        types=types,
        ml_premium=not args.no_ml_premium,
        spot_interruption_scale=args.spot_interruption_scale,
        progress=not args.no_progress and sys.stderr.isatty(),
        timeline=args.plot is not None,
        policy_kw=policy_kw or None,
        history=history,
        service_cv=args.service_cv,
    )
    doc = res.to_json()
    if forecaster is not None:
        doc["forecaster"] = forecaster
    doc["trace"] = {"file": str(args.trace), "scale": args.scale,
                    "seconds": int(trace.duration_s),
                    "warmup_s": 0 if history is None else int(history.duration_s)}
    lat = doc["latency_ms"]
    label = res.policy + (f" [{forecaster['name']}]" if forecaster else "")
    print(
        f"{label}: {res.requests} requests, SLO attainment {res.slo_attainment:.4%} "
        f"(bound {args.slo_ms:g} ms at p{args.slo_percentile:g}), "
        f"p50/p98/p99 {lat['p50']}/{lat['p98']}/{lat['p99']} ms, "
        f"cost ${res.cost_usd['total']:.4f} (on-demand {res.cost_usd['on_demand']:.4f}, "
        f"spot {res.cost_usd['spot']:.4f}, faas {res.cost_usd['faas']:.4f}), "
        f"${res.cost_per_million_usd:.4f}/M (lower bound "
        f"{'-' if doc['lower_bound_usd'] is None else format(doc['lower_bound_usd'], '.4f')}), "
        f"spill {res.spill_share:.2%}, "
        f"{res.wall_seconds:.1f} s wall"
    )
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(doc, indent=2) + "\n")
    if args.plot:
        from mark.sim.plot import plot_timeline

        plot_timeline(res, args.plot)
    return 0
