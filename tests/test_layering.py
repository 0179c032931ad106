"""Imports flow one way: data -> features -> model -> train -> evaluate -> ... -> cli."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mtrec"
BASE = {"errors", "config", "io", "runtime", "distributed", "seeds"}
STAGES = [
    "data",
    "vocab",
    "features",
    "model",
    "train",
    "index",
    "ranking",
    "evaluate",
    "artifact",
    "warm",
    "recommend",
    "pipeline",
    "experiments",
    "estimator",
    "plots",
    "report",
    "serve",
    "cli",
]


def _stage(module: str) -> str:
    return module.split(".")[1] if module.count(".") else module


def _modules() -> list[Path]:
    return [p for p in SRC.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")]


def test_every_module_has_a_place() -> None:
    for path in _modules():
        top = path.relative_to(SRC).parts[0].removesuffix(".py")
        assert top in BASE or top in STAGES, f"{path} is not in the layering table"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_only_flow_downstream(path: Path) -> None:
    own = path.relative_to(SRC).parts[0].removesuffix(".py")
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        for name in names:
            if not name.startswith("mtrec."):
                continue
            target = name.split(".")[1]
            if target in BASE or target == own:
                continue
            assert own not in BASE, f"{path.name}: base module imports stage {target}"
            assert STAGES.index(target) < STAGES.index(own), (
                f"{path.relative_to(SRC)} ({own}) imports {name}, a later stage"
            )
