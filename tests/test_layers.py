"""The layers hold: core <- predictor <- provisioner <- frontend <- application.

``lint-imports`` checks the contract in pyproject.toml; these tests run it on the tree, show
that it catches a lower layer importing a higher one, check that every module of ``mark``
sits in a layer of the contract, and that no function-local import dodges a cycle.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("mark", "frontend", "predictor", "provisioner", "deploy")
LINT = Path(sys.executable).with_name("lint-imports")


def contract() -> dict:
    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    (layers,) = [c for c in doc["tool"]["importlinter"]["contracts"] if c["type"] == "layers"]
    return layers


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)


def test_the_tree_keeps_the_layer_contract() -> None:
    out = lint(REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 kept, 0 broken" in out.stdout


def test_a_lower_layer_importing_a_higher_one_breaks_the_contract(tmp_path: Path) -> None:
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, tmp_path / pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    assert lint(tmp_path).returncode == 0  # the copy is as good as the tree
    slo = tmp_path / "mark" / "core" / "slo.py"
    slo.write_text(slo.read_text() + "\nimport provisioner.greedy  # noqa\n")
    out = lint(tmp_path)
    assert out.returncode != 0
    assert "BROKEN" in out.stdout and "mark.core.slo -> provisioner.greedy" in out.stdout


def test_every_module_of_mark_sits_in_a_layer() -> None:
    layered = {m.strip() for layer in contract()["layers"] for m in layer.split(":")}
    app = {m for m in layered if m.startswith("mark.") and m != "mark.core"}
    modules = {f"mark.{p.stem}" for p in (REPO / "mark").iterdir()
               if (p.suffix == ".py" and p.stem not in ("__init__", "__main__"))
               or (p.is_dir() and (p / "__init__.py").exists() and p.name != "core")}
    assert modules == app, "add new application modules of mark to the contract's top layer"


def _local_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if (isinstance(node, ast.ImportFrom) and node.module
                        and node.module.split(".")[0] in PACKAGES):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} {node.module}")
    return found


@pytest.mark.parametrize("pkg", PACKAGES)
def test_no_function_local_import_of_our_own_packages(pkg: str) -> None:
    """Only ``mark/cli`` defers imports (so ``mark --help`` does not load numba and sanic)."""
    cli = REPO / "mark" / "cli"
    found = [hit for p in sorted((REPO / pkg).rglob("*.py")) if cli not in p.parents
             for hit in _local_imports(p)]
    assert not found, found
