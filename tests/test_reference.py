"""Slow: the reference comparison on the real MovieLens-100K lands in the published bands."""

from __future__ import annotations

import statistics

import pytest

from mtrec.data import Dataset
from mtrec.experiments import compare

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(ml100k: Dataset) -> dict[int, dict[str, tuple[float, float]]]:
    out = {}
    for seed in (42, 1, 2):
        result = compare(ml100k, seed=seed)
        out[seed] = {m.name: (m.top_k_accuracy, m.rmse) for m in result.models}
        if seed == 42:
            assert len(result.recommendations) == 10
            assert all(r.title and 1 <= r.stars <= 5 for r in result.recommendations)
    return out


def test_multitask_model_is_faithful_to_the_reference(
    results: dict[int, dict[str, tuple[float, float]]],
) -> None:
    top10 = statistics.mean(r["multi-task"][0] for r in results.values())
    rmse = statistics.mean(r["multi-task"][1] for r in results.values())
    assert 0.012 <= top10 <= 0.035
    assert 0.235 <= rmse <= 0.265


@pytest.mark.parametrize("seed", [42, 1, 2])
def test_specialised_models_behave_as_published(
    results: dict[int, dict[str, tuple[float, float]]], seed: int
) -> None:
    r = results[seed]
    assert r["rating-specialised"][0] < r["retrieval-specialised"][0]
    assert r["retrieval-specialised"][1] > 0.5


def test_seed_42_matches_the_keras_rs_anchor(
    results: dict[int, dict[str, tuple[float, float]]],
) -> None:
    # Keras-RS on JAX, same split and protocol, on this machine: 0.01889 / 0.2511 (multi-task);
    # top-10 hit counts agree exactly, RMSE within float noise of a different framework.
    acc, rmse = results[42]["multi-task"]
    assert acc == pytest.approx(0.018890, abs=0.002)
    assert rmse == pytest.approx(0.2511, abs=0.005)


@pytest.fixture(scope="module")
def tuned(ml100k: Dataset) -> dict[str, dict[str, float]]:
    from mtrec.config import preset
    from mtrec.experiments import compare_seeds

    model_config, train_config = preset("tuned")
    result = compare_seeds(ml100k, [42, 1, 2], model_config=model_config, train_config=train_config)
    return {
        name: {k: v["mean"] for k, v in stats.items()} for name, stats in result.summary().items()
    }


def test_tuned_multitask_reaches_the_targets(tuned: dict[str, dict[str, float]]) -> None:
    multi = tuned["multi-task"]
    assert multi["honest_top_k_accuracy"] >= 0.245
    assert multi["top_k_accuracy"] >= 0.08
    assert multi["rmse"] <= 0.229
    assert multi["train_seconds"] <= 60


def test_tuned_multitask_is_best_at_both_tasks(tuned: dict[str, dict[str, float]]) -> None:
    # the reference's claim, now true: one model at least as good as each specialist
    assert tuned["multi-task"]["rmse"] <= tuned["rating-specialised"]["rmse"]
    assert (
        tuned["multi-task"]["honest_top_k_accuracy"]
        >= tuned["retrieval-specialised"]["honest_top_k_accuracy"]
    )
