"""The bottom layer: what every other layer builds on, importing none of them.

- :mod:`~mark.core.errors` (one error hierarchy), :mod:`~mark.core.config` (validated
  configuration), :mod:`~mark.core.registry` (the one plug-point registry type),
  :mod:`~mark.core.clock` (the clock seam);
- :mod:`~mark.core.instances` (the instance record, its state words and markets),
  :mod:`~mark.core.slo` (the SLO and its latency budget);
- :mod:`~mark.core.catalogue`, :mod:`~mark.core.billing`, :mod:`~mark.core.profiles` (prices,
  billing rules, service times);
- :mod:`~mark.core.workload` (traces, the shipped example traces, arrival generators);
- :mod:`~mark.core.queueing` (the compiled queueing model of Triton's dynamic batcher, spill
  and FaaS that both the capacity search and the simulator run).

Only the light records are re-exported here; the numeric modules load on first use.
"""

from mark.core.clock import Clock, VirtualClock, WallClock
from mark.core.errors import ConfigError, MarkError
from mark.core.instances import Instance, InstanceState, Market
from mark.core.registry import Registry
from mark.core.slo import Slo

__version__ = "0.1.0"

__all__ = [
    "Clock",
    "ConfigError",
    "Instance",
    "InstanceState",
    "MarkError",
    "Market",
    "Registry",
    "Slo",
    "VirtualClock",
    "WallClock",
    "__version__",
]
