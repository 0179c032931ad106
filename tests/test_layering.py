"""The package tree is the pipeline: imports flow one way (data -> features -> model ->
train -> ... -> cli), a module holds one job, a function fits on a screen."""

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


MAX_MODULE_LINES = 400
MAX_BODY_LINES = 50


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_a_module_holds_one_job(path: Path) -> None:
    """A module over ~400 lines holds two jobs: split it (docs/guide.md, "Layout")."""
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(SRC)}: {lines} lines"


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """A function's lines less its signature and docstring."""
    body = node.body
    has_doc = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    if has_doc and len(body) > 1:
        body = body[1:]
    assert node.end_lineno is not None
    return node.end_lineno - body[0].lineno + 1


def test_body_lines_counts_by_hand() -> None:
    tree = ast.parse('def f(\n    a,\n):\n    """Doc."""\n    x = 1\n    return x\n')
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef)
    assert _body_lines(function) == 2


def test_a_function_fits_on_a_screen() -> None:
    """A body over ~50 lines hides steps that deserve names."""
    long = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            is_function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            if is_function and _body_lines(node) > MAX_BODY_LINES:
                long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}")
    assert not long, long
