"""The web page, end to end in headless Chromium (Debian's package, driven by Playwright).

Skipped only where /usr/bin/chromium is missing; ``.ci/run`` installs it, so CI runs it.
The screenshot is written to ``test-artifacts/serve-page.png``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from servers import start_server

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed here"
)


def test_page_recommends_and_shows_similar_movies(tiny_dir: Path, tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    from mtrec import artifact
    from mtrec.config import ModelConfig, TrainConfig
    from mtrec.data.movielens import read_grouplens_dir
    from mtrec.pipeline import train_model

    saved = train_model(
        read_grouplens_dir(tiny_dir),
        ModelConfig(embedding_dim=8, head_layers=(8,)),
        TrainConfig(epochs=3, batch_size=64),
    )
    model = artifact.save(saved, tmp_path / "model")
    server, base = start_server(model)
    try:
        with playwright.sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                user_data_dir=str(tmp_path / "chromium-profile"),
                executable_path=str(CHROMIUM),
                headless=True,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                    "--disable-sync",
                ],
            )
            page = context.new_page()
            page.goto(base)
            page.fill("#user", "7")
            page.click("#go")
            page.wait_for_selector("#recs tbody tr.rec")
            rows = page.locator("#recs tbody tr.rec")
            assert rows.count() == 10
            first = rows.nth(0).locator("button")
            title = first.inner_text()
            assert title.startswith(("Movie", "Café"))
            assert page.locator("#history tbody tr").count() > 0
            first.click()
            page.wait_for_selector("#similar tbody tr")
            assert page.inner_text("#simtitle") == f"Similar to {title}"
            assert page.locator("#similar tbody tr").count() == 10
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "serve-page.png"), full_page=True)
            context.close()
    finally:
        server.terminate()
        server.communicate(timeout=20)
    assert (ARTIFACTS / "serve-page.png").stat().st_size > 1000
