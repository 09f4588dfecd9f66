"""Triton's statistics extension over a fleet: each instance's statistics, summed.

An instance answers ``GET /v2/models[/{m}[/versions/{v}]]/stats`` with
``{"model_stats": [{"name", "version", "last_inference", "inference_count",
"execution_count", "inference_stats": {"success": {"count", "ns"}, "fail", "queue",
"compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss"},
"batch_stats": [{"batch_size", "compute_input", "compute_infer", "compute_output"}], ...}]}``.
The front end asks every ready instance of the model and returns one document of that
shape: per (name, version), counts and nanoseconds are summed, ``last_inference`` (ms since
the epoch) is the latest, ``batch_stats`` are summed per ``batch_size`` and
``memory_usage`` per (type, id). Fields a newer Triton adds are summed the same way when
numeric (nested objects included). The sums cover the instances serving now: an instance
that left the fleet takes its counts with it.

Pure code: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# lists of records merged by key, summing the other fields
_KEYED_LISTS: dict[str, tuple[str, ...]] = {
    "batch_stats": ("batch_size",),
    "memory_usage": ("type", "id"),
}
_MAX_FIELDS = frozenset({"last_inference"})


def _merge(into: dict[str, Any], add: dict[str, Any]) -> None:
    """Add ``add``'s numbers into ``into`` (in place), field by field."""
    for key, value in add.items():
        have = into.get(key)
        if have is None:
            into[key] = _copy(value)
        elif isinstance(value, bool) or isinstance(have, bool):
            continue
        elif isinstance(value, int | float) and isinstance(have, int | float):
            into[key] = max(have, value) if key in _MAX_FIELDS else have + value
        elif isinstance(value, dict) and isinstance(have, dict):
            _merge(have, value)
        elif isinstance(value, list) and isinstance(have, list) and key in _KEYED_LISTS:
            into[key] = _merge_keyed(have, value, _KEYED_LISTS[key])
        # anything else (names, versions, unkeyed lists) keeps the first instance's value


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _merge_keyed(have: list[Any], add: list[Any], key: tuple[str, ...]) -> list[Any]:
    by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
    order: list[tuple[Any, ...]] = []
    for rec in [*have, *add]:
        if not isinstance(rec, dict):
            continue
        k = tuple(rec.get(f) for f in key)
        if k in by_key:
            _merge(by_key[k], {f: v for f, v in rec.items() if f not in key})
        else:
            by_key[k] = _copy(rec)
            order.append(k)
    if key == ("batch_size",):
        order.sort(key=lambda k: k[0] if isinstance(k[0], int) else 0)
    return [by_key[k] for k in order]


def sum_model_stats(docs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One ``{"model_stats": [...]}`` document summing instances' documents.

    Models appear in the order first seen; entries are matched by (name, version).
    """
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for doc in docs:
        for entry in doc.get("model_stats", []):
            if not isinstance(entry, dict):
                continue
            key = (str(entry.get("name", "")), str(entry.get("version", "")))
            if key in merged:
                _merge(merged[key], entry)
            else:
                merged[key] = _copy(entry)
    return {"model_stats": list(merged.values())}
