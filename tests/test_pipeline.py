"""One pipeline: compare, sweep and train_model prepare, fit and evaluate the same way."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from mtrec.config import ModelConfig, RunConfig, TrainConfig
from mtrec.data import Dataset, Interactions
from mtrec.data.movielens import read_grouplens_dir
from mtrec.experiments import compare, sweep
from mtrec.pipeline import prepare, train_model

SMALL = ModelConfig(embedding_dim=8, head_layers=(16,))
CONFIG = TrainConfig(epochs=3, batch_size=64, shuffle=True, seed=3)


def test_compare_multi_task_row_equals_train_model(tiny_dir: Path) -> None:
    ds = read_grouplens_dir(tiny_dir)
    result = compare(ds, seed=CONFIG.seed, model_config=SMALL, train_config=CONFIG)
    multi = next(m for m in result.models if m.name == "multi-task")
    saved = train_model(ds, SMALL, CONFIG)
    assert multi.top_k_accuracy == saved.metrics["top_k_accuracy"]
    assert multi.rmse == saved.metrics["rmse"]
    assert multi.mae == saved.metrics["mae"]
    assert result.n_test == saved.data["split"]["n_test"]


def _implicit(ds: Dataset) -> Dataset:
    """The same log without ratings and without metadata (a user's own click log)."""
    ev = ds.interactions
    log = Interactions(ev.user, ev.item, np.ones(len(ev), dtype=np.float32), ev.timestamp)
    return dataclasses.replace(ds, interactions=log, has_ratings=False, users=None, items=None)


def test_prepare_adapts_the_configs_to_the_data(tiny_dir: Path) -> None:
    ds = _implicit(read_grouplens_dir(tiny_dir))
    tuned = dataclasses.replace(SMALL, user_features=("age",), item_features=("genres",))
    prepared = prepare(ds, tuned, CONFIG)
    assert prepared.train_config.rating_weight == 0.0  # nothing for the rating head to learn
    assert prepared.model_config.user_features == () and prepared.model_config.item_features == ()
    assert len(prepared.train) + len(prepared.test) == len(ds.interactions)


def test_compare_and_sweep_take_a_users_own_log(tiny_dir: Path) -> None:
    ds = _implicit(read_grouplens_dir(tiny_dir))
    tuned = dataclasses.replace(SMALL, user_features=("age",))
    result = compare(ds, seed=1, model_config=tuned, train_config=CONFIG, baselines=True)
    # without ratings there is no rating-specialised model, and no rating baseline
    assert [m.name for m in result.models] == ["retrieval-specialised", "multi-task"]
    assert all(m.rmse != m.rmse for m in result.models)  # NaN: not measured
    assert "biased MF" not in [b.name for b in result.baselines]
    rated = read_grouplens_dir(tiny_dir)
    points = sweep(rated, [0.5, 2.0], model_config=SMALL, train_config=CONFIG, learned=False)
    assert [p.retrieval_weight for p in points] == [0.5, 2.0]
    from mtrec.errors import ConfigError

    with pytest.raises(ConfigError, match="no ratings"):
        sweep(ds, [1.0], model_config=SMALL, train_config=CONFIG, learned=False)


def test_a_big_test_set_is_measured_on_a_seeded_sample_of_its_users_and_says_so(
    tiny_dir: Path, tmp_path: Path
) -> None:
    import torch

    from mtrec import artifact
    from mtrec.evaluate import sample_users
    from mtrec.features import EncodedInteractions
    from mtrec.pipeline import evaluate_saved

    test = EncodedInteractions(torch.tensor([3, 1, 3, 2, 5, 1, 4]), torch.arange(7), torch.zeros(7))
    kept, said = sample_users(test, 2, seed=7)
    users = set(kept.user.tolist())
    assert len(users) == 2 and said.users == 2 and said.of == 5 and said.seed == 7
    assert len(kept) == sum(u in users for u in test.user.tolist())  # all their rows
    again, _ = sample_users(test, 2, seed=7)
    assert torch.equal(again.item, kept.item)
    whole, said = sample_users(test, 5, seed=7)
    assert whole is test and said.seed is None

    ds = read_grouplens_dir(tiny_dir)
    small = ModelConfig(embedding_dim=8, head_layers=(16,))
    config = TrainConfig(epochs=2, batch_size=100, seed=3)
    everyone = train_model(ds, small, config).metrics
    sampled = train_model(ds, small, config, eval_users=20)
    n_users = everyone["evaluated_users"]["users"]
    said = {"users": n_users, "of": n_users, "seed": None, "without_training_rows": 0}
    assert everyone["evaluated_users"] == said
    said = {"users": 20, "of": n_users, "seed": 3, "without_training_rows": 0}
    assert sampled.metrics["evaluated_users"] == said
    assert sampled.metrics["served"]["recall"] != everyone["served"]["recall"]
    # re-evaluating the saved model measures the same users
    loaded = artifact.load(artifact.save(sampled, tmp_path / "model"))
    report = evaluate_saved(loaded, ds)
    assert report.top_k_accuracy == pytest.approx(sampled.metrics["top_k_accuracy"])
    assert report.n_test == sampled.metrics["n_test"] < everyone["n_test"]


def test_compare_trains_its_models_side_by_side_to_the_same_results(tiny_dir: Path) -> None:
    import torch

    ds = read_grouplens_dir(tiny_dir)
    config = dataclasses.replace(CONFIG, precision="fp32")  # auto may time differently
    # dropout and new-user rows draw at random: each model from its own generator
    drawing = dataclasses.replace(SMALL, dropout=0.2, history=True, new_user_rate=0.3)
    before = torch.get_num_threads()
    runs = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runs[threads] = compare(ds, seed=CONFIG.seed, model_config=drawing, train_config=config)
            torch.manual_seed(threads)  # the global generator plays no part
    finally:
        torch.set_num_threads(before)
    alone, together = runs[1], runs[2]
    assert (alone.side_by_side, together.side_by_side) == (1, 2)
    assert [m.name for m in together.models] == [m.name for m in alone.models]
    for a, b in zip(alone.models, together.models, strict=True):
        assert [e.loss for e in a.epochs] == [e.loss for e in b.epochs]
        assert (a.top_k_accuracy, a.rmse, a.honest) == (b.top_k_accuracy, b.rmse, b.honest)
    assert [r.predicted_rating for r in alone.recommendations] == [
        r.predicted_rating for r in together.recommendations
    ]
    assert together.to_dict()["environment"]["models_side_by_side"] == 2


def test_fit_in_python_says_what_it_does_and_reads_well(
    tiny_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``mtrec.fit`` writes a line per epoch of each model and one per phase after the
    training to stderr (nothing with ``progress=False``), takes its preset by keyword too,
    and a model prints readably."""
    import mtrec

    small = {"embedding_dim": 8, "head_layers": (16,), "batch_size": 256}
    ds = read_grouplens_dir(tiny_dir)
    model = mtrec.fit(ds, preset="default", epochs=2, **small)
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith("served model: epoch 2 of at most 2, loss") for line in lines)
    assert any(line.startswith("ranking stage's stage one: epoch 1 of") for line in lines)
    assert any(line.startswith("served model: trained, 2 epochs in ") for line in lines)
    phases = [line.split(":")[0] for line in lines if ": " in line and " s" in line]
    assert phases[-3:] == ["fit", "index and ranking stage", "evaluation"], lines
    one = RunConfig(preset="default", ranker={"refit": False})  # stage one serves: one model
    mtrec.fit(ds, config=one, epochs=2, **small)
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith("served model: epoch 2 of at most 2, loss") for line in lines)
    assert not any("stage one:" in line for line in lines)
    served = model.metrics["served"]
    assert repr(model) == (
        f"<mtrec.Model: 60 users, 40 items, served recall@10 {served['recall']:.4f} "
        f"NDCG {served['ndcg']:.4f}>"
    )
    mtrec.fit(ds, "reference", epochs=1, progress=False, **small)
    assert capsys.readouterr().err == ""
