"""The simulator: policies on a virtual clock at a scale no laptop could host live.

``simulate(...)`` (in :mod:`mark.sim.simulator`) is the entry point; ``core`` is the
SimPy-small event engine and ``kernels`` the compiled per-request hot path.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SimResult", "simulate"]


def __getattr__(name: str) -> Any:  # lazy: provisioner imports mark.core.queueing
    if name in __all__:
        from mark.sim import simulator

        return getattr(simulator, name)
    raise AttributeError(name)
