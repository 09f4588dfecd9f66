"""Per-model controls for a configuration (the policy objects ``mark simulate`` builds)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mark.control.loop import ModelControl
from mark.control.planning import build_policy, initial_serving, policy_context
from mark.core.catalogue import Catalogue
from mark.core.config import MarkConfig, ModelConfig


def build_control(cfg: MarkConfig, model: ModelConfig, catalogue: Catalogue | None = None,
                  measured: Path | None = None) -> ModelControl:
    """One model's :class:`ModelControl`: context, policy, initial plan (ConfigError naming
    the field when the model cannot be planned)."""
    ctx = policy_context(cfg, model, catalogue, measured)
    policy = build_policy(cfg.control.policy, ctx, cfg.control.interval_s,
                          cfg.control.policy_options, faas=cfg.faas.enabled)
    return ModelControl(model.name, policy, ctx, initial_serving(policy, ctx))


def build_controls(cfg: MarkConfig, catalogue: Catalogue | None = None,
                   measured: Mapping[str, Path] | None = None) -> dict[str, ModelControl]:
    """One :class:`ModelControl` per configured model. ``measured``: per model, this
    machine's measured profile (see :func:`mark.control.planning.model_profile`)."""
    return {m.name: build_control(cfg, m, catalogue, (measured or {}).get(m.name))
            for m in cfg.models}
