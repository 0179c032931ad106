"""The training loop: determinism, learning on planted data, and retrieve-then-rank."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pytest
import torch

from mtrec.config import ModelConfig, TrainConfig
from mtrec.data import random_split
from mtrec.data.movielens import read_grouplens_dir
from mtrec.evaluate import evaluate, top_k_items
from mtrec.features import Vocabs, encode
from mtrec.model import MultiTaskModel
from mtrec.recommend import recommend_reference
from mtrec.train import EpochStats, TrainingRecord, train

SMALL = ModelConfig(embedding_dim=8, head_layers=(16,))


def _fit(tiny_dir: Path, config: TrainConfig, seed: int = 0):  # type: ignore[no-untyped-def]
    ds = read_grouplens_dir(tiny_dir)
    split = random_split(ds.interactions, seed=seed)
    vocabs = Vocabs.from_dataset(ds)
    model = MultiTaskModel(len(vocabs.users), len(vocabs.items), SMALL, seed=seed)
    history = train(model, encode(split.train, vocabs), config)
    return ds, vocabs, model, history, evaluate(model, encode(split.test, vocabs), k=5)


def test_same_seed_gives_identical_weights_and_metrics(tiny_dir: Path) -> None:
    config = TrainConfig(epochs=3, batch_size=64, shuffle=True)
    *_, model_a, hist_a, report_a = _fit(tiny_dir, config)
    *_, model_b, hist_b, report_b = _fit(tiny_dir, config)
    assert report_a == report_b
    assert [e.loss for e in hist_a.epochs] == [e.loss for e in hist_b.epochs]
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    *_, report_c = _fit(tiny_dir, dataclasses.replace(config, seed=1))
    assert report_c != report_a


def test_learns_the_planted_clusters(tiny_dir: Path) -> None:
    ds, vocabs, model, history, report = _fit(
        tiny_dir, TrainConfig(epochs=30, batch_size=64, learning_rate=0.1)
    )
    assert history.epochs[-1].loss < history.epochs[0].loss
    # ratings are 1-2 or 4-5 by cluster (mean predictor: about 1.5 stars off)
    assert report.rmse_stars < 1.0
    # nearly all of every user's top 10 lies in the user's own half of the catalogue
    top = vocabs.items.ids(top_k_items(model, torch.arange(len(vocabs.users)), 10).numpy())
    first_half_user = vocabs.users.ids(range(len(vocabs.users)))[:, None] <= 30
    assert ((top <= 20) == first_half_user).mean() > 0.85
    # user 1 is in the first half: its recommendations should come from items 1..20
    recs = recommend_reference(model, vocabs, 1, k=5, candidates=10, items=ds.items)
    assert sum(int(r.item_id) <= 20 for r in recs) >= 4
    assert [r.predicted_rating for r in recs] == sorted(
        (r.predicted_rating for r in recs), reverse=True
    )
    assert all(1.0 <= r.stars <= 5.0 for r in recs) and recs[0].title is not None


def test_zero_weight_task_leaves_its_parameters_untouched(tiny_dir: Path) -> None:
    ds = read_grouplens_dir(tiny_dir)
    vocabs = Vocabs.from_dataset(ds)
    model = MultiTaskModel(len(vocabs.users), len(vocabs.items), SMALL, seed=0)
    head = [p.detach().clone() for p in model.rating_head.parameters()]
    train(
        model,
        encode(ds.interactions, vocabs),
        TrainConfig(epochs=1, batch_size=100, rating_weight=0),
    )
    assert all(torch.equal(a, b) for a, b in zip(head, model.rating_head.parameters(), strict=True))


def test_progress_receives_every_batch(tiny_dir: Path) -> None:
    seen: list[object] = []

    class Recorder:
        def start_epoch(self, epoch: int, epochs: int, n_batches: int) -> None:
            seen.append(("start", epoch, epochs, n_batches))

        def step(self, losses: dict[str, float]) -> None:
            seen.append(sorted(losses))

        def end_epoch(self, stats: EpochStats) -> None:
            seen.append(("end", stats.epoch))

        def finish(self, record: TrainingRecord) -> None:
            seen.append(("finish", len(record.epochs)))

    ds = read_grouplens_dir(tiny_dir)
    vocabs = Vocabs.from_dataset(ds)
    model = MultiTaskModel(len(vocabs.users), len(vocabs.items), SMALL, seed=0)
    train(model, encode(ds.interactions, vocabs), TrainConfig(epochs=1, batch_size=500), Recorder())
    steps = [["loss", "rating", "retrieval"]] * 3
    assert seen == [("start", 1, 1, 3), *steps, ("end", 1), ("finish", 1)]


def test_unknown_user_in_recommend_reference(tiny_dir: Path) -> None:
    from mtrec.errors import UnknownIdError

    _ds, vocabs, model, *_ = _fit(tiny_dir, TrainConfig(epochs=1, batch_size=64))
    with pytest.raises(UnknownIdError, match="unknown user id 999"):
        recommend_reference(model, vocabs, 999)


def test_side_features_are_encoded_from_metadata(tiny_dir: Path) -> None:
    from mtrec.features import feature_codes
    from mtrec.pipeline import build_model

    ds = read_grouplens_dir(tiny_dir)
    vocabs = Vocabs.from_dataset(ds)
    codes = feature_codes(ds, vocabs, ("age", "gender", "occupation"), ("genres", "year"))
    row = vocabs.users.row(1)  # age 21 -> group 18-24 (code 2), F -> 1 of ("F", "M"), engineer
    assert codes.user["age"][row].tolist() == [2]
    assert codes.user["gender"][row].tolist() == [1]
    assert codes.user["occupation"][row].tolist() == [
        1 + ["artist", "engineer", "student"].index("engineer")
    ]
    item = vocabs.items.row(1)  # the synthetic item 1 has one genre flag (index 2: Adventure)
    assert codes.item["genres"][item].tolist()[0] == 3 and codes.item["genres"].shape[1] == 1
    assert codes.item["year"][item].tolist() == [2 + (1951 - 1920) // 5]
    config = ModelConfig(
        embedding_dim=4, head_layers=(4,), user_features=("age",), item_features=("genres",)
    )
    model = build_model(ds, vocabs, config, seed=0)
    assert model.config.feature_sizes == (8, 20) and model.config.feature_widths == (1, 1)
    plain = model.user_embedding(torch.tensor([row]))
    with_features = model.embed_users(torch.tensor([row]))
    assert torch.allclose(
        with_features - plain, model.feature_embeddings["user_age"](torch.tensor([[2]])).sum(1)
    )
    from mtrec.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown side feature"):
        feature_codes(ds, vocabs, ("shoe_size",), ())


def test_validation_slice_early_stopping_and_refit(tiny_dir: Path) -> None:
    ds = read_grouplens_dir(tiny_dir)
    vocabs = Vocabs.from_dataset(ds)
    data = encode(ds.interactions, vocabs)
    config = TrainConfig(
        epochs=60,
        batch_size=64,
        optimizer="adam",
        learning_rate=0.05,
        validation_fraction=0.2,
        patience=2,
    )
    model = MultiTaskModel(len(vocabs.users), len(vocabs.items), SMALL, seed=0)
    history = train(model, data, config)
    assert history.best_epoch is not None and 1 <= history.best_epoch < 60
    assert len(history.validation) == len(history.epochs) == history.best_epoch + 2  # stopped early
    assert min(history.validation) == history.validation[history.best_epoch - 1]
    refit = dataclasses.replace(config, refit=True)
    model2 = MultiTaskModel(len(vocabs.users), len(vocabs.items), SMALL, seed=0)
    history2 = train(model2, data, refit)
    assert history2.best_epoch == history.best_epoch
    assert len(history2.epochs) == history.best_epoch  # retrained on every row for that long


def test_epoch_seconds_are_durations_within_the_run(tiny_dir: Path) -> None:
    # the epoch timer was once overwritten by a row offset: seconds came out near -3500
    *_, history, _ = _fit(tiny_dir, TrainConfig(epochs=2, batch_size=64))
    seconds = [e.seconds for e in history.epochs]
    assert all(0 < s <= history.seconds for s in seconds), (seconds, history.seconds)
    assert sum(seconds) <= history.seconds


def test_auto_precision_is_measured_and_leaves_no_trace(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    training = importlib.import_module("mtrec.train.precision")

    config = TrainConfig(epochs=2, batch_size=64, shuffle=True, precision="auto")
    fp32 = dataclasses.replace(config, precision="fp32")
    monkeypatch.setattr(training, "native_bf16", lambda device=None: False)
    history = _fit(tiny_dir, config)[3]
    assert history.precision == "fp32" and "no native bf16" in history.precision_reason
    # with native instructions, auto times steps: a close call stays fp32...
    monkeypatch.setattr(training, "native_bf16", lambda device=None: True)
    timed: list[tuple[float, float]] = []
    real = training._time_steps

    def close_call(*args, **kwargs):  # type: ignore[no-untyped-def]
        timed.append(real(*args, **kwargs))  # the real trial runs...
        return 1.0, 0.85  # ...and bf16 comes out barely faster

    monkeypatch.setattr(training, "_time_steps", close_call)
    _, _, model_auto, history_auto, _ = _fit(tiny_dir, config)
    assert timed and history_auto.precision == "fp32"
    assert "not faster by 20%" in history_auto.precision_reason
    # ...and the trial left nothing behind: same weights as a run told fp32 outright
    model_fp32 = _fit(tiny_dir, fp32)[2]
    for a, b in zip(
        model_auto.state_dict().values(), model_fp32.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    monkeypatch.setattr(training, "_time_steps", lambda *args, **kwargs: (1.0, 0.5))
    history_fast = _fit(tiny_dir, config)[3]
    assert (
        history_fast.precision == "bf16" and "bf16 steps 500.0 ms" in history_fast.precision_reason
    )
    told = _fit(tiny_dir, dataclasses.replace(config, precision="bf16"))[3]
    assert told.precision == "bf16" and told.precision_reason == "bf16, as configured"
