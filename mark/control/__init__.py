"""The live control loop: policies from :mod:`provisioner` sizing the fleet through a backend.

- :class:`ControlLoop` (mechanism: counts in, decisions executed, draining, notices,
  failures) and :class:`ModelControl` (one plan and one fleet per model);
- :class:`CostLedger` (every instance-second by the catalogue's billing rules);
- :class:`ControlAdmin` (the ``/admin`` API's control-plane side);
- count sources: :class:`LiveCounts` (front end and workers), :class:`ArrayCounts` (tests,
  replays);
- :func:`build_controls`: the per-model controls for a configuration;
- :class:`~mark.control.models.ModelRegistry`: models registered, updated and deleted while
  running (``/admin/models``).
"""

from mark.control.admin import ControlAdmin
from mark.control.build import build_control, build_controls
from mark.control.counts import ArrayCounts, CountSource, InflightSource, LiveCounts
from mark.control.ledger import CostLedger
from mark.control.loop import ControlLoop, ModelControl
from mark.control.planning import (
    build_policy,
    cheapest_type,
    planning_catalogue,
    policy_context,
)

__all__ = [
    "ArrayCounts",
    "ControlAdmin",
    "ControlLoop",
    "CostLedger",
    "CountSource",
    "InflightSource",
    "LiveCounts",
    "ModelControl",
    "build_control",
    "build_controls",
    "build_policy",
    "cheapest_type",
    "planning_catalogue",
    "policy_context",
]
