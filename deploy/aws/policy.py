"""A small IAM policy evaluator for the subset the deployment's policies use.

AWS's logic for identity policies: an explicit ``Deny`` wins, else an ``Allow`` that matches
allows, else the request is implicitly denied. A statement matches a request when its
``Action`` (or ``NotAction``) and ``Resource`` (or ``NotResource``) match, with ``*`` and
``?`` wildcards (actions case-insensitively), and every condition holds. Condition operators:
``StringEquals``, ``StringNotEquals``, ``StringLike``, ``StringNotLike``, ``ArnEquals``,
``ArnLike`` (each also with ``IfExists``) and ``Null``; several values under one key match if
any does; a key absent from the request context fails every operator but ``...IfExists``,
``StringNot*`` and ``Null: true``. Condition keys are case-insensitive.

Not covered: ``ForAllValues``/``ForAnyValue``, numeric, date, boolean and IP operators (an
unknown operator raises ``ValueError``, so a policy outside the subset is never judged),
policy variables, resource-based policies, permission boundaries and SCPs.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

Verdict = Literal["allow", "explicit-deny", "implicit-deny"]


def _as_list(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _glob(pattern: str, value: str, case: bool = True) -> bool:
    # fnmatch's [...] classes do not exist in IAM: escape them
    regex = fnmatch.translate(pattern.replace("[", "\x00").replace("]", "\x01"))
    regex = regex.replace("\x00", r"\[").replace("\x01", r"\]")
    return re.match(regex, value, 0 if case else re.IGNORECASE) is not None


def _matches(patterns: Any, value: str, case: bool = True) -> bool:
    return any(_glob(p, value, case) for p in _as_list(patterns))


_TESTS = {
    "StringEquals": lambda want, have: want == have,
    "StringLike": lambda want, have: _glob(want, have),
    "ArnEquals": lambda want, have: want == have,
    "ArnLike": lambda want, have: _glob(want, have),
}
_NEGATED = {"StringNotEquals": "StringEquals", "StringNotLike": "StringLike"}


def _condition_holds(operator: str, key: str, wanted: Any, context: Mapping[str, str]) -> bool:
    have = context.get(key.lower())
    if operator == "Null":
        return (have is None) == (str(_as_list(wanted)[0]).lower() == "true")
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    if base in _NEGATED:
        test = _TESTS[_NEGATED[base]]
        return have is None or not any(test(w, have) for w in _as_list(wanted))
    if base not in _TESTS:
        raise ValueError(f"condition operator {operator!r} is outside the evaluator's subset")
    if have is None:
        return if_exists
    return any(_TESTS[base](w, have) for w in _as_list(wanted))


def statement_matches(statement: Mapping[str, Any], action: str, resource: str,
                      context: Mapping[str, str]) -> bool:
    """Whether ``statement`` applies to the request (its effect aside)."""
    if "Action" in statement:
        if not _matches(statement["Action"], action, case=False):
            return False
    elif _matches(statement["NotAction"], action, case=False):
        return False
    if "Resource" in statement:
        if not _matches(statement["Resource"], resource):
            return False
    elif "NotResource" in statement and _matches(statement["NotResource"], resource):
        return False
    ctx = {k.lower(): v for k, v in context.items()}
    return all(_condition_holds(op, key, wanted, ctx)
               for op, keys in statement.get("Condition", {}).items()
               for key, wanted in keys.items())


def evaluate(policies: Iterable[Mapping[str, Any]], action: str, resource: str,
             context: Mapping[str, str] | None = None) -> Verdict:
    """The verdict of identity ``policies`` on one action against one resource ARN, with the
    request's condition keys in ``context`` (``{"aws:RequestTag/mark:deployment": "x"}``)."""
    allowed = False
    for policy in policies:
        statements = policy["Statement"]
        for st in [statements] if isinstance(statements, Mapping) else statements:
            if statement_matches(st, action, resource, context or {}):
                if st["Effect"] == "Deny":
                    return "explicit-deny"
                allowed = True
    return "allow" if allowed else "implicit-deny"
