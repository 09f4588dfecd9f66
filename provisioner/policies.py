"""Every built-in policy, registered, and :func:`make_policy` to build one by name."""

from __future__ import annotations

from typing import Any

from provisioner import baselines, greedy, oracle
from provisioner.base import POLICIES, ProvisioningPolicy
from provisioner.context import PolicyContext

BUILTIN_MODULES = (baselines, greedy, oracle)  # imported for their registrations


def available_policies() -> list[str]:
    """Registered policy names, sorted."""
    return sorted(POLICIES)


def make_policy(name: str, ctx: PolicyContext, **kwargs: Any) -> ProvisioningPolicy:
    """Build the policy registered as ``name`` from ``ctx`` (and policy-specific options);
    ``ConfigError`` listing the registered names for an unknown one."""
    return POLICIES.lookup(name)(ctx, **kwargs)
