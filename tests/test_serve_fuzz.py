"""The API fuzzed from its own OpenAPI document (schemathesis): no input gives a 5xx."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is a dev dependency")
pytest.importorskip("fastapi", reason="the 'serve' extra is not installed")

from mtrec import artifact  # noqa: E402
from mtrec.config import ModelConfig, TrainConfig  # noqa: E402
from mtrec.data.movielens import read_grouplens_dir  # noqa: E402
from mtrec.pipeline import train_model  # noqa: E402
from mtrec.serve import create_app  # noqa: E402


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from synthetic import planted_ratings, write_grouplens

    root = tmp_path_factory.mktemp("api")
    data = read_grouplens_dir(write_grouplens(root / "data", planted_ratings()))
    saved = train_model(data, ModelConfig(embedding_dim=8, head_layers=(8,)), TrainConfig(epochs=1))
    app = create_app(artifact.save(saved, root / "model"))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case) -> None:  # type: ignore[no-untyped-def]
    response = case.call()
    assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"
    if response.status_code >= 400:
        assert set(response.json()) == {"error"}  # every error has the JSON error body
