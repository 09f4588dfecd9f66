"""The plan and its execution: every step finds what exists, compares it with what the
deployment wants and records one :class:`Change` (create, update, delete or ok), applying it
unless this is a dry run. A second deploy of the same tree records only ``ok``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from deploy.aws.clients import Clients
from deploy.aws.spec import Spec

Action = Literal["create", "update", "delete", "ok"]


@dataclass(frozen=True)
class Change:
    kind: str  # iam-role, security-group, s3-object, launch-template, function, host, ...
    name: str
    action: Action
    detail: str = ""


@dataclass
class Run:
    """One deploy (``apply``) or plan (dry run): the changes, and what exists for ``--json``."""

    spec: Spec
    aws: Clients
    apply: bool
    changes: list[Change] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    def change(self, kind: str, name: str, action: Action, do: Callable[[], Any] | None = None,
               detail: str = "") -> Any:
        """Record a change; apply it (return ``do()``) unless this is a dry run."""
        self.changes.append(Change(kind, name, action, detail))
        if self.apply and do is not None and action != "ok":
            return do()
        return None

    def placeholder(self, what: str) -> str:
        """An id that exists only once applied (a dry run plans with this in its place)."""
        return f"<{what}>"

    def summary(self) -> str:
        n = Counter(c.action for c in self.changes)
        return (f"{n['create']} to create, {n['update']} to update, {n['delete']} to delete, "
                f"{n['ok']} unchanged")

    def table(self) -> str:
        lines = [f"{c.action:<7} {c.kind:<20} {c.name}" + (f"  ({c.detail})" if c.detail else "")
                 for c in self.changes]
        return "\n".join([*lines, self.summary()])
