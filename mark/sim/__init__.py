"""The simulator: policies on a virtual clock at a scale no laptop could host live.

``simulate(...)`` (:mod:`mark.sim.simulator`) is the entry point; :mod:`mark.sim.world` the
virtual fleet, :mod:`mark.sim.core` the SimPy-small event engine, :mod:`mark.sim.metrics`
the results; the per-request hot path is the queueing model :mod:`mark.core.queueing`.
"""

from mark.sim.metrics import SimResult
from mark.sim.multi import ModelRun, MultiResult, simulate_models
from mark.sim.simulator import simulate

__all__ = ["ModelRun", "MultiResult", "SimResult", "simulate", "simulate_models"]
