"""What the control loop plans with: one policy context and one policy per model.

The very objects ``mark simulate`` builds (:func:`provisioner.make_policy` over a
:class:`~provisioner.PolicyContext`): the catalogue, the model's profile, its SLO, the
configured types and markets. Two things differ from a simulation and are configuration,
not a fork of the policy:

- where the backend emulates the cloud on this machine (``local``, ``fake``), every type's
  launch delay is the emulated boot (``fleet.launch_delay_s``; the local backend's Triton
  starts meanwhile, so at least its start), so the plan expects new capacity when it
  really comes;
- with FaaS off (``faas.enabled: false``) the live service cannot spill, so policies that
  take a ``spill`` option get ``spill=False`` (FaaS unavailable) and FaaS-only policies
  (``lambda``, ``batch``) are refused with the reason; policies that need the future
  (``hindsight``, alias ``oracle``) are refused always.
"""

from __future__ import annotations

import inspect
from dataclasses import replace
from pathlib import Path
from typing import Any

from mark.core.catalogue import Catalogue, load_catalogue
from mark.core.config import MarkConfig, ModelConfig
from mark.core.errors import ConfigError
from mark.core.instances import Market
from mark.core.profiles import Profile, load_profile
from provisioner import POLICIES, PolicyContext, ProvisioningPolicy, ServingPlan, make_policy
from provisioner.serving import default_serving_plan

#: Seconds Triton with the Python backend takes to load a model here: the shortest launch
#: delay the local backend can have.
TRITON_START_S = 3.0
#: Seconds the local function runtime takes to start a sandbox of a model here (a worker
#: process and the model's load): its cold start. Measured for the profiled model: 0.22 s
#: alone, 1.7 s on average when a burst starts the 16 sandboxes of a function at once on
#: this 2-core machine (bench/twin.py), which is when cold starts come.
LOCAL_COLD_START_S = 1.5
#: Backends that emulate the cloud's boot on this machine.
EMULATING_BACKENDS = frozenset({"local", "fake"})
_FUTURE = frozenset({"hindsight", "oracle"})


def planning_catalogue(cfg: MarkConfig, catalogue: Catalogue | None = None) -> Catalogue:
    """The catalogue with the launch delays this deployment really has, and, where its
    functions run in the local runtime, that runtime's FaaS: its cold start, keep-alive and
    concurrency limit instead of Lambda's."""
    cat = catalogue or load_catalogue()
    if cfg.fleet.backend not in EMULATING_BACKENDS:
        return cat
    delay = cfg.fleet.launch_delay_s
    if cfg.fleet.backend == "local":
        delay = max(delay, TRITON_START_S)
    cat = replace(cat, instances={n: replace(t, launch_delay_s=delay)
                                  for n, t in cat.instances.items()})
    if cfg.faas.enabled and cfg.faas.endpoint_url is None:  # the local runtime
        f = cfg.faas
        cat = replace(cat, lambda_=replace(cat.lambda_, cold_start_s=LOCAL_COLD_START_S,
                                           keep_alive_s=f.keep_alive_s,
                                           concurrency_limit=f.concurrency))
    return cat


def model_profile(model: ModelConfig, catalogue: Catalogue,
                  measured: Path | None = None) -> Profile:
    """The profile a model is planned with: its ``profile``; else, for a real model (minilm),
    this machine's ``measured`` one standing for every CPU type of the catalogue (each
    instance is a process here, whatever type it is billed as), else the shipped one named
    like its kind; ConfigError naming the field for a kind without any."""
    if model.profile:
        return load_profile(model.profile)
    if model.kind != "minilm":
        raise ConfigError(f"model {model.name!r} (kind {model.kind}) has no profile to plan "
                          "with: set models[].profile (e.g. inception-v3) or control.enabled: "
                          "false")
    shipped = load_profile(model.kind)
    if measured is None:
        return shipped
    here = load_profile(measured)
    table = next(iter(here.instances.values()))
    cpu = {t: table for t, it in catalogue.instances.items() if not it.is_gpu}
    return Profile(model.kind, cpu, shipped.lambda_,
                   source=f"{here.source}; this machine's times for every CPU type")


def policy_context(cfg: MarkConfig, model: ModelConfig, catalogue: Catalogue | None = None,
                   measured: Path | None = None) -> PolicyContext:
    """The model's planning context: its SLO and profile, and the types and markets it may
    use (its own ``instance_types``/``markets``, else ``control.types``/``control.spot``);
    ConfigError naming the field for a type neither the catalogue nor the profile knows, or
    markets without on_demand."""
    cat = planning_catalogue(cfg, catalogue)
    profile = model_profile(model, cat, measured)
    wanted = model.instance_types or cfg.control.types
    types = tuple(wanted) if wanted else None
    if types is not None:
        usable = sorted(set(cat.instances) & set(profile.instances))
        unknown = [t for t in types if t not in usable]
        if unknown:
            field = "instance_types" if model.instance_types else "control.types"
            raise ConfigError(f"model {model.name!r}: {field}: unknown instance type(s) "
                              f"{unknown}; the catalogue and the profile both know {usable}")
    spot = cfg.control.spot
    if model.markets is not None:
        if "on_demand" not in model.markets:
            raise ConfigError(f"model {model.name!r}: markets: {model.markets} lacks "
                              "'on_demand'; the planner keeps on-demand capacity under spot "
                              "(accepted: [on_demand] or [on_demand, spot])")
        spot = "spot" in model.markets
    return PolicyContext(cat, profile, model.slo, spot, types)


def build_policy(name: str, ctx: PolicyContext, interval_s: float,
                 options: dict[str, Any] | None = None,
                 faas: bool = False) -> ProvisioningPolicy:
    """The registered policy ``name`` for live control (see the module docstring)."""
    factory = POLICIES.lookup(name)
    if name in _FUTURE or bool(getattr(factory, "search_space", None)):
        raise ConfigError(f"control.policy {name!r} needs the future (a hindsight plan); the "
                          f"live loop can run: {_live_names()}")
    kw = dict(options or {})
    params = _params(factory)
    if "interval_s" in params or "**" in params:
        kw.setdefault("interval_s", interval_s)
    if not faas and ("spill" in params or "**" in params):
        kw.setdefault("spill", False)
    try:
        policy = make_policy(name, ctx, **kw)
    except TypeError as exc:
        raise ConfigError(f"control.policy_options for {name!r}: {exc}") from exc
    serving = getattr(policy, "serving", None)
    if not faas and isinstance(serving, ServingPlan) and not serving.types:
        raise ConfigError(f"control.policy {name!r} serves from FaaS only, which the live "
                          f"service cannot use yet; choose one of {_live_names()}")
    return policy


def initial_serving(policy: ProvisioningPolicy, ctx: PolicyContext) -> ServingPlan:
    """The serving plan before the policy's first decision (its own, else the default)."""
    serving = getattr(policy, "serving", None)
    return serving if isinstance(serving, ServingPlan) else default_serving_plan(ctx)


def cheapest_type(ctx: PolicyContext, plan: ServingPlan, market: Market = Market.ON_DEMAND,
                  prefer: str | None = None) -> str:
    """``prefer`` when the plan serves it, else the type cheapest per request at capacity."""
    if prefer is not None and prefer in plan.types:
        return prefer
    if not plan.types:
        raise ConfigError("no instance type of the profile can meet the SLO")
    return types_by_cost(ctx, plan, market)[0]


def types_by_cost(ctx: PolicyContext, plan: ServingPlan, market: Market) -> list[str]:
    """The plan's types, cheapest per request at capacity first."""
    return sorted(plan.types, key=lambda t: ctx.price_usd_per_h(t, market)
                  / plan.types[t].capacity_rps)


def _params(factory: Any) -> set[str]:
    fn = factory.__init__ if inspect.isclass(factory) else factory
    out = set()
    for p in inspect.signature(fn).parameters.values():
        out.add("**" if p.kind == p.VAR_KEYWORD else p.name)
    return out


def _live_names() -> list[str]:
    return [n for n in sorted(POLICIES) if n not in _FUTURE | {"lambda", "batch"}]
