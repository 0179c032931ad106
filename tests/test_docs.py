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


def _slug(heading: str) -> str:
    """A Markdown heading's anchor, as GitHub writes it."""
    import re

    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_link_between_the_docs_lands_on_a_page_and_a_heading() -> None:
    """The guide became a page per task (issue 31): no link may point at a section that
    moved, or at a page that is not there."""
    import re

    pages = [DOCS.parent / "README.md", *sorted(DOCS.glob("*.md"))]
    anchors = {
        page.resolve(): {_slug(h) for h in re.findall(r"^#+ (.+)$", page.read_text(), re.M)}
        for page in pages
    }
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page.resolve()
            if not resolved.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors.get(resolved, ()):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken
