"""``mark forecast``: rolling-origin backtest of a forecaster on a trace.

    mark forecast --trace F --forecaster NAME [--step 60] [--horizon 10] [--json F] [--plot F.png]

Accepts every registered forecaster name (those ``mark simulate --forecaster`` takes). A
step forecaster is fed the trace one step at a time; a window forecast (``recent-peak``,
``auto-quantile``, ...) forecasts from the per-second counts and is scored against the
per-second peak within each step (``--target peak``, its default; it needs a per-second
trace), with its one value as both the forecast and the upper bound.

Prints MAPE and RMSE per horizon, the under-forecast rate (share of scored steps whose
actual exceeds the upper quantile) and milliseconds per forecast. ``--json`` writes
``{"forecaster", "mape": {"1": ..}, "rmse": {"1": ..}, "under_forecast_rate",
"ms_per_forecast"}`` (MAPE in percent, RMSE in requests per second).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mark.core.errors import ConfigError

if TYPE_CHECKING:
    from mark.core.workload.traces import Trace
    from predictor.backtest import BacktestResult

_DAY_S = 86_400


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``forecast`` sub-command."""
    p = subparsers.add_parser(
        "forecast",
        help="backtest a forecaster on a trace",
        description="Rolling-origin backtest: at every origin the forecaster has seen the "
        "trace up to that step and forecasts the next --horizon steps.",
    )
    p.add_argument("--trace", required=True, type=Path, help="trace file (text, CSV, .gz)")
    p.add_argument("--forecaster", required=True,
                   help="registry name, e.g. holt-winters or recent-peak")
    p.add_argument("--step", type=int, default=60, help="step in seconds (default 60)")
    p.add_argument("--horizon", type=int, default=10, help="steps ahead (default 10)")
    p.add_argument("--quantile", type=float, default=0.95, help="upper quantile (default 0.95)")
    p.add_argument(
        "--season",
        type=int,
        default=None,
        help="season in steps for seasonal forecasters (default: one day when the trace "
        "holds at least two)",
    )
    p.add_argument(
        "--target",
        choices=("mean", "peak", "peak-direct"),
        default=None,
        help="mean rate per step (default for step forecasters); peak: per-second peak "
        "within each step, forecast as the mean-rate forecast times a learned peak/mean "
        "ratio (window forecasts: their own peak forecast, the only target they take); "
        "peak-direct: the forecaster runs on the peak series itself (peak targets need a "
        "per-second trace)",
    )
    p.add_argument("--warmup", type=int, default=None, help="steps seen before the first origin")
    p.add_argument("--every", type=int, default=1, help="steps between origins (default 1)")
    p.add_argument("--max-origins", type=int, default=None, help="cap on the number of origins")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra forecaster argument, e.g. --param window=20 (repeatable)",
    )
    p.add_argument(
        "--keep-gaps",
        action="store_true",
        help="score steps overlapping collection gaps too (default: treated as missing)",
    )
    p.add_argument("--json", type=Path, default=None, help="write the metrics here")
    p.add_argument("--plot", type=Path, default=None, help="write a PNG of the backtest here")
    p.set_defaults(func=run)


def _params(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE")
        try:
            out[key.replace("-", "_")] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.replace("-", "_")] = value
    return out


def run(args: argparse.Namespace) -> int:
    """Run the backtest and report; returns the exit code."""
    from mark.core.workload.traces import load_trace
    from predictor import forecaster_kind, forecaster_parameters

    accepted = forecaster_parameters(args.forecaster)  # unknown names fail before any work
    window = forecaster_kind(args.forecaster) == "window"
    if args.target is None:
        args.target = "peak" if window else "mean"
    if window and args.target != "peak":
        raise ConfigError(f"{args.forecaster!r} is a window forecast of the per-second "
                          f"peak; it takes --target peak only")
    if args.step < 1 or args.horizon < 1 or args.every < 1:
        raise ConfigError("--step, --horizon and --every must be positive")
    trace = load_trace(args.trace)
    if args.step % trace.step_s:
        raise ConfigError(
            f"{args.trace}: a {trace.step_s} s trace cannot be backtested at --step "
            f"{args.step}; use a multiple of {trace.step_s}"
        )
    if args.target != "mean" and trace.step_s != 1:
        raise ConfigError(f"{args.trace}: --target {args.target} needs a per-second trace")
    kw = _params(args.param)
    result = (_backtest_window(trace, args, kw) if window
              else _backtest_step(trace, args, kw, accepted))
    _report(result, trace.name, args)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    if args.plot is not None:
        _plot(result, args.plot, trace.name, args.step)
    return 0


def _backtest_window(trace: Trace, args: argparse.Namespace, kw: dict[str, Any]
                     ) -> BacktestResult:
    from predictor import backtest_rate, make_rate_forecast

    forecast = make_rate_forecast(args.forecaster, **kw)
    try:
        return backtest_rate(
            trace,
            forecast,
            args.horizon,
            name=args.forecaster,
            step_s=args.step,
            warmup=60 if args.warmup is None else args.warmup,
            every=args.every,
            max_origins=args.max_origins,
            mask_gaps=not args.keep_gaps,
        )
    except ValueError as exc:
        raise ConfigError(f"{args.trace}: {exc}") from exc


def _backtest_step(trace: Trace, args: argparse.Namespace, kw: dict[str, Any],
                   accepted: tuple[str, ...]) -> BacktestResult:
    from predictor import PeakRateForecaster, backtest, make_forecaster

    season = args.season
    if season is None and _DAY_S % args.step == 0 and trace.duration_s >= 2 * _DAY_S:
        season = _DAY_S // args.step
    if "season" in accepted and season is not None:
        kw.setdefault("season", season)
    if "quantile" in accepted:
        kw.setdefault("quantile", args.quantile)
    model = make_forecaster(args.forecaster, **kw)
    if args.target == "peak":
        model = PeakRateForecaster(model, quantile=args.quantile)
    try:
        return backtest(
            trace,
            model,
            args.horizon,
            step_s=args.step,
            target="mean" if args.target == "mean" else "peak",
            warmup=args.warmup,
            every=args.every,
            max_origins=args.max_origins,
            mask_gaps=not args.keep_gaps,
        )
    except ValueError as exc:
        raise ConfigError(f"{args.trace}: {exc}") from exc


def _report(result: BacktestResult, trace_name: str, args: argparse.Namespace) -> None:
    unit = "req/s" if args.target == "mean" else "peak req/s"
    out = sys.stdout
    print(
        f"{result.forecaster} on {trace_name}: step {args.step} s, target {args.target} "
        f"rate ({unit}), {result.n_origins} origins",
        file=out,
    )
    print(f"{'horizon':>8} {'MAPE %':>9} {'RMSE':>10}", file=out)
    for k in range(1, result.horizon + 1):
        print(f"{k:>8} {result.mape[k]:>9.2f} {result.rmse[k]:>10.3f}", file=out)
    from predictor import forecaster_kind

    bound = ("the forecast" if forecaster_kind(args.forecaster) == "window"
             else f"the {args.quantile:g} quantile")
    print(f"under-forecast rate {result.under_forecast_rate:.4f} (actual above {bound})",
          file=out)
    print(f"ms per forecast {result.ms_per_forecast:.2f} (max {result.ms_max:.1f})", file=out)


def _plot(result: BacktestResult, path: Path, trace_name: str, step_s: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(2, 1, figsize=(11, 6.5), gridspec_kw={"height_ratios": [3, 1]})
    t = (result.origins + 1) * step_s / 3600.0
    ax.plot(t, result.actual[:, 0], lw=0.7, color="black", label="actual")
    ax.plot(t, result.mean[:, 0], lw=0.7, label="forecast, 1 step ahead")
    ax.plot(t, result.upper[:, 0], lw=0.5, alpha=0.7, label="upper quantile, 1 step ahead")
    ax.set_xlabel("hours from trace start")
    ax.set_ylabel("requests/s")
    ax.set_title(f"{result.forecaster} on {trace_name} (step {step_s} s)")
    ax.legend(loc="upper right", fontsize=8)
    ks = list(result.mape)
    bx.bar(ks, [result.mape[k] for k in ks])
    bx.set_xlabel("horizon (steps)")
    bx.set_ylabel("MAPE %")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
