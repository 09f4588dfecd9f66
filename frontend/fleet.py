"""The front end's view of the fleet: ready instances per model and their WRR routers."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from frontend.protocol import ModelMetadata
from frontend.routing import WeightedRoundRobin
from frontend.spill import SpillParams
from mark.core.instances import Instance, InstanceState, Market

log = logging.getLogger(__name__)


class Fleet:
    """Instances known to the front end. Only READY ones receive traffic.

    Hooks: ``on_change`` (one, the control plane's snapshot writer) runs after every change;
    every callback in ``on_leave`` runs with each instance that leaves the fleet (removed, or
    gone from a newer snapshot), e.g. to drop its upstream connection pool.
    """

    def __init__(self, models: list[str]) -> None:
        self.models = list(models)
        self.instances: dict[str, Instance] = {}
        self.metadata: dict[str, ModelMetadata] = {}
        self._routers: dict[str, WeightedRoundRobin] = {m: WeightedRoundRobin() for m in models}
        self.on_change: Callable[[Fleet], None] | None = None
        self.on_leave: list[Callable[[Instance], None]] = []
        self.snapshot_seq = 0  # of the last snapshot written (control plane) or applied (worker)
        self.admin_url = ""  # the control plane's private admin address (for workers)
        self.faas_url = ""  # the Lambda endpoint spilled requests go to ("" = no spill)
        # model metadata known without an instance (used only while none answers)
        self.fallback_metadata: dict[str, dict[str, Any]] = {}
        # from the serving plan, per model: whether requests may spill, and the FaaS buffer
        # (batch, timeout_s); per instance, inst.extra["spill"] holds its SpillParams
        self.spill: dict[str, bool] = {}
        self.faas_settings: dict[str, tuple[int, float]] = {}
        # the registered models' configurations (ModelConfig as JSON), which followers serve
        self.model_docs: dict[str, dict[str, Any]] = {}

    def add_model(self, model: str) -> None:
        """Route ``model`` from now on (its instances join as they become ready)."""
        if model not in self._routers:
            self.models.append(model)
            self._routers[model] = WeightedRoundRobin()
            self._rebuild()

    def remove_model(self, model: str) -> None:
        """Stop routing ``model`` (its instances stay listed until they leave)."""
        if self._routers.pop(model, None) is not None:
            self.models.remove(model)
            self.spill.pop(model, None)
            self.faas_settings.pop(model, None)
            self.fallback_metadata.pop(model, None)
            self.metadata.pop(model, None)
            self.model_docs.pop(model, None)
            self._rebuild()

    def _left(self, inst: Instance) -> None:
        for callback in self.on_leave:
            callback(inst)

    def _rebuild(self) -> None:
        for model, router in self._routers.items():
            router.set_weights({
                i.id: i.capacity_rps
                for i in self.instances.values()
                if i.serving and model in i.models
            })
        if self.on_change is not None:
            self.on_change(self)

    # -- snapshots, so worker processes can follow the control plane's fleet ----------------
    def snapshot(self, seq: int = 0) -> dict[str, Any]:
        """The fleet as JSON-able data; ``seq`` numbers it (followers apply each new one)."""
        return {
            "seq": seq,
            "admin_url": self.admin_url,
            "faas_url": self.faas_url,
            "fallback_metadata": self.fallback_metadata,
            "spill": self.spill,
            "faas_settings": {m: list(v) for m, v in self.faas_settings.items()},
            "models": self.model_docs,
            "instances": [
                {"id": i.id, "url": i.url, "instance_type": i.instance_type,
                 "market": i.market.value, "state": i.state.value,
                 "capacity_rps": float(i.capacity_rps), "models": list(i.models),
                 "launched_at_s": i.launched_at_s,
                 **({"spill": sp.to_json()} if (sp := i.extra.get("spill")) is not None else {})}
                for i in self.instances.values()
            ],
            "metadata": {m: meta.raw for m, meta in self.metadata.items()},
        }

    def write_snapshot(self, path: Path) -> int:
        """Atomically replace ``path`` with the current snapshot, numbered one past the last.

        Followers go by this sequence number, not by the file's mtime: two rewrites within
        one timestamp tick share an mtime. Returns the number written.
        """
        self.snapshot_seq += 1
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.snapshot(self.snapshot_seq)))
        os.replace(tmp, path)
        return self.snapshot_seq

    def apply_snapshot(self, snap: dict[str, Any]) -> None:
        """Adopt the control plane's view; local UNHEALTHY marks stand until it changes."""
        self.snapshot_seq = int(snap.get("seq", 0))
        self.admin_url = str(snap.get("admin_url", ""))
        self.faas_url = str(snap.get("faas_url", ""))
        self.fallback_metadata = dict(snap.get("fallback_metadata", {}))
        self.spill = {str(m): bool(v) for m, v in snap.get("spill", {}).items()}
        self.faas_settings = {str(m): (int(v[0]), float(v[1]))
                              for m, v in snap.get("faas_settings", {}).items()}
        self.model_docs = dict(snap.get("models", {}))
        fresh: dict[str, Instance] = {}
        for d in snap["instances"]:
            state = InstanceState(d["state"])
            old = self.instances.get(d["id"])
            if old is not None and old.state == InstanceState.UNHEALTHY and state == InstanceState.READY:
                state = InstanceState.UNHEALTHY  # we saw it fail; our health recheck decides
            extra: dict[str, Any] = {"remote_state": d["state"]}
            if "spill" in d:  # the same object while unchanged: the front end keys on it
                params = SpillParams.from_json(d["spill"])
                kept = old.extra.get("spill") if old is not None else None
                extra["spill"] = kept if kept == params else params
            fresh[d["id"]] = Instance(
                id=d["id"], url=d["url"], instance_type=d["instance_type"],
                market=Market(d["market"]), state=state, launched_at_s=d["launched_at_s"],
                capacity_rps=d["capacity_rps"], models=tuple(d["models"]), extra=extra,
            )
        gone = [i for iid, i in self.instances.items()
                if iid not in fresh or fresh[iid].url != i.url]
        self.instances = fresh
        for inst in gone:
            self._left(inst)
        for model, raw in snap.get("metadata", {}).items():
            if model not in self.metadata:
                self.metadata[model] = ModelMetadata.from_triton(raw)
        self._rebuild()

    def refresh(self) -> None:
        """Rebuild the routers after instances' weights (``capacity_rps``) changed in place."""
        self._rebuild()

    def upsert(self, inst: Instance) -> None:
        old = self.instances.get(inst.id)
        self.instances[inst.id] = inst
        if old is not None and old.url != inst.url:
            self._left(old)
        self._rebuild()

    def remove(self, instance_id: str, reason: str = "") -> None:
        inst = self.instances.pop(instance_id, None)
        if inst is not None:
            log.warning("instance %s left the fleet: %s", instance_id, reason or "removed")
            self._left(inst)
            self._rebuild()

    def set_state(self, instance_id: str, state: InstanceState, reason: str = "") -> None:
        inst = self.instances.get(instance_id)
        if inst is not None and inst.state != state:
            log.info("instance %s: %s -> %s %s", instance_id, inst.state.value, state.value, reason)
            inst.state = state
            self._rebuild()

    def ready(self, model: str) -> list[Instance]:
        router = self._routers.get(model)
        return [self.instances[i] for i in router.targets] if router else []

    def pick(self, model: str, n_requests: int, exclude: list[str]) -> Instance | None:
        router = self._routers.get(model)  # None: the model was removed meanwhile
        if router is None:
            return None
        tid = router.pick(n_requests, exclude)
        return self.instances[tid] if tid is not None else None
