"""The policy plug point: snapshots in, decisions (and new policy state) out.

A provisioning policy is a small object with one job: given a :class:`Snapshot` of what is
observable now (the clock's ``now_s``, per-second arrival counts so far, the fleet) and its
own state, return a :class:`Decision` and its new state. It does no I/O and never reads a
clock; the live control loop and the simulator build the snapshot and execute the decision,
and call the very same objects.

The records exchanged are in :mod:`provisioner.records`; the static configuration a policy
is built from is :class:`provisioner.context.PolicyContext`. The hot path applies the
decision's serving plan per request; the policy never sees single requests.

Policies are registered by name (:func:`register_policy`) and built with
:func:`provisioner.policies.make_policy`, which raises :class:`~mark.core.errors.ConfigError`
listing the registered names for an unknown one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from mark.core.registry import Registry
from provisioner.records import Decision, Snapshot


@runtime_checkable
class ProvisioningPolicy(Protocol):
    """A provisioning policy. ``interval_s``: how often the control loop calls ``decide``.

    ``instant_launch``: only the hindsight plan sets it; the world then makes launches ready at once.
    A policy may also carry ``price_factor`` (float): the world bills its instances at that
    multiple of the catalogue price (SageMaker's ml.* premium).
    """

    name: str
    interval_s: float
    instant_launch: bool

    def initial_state(self) -> Any: ...

    def decide(self, snap: Snapshot, state: Any) -> tuple[Decision, Any]: ...


PolicyFactory = Callable[..., ProvisioningPolicy]
POLICIES: Registry[PolicyFactory] = Registry("policy")


def register_policy(name: str) -> Callable[[PolicyFactory], PolicyFactory]:
    return POLICIES.register(name)
