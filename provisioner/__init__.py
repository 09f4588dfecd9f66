"""Provisioning policies: MArk's greedy provisioner, batching, spill, baselines, hindsight.

Policies are pure objects over a :class:`Snapshot` (:mod:`provisioner.base`,
:mod:`provisioner.records`); the live control loop and the simulator
(:func:`mark.sim.simulate`) call the same objects. Build one by name with
:func:`make_policy`.
"""

from mark.core.slo import Slo
from provisioner.base import POLICIES, ProvisioningPolicy, register_policy
from provisioner.baselines import BatchAdaptive, LambdaOnly, MArkReleased, SageMakerTargetTracking
from provisioner.batching import choose_batching
from provisioner.capacity import capacity_rps, latency_quantile
from provisioner.context import PolicyContext
from provisioner.faas_batching import choose_faas_config, expected_batch, faas_config_for
from provisioner.faas_tier import Cover, cold_start_cover, crossover_rps, faas_tier_cost_per_request
from provisioner.greedy import DEFAULT_FORECAST, GreedyState, MArkGreedy, MArkNoFaas, greedy_plan
from provisioner.oracle import Oracle
from provisioner.policies import available_policies, make_policy
from provisioner.records import (
    BatchConfig,
    Decision,
    FaasConfig,
    LaunchOrder,
    ServingPlan,
    Snapshot,
    TypeServing,
)
from provisioner.serving import default_serving_plan
from provisioner.spill import SpillPolicy, predict_latency_s

__all__ = [
    "DEFAULT_FORECAST",
    "POLICIES",
    "BatchAdaptive",
    "BatchConfig",
    "Cover",
    "Decision",
    "FaasConfig",
    "GreedyState",
    "LambdaOnly",
    "LaunchOrder",
    "MArkGreedy",
    "MArkNoFaas",
    "MArkReleased",
    "Oracle",
    "PolicyContext",
    "ProvisioningPolicy",
    "SageMakerTargetTracking",
    "ServingPlan",
    "Slo",
    "Snapshot",
    "SpillPolicy",
    "TypeServing",
    "available_policies",
    "capacity_rps",
    "choose_batching",
    "choose_faas_config",
    "cold_start_cover",
    "crossover_rps",
    "default_serving_plan",
    "expected_batch",
    "faas_config_for",
    "faas_tier_cost_per_request",
    "greedy_plan",
    "latency_quantile",
    "make_policy",
    "predict_latency_s",
    "register_policy",
]
