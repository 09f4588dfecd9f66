"""Each package's public face (``__all__``) matches what it actually exports."""

import importlib

import pytest

PACKAGES = ["mark", "frontend", "predictor", "provisioner", "mark.core.workload", "mark.sim"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_complete_and_importable(name: str) -> None:
    mod = importlib.import_module(name)
    exported = list(mod.__all__)
    assert len(exported) == len(set(exported)), f"{name}.__all__ repeats a name"
    for attr in exported:
        assert hasattr(mod, attr), f"{name}.__all__ names {attr!r}, which it does not define"
    public = {
        k for k, v in vars(mod).items()
        if not k.startswith("_") and getattr(v, "__module__", "").startswith(name.split(".")[0])
        and not isinstance(v, type(mod))
    }
    assert public <= set(exported) | {"__version__"}, f"{name} exports {public - set(exported)} silently"
