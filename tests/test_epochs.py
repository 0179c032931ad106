"""How many epochs the ranking stage's models train: stage one's held-out recall decides,
by hand-computed verdicts, across threads, and end to end."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import pytest

from mtrec.config import ModelConfig, RankerConfig, TrainConfig
from mtrec.data.movielens import read_grouplens_dir
from mtrec.pipeline import train_model
from mtrec.pipeline.epochs import EpochVerdicts

HISTORY = ModelConfig(embedding_dim=8, head_layers=(16,), history=True, new_user_rate=0.2)


def test_training_stops_when_the_best_of_three_epochs_gains_too_little() -> None:
    verdicts = EpochVerdicts(min_gain=0.005, most=20, k=50)
    # after 5: the best of (0.5, 0.5, 0.5) is 25% above the 0.4 before them: go on;
    # after 6: 0.501 is less than 0.5% above 0.5 (0.5025): stop there
    said = [verdicts.judge(r) for r in (0.2, 0.4, 0.5, 0.5, 0.5, 0.501)]
    assert said == [False] * 5 + [True]
    assert verdicts.stopped_at == 6
    record = verdicts.record()
    assert record["ran"] == 6 and record["most"] == 20
    assert record["stage_one_recall_at_50"] == [0.2, 0.4, 0.5, 0.5, 0.5, 0.501]
    assert "0.5%" in record["why"]
    going_on = EpochVerdicts(min_gain=0.005, most=4, k=10)
    assert not any(going_on.judge(r) for r in (0.1, 0.2, 0.3, 0.4))
    assert going_on.record()["ran"] == 4 and "most" in going_on.record()["why"]


def test_the_served_model_waits_for_stage_ones_verdict_on_its_epoch() -> None:
    verdicts = EpochVerdicts(min_gain=0.01, most=10, k=5)
    answers: list[bool] = []
    waiting = threading.Thread(target=lambda: answers.append(verdicts.served_stops(5)))
    waiting.start()
    for recall in (0.3, 0.5, 0.5, 0.5):
        verdicts.judge(recall)
    time.sleep(0.05)
    assert not answers  # four epochs judged: the fifth is not known yet
    assert verdicts.judge(0.5)  # flat: stage one stops after its fifth
    waiting.join(timeout=5)
    assert answers == [True]
    # stage one ended without a verdict (a failure): nobody waits for one
    failed = EpochVerdicts(min_gain=0.01, most=10, k=5)
    failed.close()
    assert failed.served_stops(3) is False


def test_both_models_stop_at_stage_ones_epoch_and_metrics_say_why(tiny_dir: Path) -> None:
    ds = read_grouplens_dir(tiny_dir)
    config = TrainConfig(epochs=40, batch_size=64, shuffle=True, seed=5, learning_rate=0.05,
                         optimizer="adamw")  # fmt: skip
    ranker = RankerConfig(candidates=10, steps=20)
    saved = train_model(ds, HISTORY, config, ranker=ranker)
    epochs = saved.metrics["epochs"]
    assert epochs["most"] == 40 and epochs["ran"] < 40  # the planted halves are found early
    assert len(saved.metrics["history"]) == epochs["ran"]  # the served model stopped with it
    assert len(epochs["stage_one_recall_at_10"]) == epochs["ran"]
    every = train_model(ds, HISTORY, config, ranker=RankerConfig(candidates=10, steps=20,
                                                                 min_gain=0.0))  # fmt: skip
    assert "epochs" not in every.metrics and len(every.metrics["history"]) == 40
    sliced = dataclasses.replace(config, epochs=3, validation_fraction=0.1)  # its own judge
    assert "epochs" not in train_model(ds, HISTORY, sliced, ranker=ranker).metrics


def test_a_check_part_of_the_way_through_an_epoch_stops_there(tiny_dir: Path) -> None:
    """Checks four times an epoch: a stop after the second share leaves the model that
    training on the first half of the batches alone gives, and the epoch's record counts
    those batches."""
    import torch

    from mtrec.model import MultiTaskModel
    from mtrec.pipeline import prepare
    from mtrec.train import Checks, train

    prepared = prepare(read_grouplens_dir(tiny_dir), HISTORY, TrainConfig(batch_size=100))
    config = TrainConfig(epochs=3, batch_size=100, seed=3, learning_rate=0.05)
    rows = prepared.train.subset(torch.arange(800))  # 8 batches an epoch, in order

    def fresh() -> MultiTaskModel:
        model = MultiTaskModel(prepared.n_users, prepared.n_items, HISTORY, seed=3)
        model.set_history(prepared.seen)
        return model

    asked: list[int] = []
    stopped = fresh()
    record = train(stopped, rows, config, checks=Checks(lambda n: asked.append(n) or n == 2, 4))
    assert asked == [1, 2] and len(record.epochs) == 1
    half = fresh()
    whole = train(
        half,
        rows.subset(torch.arange(400)),
        TrainConfig(epochs=1, batch_size=100, seed=3, learning_rate=0.05),
    )
    for (name, a), b in zip(stopped.state_dict().items(), half.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert record.epochs[0].loss == whole.epochs[0].loss  # the mean of the 4 batches run


def test_a_large_log_is_judged_in_shares_of_an_epoch(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mtrec.pipeline import epochs

    monkeypatch.setattr(epochs, "JUDGED_ROWS", 300)  # tiny's ~960 training rows: 4 shares
    ds = read_grouplens_dir(tiny_dir)
    config = TrainConfig(epochs=40, batch_size=64, shuffle=True, seed=5, learning_rate=0.05,
                         optimizer="adamw")  # fmt: skip
    saved = train_model(ds, HISTORY, config, ranker=RankerConfig(candidates=10, steps=20))
    record = saved.metrics["epochs"]
    assert record["verdicts_per_epoch"] == 4
    shares = len(record["stage_one_recall_at_10"])
    assert shares < 40 * 4 and record["ran"] == pytest.approx(shares / 4, abs=0.01)
    assert len(saved.metrics["history"]) == -(-shares // 4)  # a partial epoch counts as one
