"""The tutorial runs: every ``>>>`` line of docs/tutorial.md, as doctests."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.slow
def test_the_tutorial_runs() -> None:
    pytest.importorskip("pandas")
    pytest.importorskip("fastapi")
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testfile(
        str(DOCS / "tutorial.md"), module_relative=False, optionflags=flags, verbose=False
    )
    assert result.attempted > 20
    assert result.failed == 0
