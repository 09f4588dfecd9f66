"""The ``mark`` command line: one sub-command per module in this package.

Each sub-command module exposes ``register(subparsers)`` which adds its parser and sets
``func`` (taking the parsed args, returning an exit code). A command imports its heavy
dependencies (aiohttp, numpy, statsmodels, numba) inside ``func``, so one command's never
slow another; only ``simulate`` reads the policy registry at parse time, to list choices.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from mark.core.errors import MarkError

# sub-command module names under mark.cli, in help order
COMMANDS: tuple[str, ...] = ("up", "provisioner", "faas", "load", "forecast", "simulate",
                             "profile", "deploy")  # deploy registers deploy and teardown


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mark", description="SLO-aware, cost-minimising inference serving (MArk-style)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        if importlib.util.find_spec(f"mark.cli.{name}") is None:
            continue  # a command whose module is not installed
        module = importlib.import_module(f"mark.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except MarkError as exc:
        print(f"mark {args.command}: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
