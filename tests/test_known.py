"""What a model knows comes from its training rows only, on every split (issue 33).

The planted log's timestamps rise user by user, so the global temporal split holds out the
last users whole: users the model must not know. Every list of the report answers them
with the fallback a deployment serves them, and the report counts them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from mtrec.config import ModelConfig, TrainConfig
from mtrec.data import Dataset, Interactions
from mtrec.data.movielens import read_grouplens_dir
from mtrec.data.split import make_split
from mtrec.features import EncodedInteractions, RatingScale, fallback_order, liked_counts
from mtrec.pipeline import build_model, prepare, train_model
from mtrec.pipeline.metrics import _list_reports
from mtrec.recommend import Recommender

SMALL = ModelConfig(embedding_dim=8, head_layers=(16,), item_features=("genres",))
CONFIG = TrainConfig(epochs=2, batch_size=64, shuffle=True, seed=3)


def _given(ds: Dataset) -> tuple[Dataset, Dataset, Interactions]:
    """The first four fifths of the log by time train; the rest is a test file."""
    order = np.argsort(ds.interactions.timestamp, kind="stable")
    cut = len(order) * 4 // 5
    train = Dataset(ds.name, ds.interactions.take(np.sort(order[:cut])), ds.items, ds.users)
    test = Dataset(ds.name, ds.interactions.take(np.sort(order[cut:])), ds.items, ds.users)
    return train, test, train.interactions


@pytest.mark.parametrize("kind", ["random", "temporal", "temporal-user", "given"])
def test_the_vocabularies_and_popularity_come_from_training_rows(tiny_dir: Path, kind: str) -> None:
    ds = read_grouplens_dir(tiny_dir)
    if kind == "given":
        ds, test, train_rows = _given(ds)
        prepared = prepare(ds, SMALL, CONFIG, test=test)
    else:
        train_rows = make_split(ds.interactions, kind, 0.2, CONFIG.seed).train
        prepared = prepare(ds, SMALL, CONFIG, split=kind)
    users, items = prepared.vocabs.users.id_array, prepared.vocabs.items.id_array
    assert set(users.tolist()) == set(train_rows.user.tolist())  # exactly the training users
    assert set(train_rows.item.tolist()) <= set(items.tolist())
    assert set(items.tolist()) <= set(train_rows.item.tolist()) | set(ds.items.ids.tolist())
    # the seen items and the fallback's counts are the training rows', nothing else
    assert len(prepared.seen.items) == len(train_rows)
    liked = train_rows.rating >= 4
    ids, n_liked = np.unique(train_rows.item[liked], return_counts=True)
    by_hand = dict(zip(ids.tolist(), n_liked.tolist(), strict=True))
    counts = liked_counts(prepared.train, prepared.n_items)
    assert {int(items[r]): int(n) for r, n in enumerate(counts) if n} == by_hand
    if kind in ("temporal", "given"):  # the last users' rows are all late: unknown users
        assert prepared.new_user_test is not None
        assert prepared.unseen is not None and prepared.unseen.users == 12
        assert int(prepared.new_user_test.user.min()) == prepared.n_users
    else:
        assert prepared.new_user_test is None


def test_the_rating_scale_comes_from_training_rows(tiny_dir: Path) -> None:
    """Only the latest rows hold five stars: a split by time scales ratings by 1..4, the
    range its training rows show (the whole log's 1..5 read the test rows)."""
    ds = read_grouplens_dir(tiny_dir)
    rows = ds.interactions
    late = rows.timestamp >= np.quantile(rows.timestamp, 0.8)
    rating = np.where(~late & (rows.rating == 5), 4, rows.rating).astype(np.float32)
    ds = Dataset(ds.name, dataclasses.replace(rows, rating=rating), ds.items, ds.users)
    prepared = prepare(ds, SMALL, CONFIG, split="temporal")
    assert (prepared.scale.low, prepared.scale.high) == (1.0, 4.0)
    assert (RatingScale.of(ds).low, RatingScale.of(ds).high) == (1.0, 5.0)


def test_catalogue_items_without_a_training_row_are_counted_cold(tiny_dir: Path) -> None:
    """Issue 33: with a catalogue every item is in the vocabulary, so a test row on an item
    no training row holds counted as known (u1 with --items-file: 0 unseen rows, 32
    without); it is evaluated and counted as a cold item's."""
    ds = read_grouplens_dir(tiny_dir)
    rows = ds.interactions
    on_40 = rows.item == 40
    train = Dataset(ds.name, rows.take(np.flatnonzero(~on_40)), ds.items, ds.users)
    test = Dataset(ds.name, rows.take(np.flatnonzero(on_40)), ds.items, ds.users)
    prepared = prepare(train, SMALL, CONFIG, test=test)
    assert 40 in prepared.vocabs.items  # from the catalogue
    assert prepared.unseen is not None
    said = prepared.unseen.to_dict()
    assert said["cold_item_rows"] == int(on_40.sum()) and said["cold_items"] == 1
    assert said["rows"] == 0  # evaluated, not left out
    model = build_model(train, prepared.vocabs, SMALL, 3, prepared.seen)
    row = prepared.vocabs.items.row(40)
    assert not model.item_embedding.weight[row].any()  # embedded from its side features


def test_users_without_training_rows_get_the_fallback_everywhere(tiny_dir: Path) -> None:
    ds = read_grouplens_dir(tiny_dir)
    saved = train_model(ds, SMALL, CONFIG, split="temporal")
    late = sorted(set(range(49, 61)))  # the planted log's last twelve users
    assert not any(u in saved.vocabs.users for u in late)
    said = saved.metrics["evaluated_users"]
    assert said["without_training_rows"] == 12 and said["users"] == 12  # only new users
    assert {r["fell_back"] for r in saved.metrics["lists"]} == {12}
    # every list gives them the same fallback: every list scores the same
    assert len({(r["recall"], r["ndcg"]) for r in saved.metrics["lists"]}) == 1
    rec = Recommender(saved)
    got = rec.recommend(late[0], k=5)
    assert got.fallback  # the service agrees: the popularity fallback, said so
    order = saved.vocabs.items.ids(fallback_order(saved.popularity)[:5]).tolist()
    assert [r.item_id for r in got.items] == order


def test_the_fallback_rows_of_a_report_by_hand(tiny_dir: Path) -> None:
    """A known user and a new one: the new user's list is the fallback's top k in every
    list, and adds its hand-computed recall and NDCG to each list's mean."""
    ds = read_grouplens_dir(tiny_dir)
    saved = train_model(ds, SMALL, CONFIG, test_fraction=0.0)
    n = len(saved.vocabs.users)
    fallback = fallback_order(saved.popularity)
    unseen_by_0 = np.setdiff1d(np.arange(len(fallback)), saved.seen.of(0)[0])
    known = EncodedInteractions(
        torch.tensor([0]), torch.tensor([int(unseen_by_0[0])]), torch.tensor([1.0])
    )
    new = EncodedInteractions(  # user n (no training row) liked fallback items 1 and 21
        torch.tensor([n, n]), torch.tensor([int(fallback[0]), int(fallback[20])]), torch.ones(2)
    )
    both = EncodedInteractions.cat([known, new])
    alone = _list_reports(saved.model, None, saved.seen, known, 10, 500.0)
    counts = saved.popularity
    merged = _list_reports(saved.model, None, saved.seen, both, 10, 500.0, fallback=counts)
    # the fallback's first item at rank 1, the 21st not in the top 10: recall 1/2, and
    # NDCG 1 (a hit at rank 1) over the ideal 1 + 1/log2(3)
    recall, ndcg = 0.5, 1.0 / (1.0 + 1.0 / np.log2(3.0))
    assert [r.name for r in merged] == [r.name for r in alone]
    for one, two in zip(alone, merged, strict=True):
        assert two.n_users == 2 and two.fell_back == 1 and one.fell_back == 0
        assert two.recall == pytest.approx((one.recall + recall) / 2)
        assert two.ndcg == pytest.approx((one.ndcg + ndcg) / 2)
    with pytest.raises(ValueError, match="fallback"):
        _list_reports(saved.model, None, saved.seen, both, 10, 500.0)
