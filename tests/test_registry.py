import pytest

from mark.core.errors import ConfigError
from mark.core.registry import Registry


def test_registry_registers_looks_up_and_lists() -> None:
    reg: Registry[type] = Registry("widget")

    @reg.register("b")
    class B: ...

    reg.register("a")(int)
    assert reg.lookup("b") is B
    reg.register("b")(B)  # the same factory again is fine
    with pytest.raises(ValueError, match="widget 'b' is already registered"):
        reg.register("b")(int)
    with pytest.raises(ConfigError, match="unknown widget 'c'; registered: a, b"):
        reg.lookup("c")
