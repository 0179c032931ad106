"""Recency on a log split by time: weights by hand, the half-life chosen on training rows,
and the same recency at training time and after a save and load (issue 33)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mtrec import artifact
from mtrec.config import ModelConfig, RankerConfig, TrainConfig
from mtrec.data.movielens import read_grouplens_dir
from mtrec.evaluate import user_lists
from mtrec.features import EncodedInteractions, choose_recency, recent_counts
from mtrec.pipeline import prepare, train_model
from mtrec.recommend import Recommender

DAY = 86400


def _rows(items: list[int], days: list[int], liked: list[bool]) -> EncodedInteractions:
    n = len(items)
    return EncodedInteractions(
        torch.arange(n) % 7,
        torch.tensor(items),
        torch.tensor([1.0 if ok else 0.25 for ok in liked]),
        time=torch.tensor(days) * DAY,
    )


def test_recent_counts_by_hand() -> None:
    rows = _rows([0, 1, 1, 2], [0, 10, 20, 20], [True, True, True, False])
    assert recent_counts(rows, 3, None).tolist() == [1.0, 2.0, 0.0]  # liked rows, counted
    # half-life 10 days, ages 20 / 10 / 0 days: 1/4, 1/2 + 1; the unliked row weighs 0
    assert recent_counts(rows, 3, 10 * DAY).tolist() == [0.25, 1.5, 0.0]


def test_the_half_life_is_chosen_on_the_latest_training_rows() -> None:
    # item 0 was liked most, long ago; item 1 lately, and again in the validation window
    items = [0] * 60 + [1] * 30 + [2] * 10 + [1] * 12
    days = list(range(60)) + list(range(90, 120)) + list(range(60, 70)) + [121] * 12
    moving = choose_recency(_rows(items, days, [True] * len(items)), 3, k=1)
    assert moving.half_life is not None  # counting plainly would serve item 0
    assert moving.validation["none"] == 0.0 and max(moving.validation.values()) == 1.0
    # nothing moves: item 0 leads throughout, plain counts hold the window as well
    still = [0, 1] * 50 + [0] * 12
    steady = choose_recency(_rows(still, list(range(112)), [True] * 112), 3, k=1)
    assert steady.half_life is None and steady.validation["none"] == 1.0
    no_time = EncodedInteractions(
        torch.zeros(200, dtype=torch.long), torch.zeros(200, dtype=torch.long), torch.ones(200)
    )
    assert choose_recency(no_time, 3).half_life is None


def test_recency_is_the_same_after_a_save_and_load(tiny_dir: Path, tmp_path: Path) -> None:
    ds = read_grouplens_dir(tiny_dir)
    model_config = ModelConfig(embedding_dim=8, head_layers=(16,), history=True)
    train_config = TrainConfig(epochs=2, batch_size=64, shuffle=True, seed=3)
    prepared = prepare(ds, model_config, train_config, split="temporal")
    assert prepared.train.time is not None  # kept, in time order
    assert bool((prepared.train.time[1:] >= prepared.train.time[:-1]).all())
    assert prepare(ds, model_config, train_config).train.time is None  # not on a random split
    ranker = RankerConfig(candidates=10, steps=50, min_gain=0.0)
    saved = train_model(ds, model_config, train_config, split="temporal", ranker=ranker)
    chosen = saved.data["recency"]
    assert set(chosen["hit_rate_at_10"]) == {
        "none",
        "0.5 of the span",
        "0.125 of the span",
        "0.03125 of the span",
    }
    assert saved.ranker is not None
    # the planted log's users arrive one after another: what is liked moves, recency pays
    assert saved.ranker.half_life is not None
    assert saved.ranker.half_life / DAY == pytest.approx(chosen["half_life_days"], abs=1e-3)
    assert any(r["name"] == "recent popularity" for r in saved.metrics["lists"])
    loaded = Recommender.load(artifact.save(saved, tmp_path / "model"))
    np.testing.assert_array_equal(loaded.saved.popularity, saved.popularity)
    users = np.arange(len(saved.vocabs.users))
    two = saved.two_stage()
    reported = user_lists(saved.model, two, saved.seen, users, recent=saved.popularity)["served"]
    for row, user in zip(reported, users, strict=True):
        got = loaded.recommend(saved.vocabs.users.id_array[user].item(), k=10)
        assert [r.item_id for r in got.items] == saved.vocabs.items.ids(row[row >= 0]).tolist()
