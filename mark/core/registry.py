"""One registry type for every plug point (backends, policies, forecasters).

A :class:`Registry` is a ``dict`` of name -> factory with a decorator to fill it and a
lookup whose error names what was asked and lists what is registered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from mark.core.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


class Registry(dict[str, F]):
    """Factories by name for one kind of pluggable part (``kind`` is used in messages)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator adding ``factory`` under ``name``; a second, different one is an error."""

        def decorate(factory: F) -> F:
            previous = self.get(name)
            if previous is not None and previous is not factory:
                raise ValueError(f"{self.kind} {name!r} is already registered ({previous!r})")
            self[name] = factory
            return factory

        return decorate

    def lookup(self, name: str) -> F:
        """The factory registered as ``name``, else ``ConfigError`` listing the registered ones."""
        try:
            return self[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(sorted(self))}"
            ) from None
