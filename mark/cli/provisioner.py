"""``mark provisioner``: the control loop alone, against the shared state store.

It waits for the store's leader lock (one control loop per store; others stand by and take
over when the leader's lock expires), then runs the backend, the control loop, the function
runtime and the admin API (on a private loopback port that front ends started with
``mark up --frontend-only`` find in the published fleet and forward ``/admin`` to).
"""

from __future__ import annotations

import argparse

from mark.cli.up import run


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("provisioner", help="run the control loop alone against the shared "
                       "state (state.backend: redis; one leader at a time)")
    p.add_argument("--config", help="YAML/TOML configuration (every value has a default)")
    p.set_defaults(func=run, role="provisioner", port=None, instances=None,
                   frontend_only=False)
