"""Metrics and the evaluation protocol against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mtrec.config import ModelConfig
from mtrec.evaluate import evaluate, rmse, top_k_hits, top_k_items
from mtrec.features import EncodedInteractions
from mtrec.model import MultiTaskModel


def test_rmse_by_hand() -> None:
    assert rmse(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 0.0, 1.0])) == pytest.approx(
        math.sqrt((0 + 4 + 9) / 3)
    )
    with pytest.raises(ValueError):
        rmse(torch.tensor([1.0]), torch.tensor([1.0, 2.0]))


def test_top_k_hits() -> None:
    top = torch.tensor([[3, 1], [0, 2], [4, 4]])
    assert top_k_hits(top, torch.tensor([1, 3, 4])).tolist() == [True, False, True]


def _model_with(users: list[list[float]], items: list[list[float]]) -> MultiTaskModel:
    model = MultiTaskModel(
        len(users), len(items), ModelConfig(embedding_dim=2, head_layers=(2,)), seed=0
    )
    with torch.no_grad():
        model.user_embedding.weight.copy_(torch.tensor(users))
        model.item_embedding.weight.copy_(torch.tensor(items))
    return model


def test_top_k_items_orders_by_dot_product_and_caps_k() -> None:
    model = _model_with([[1.0, 0.0], [0.0, 1.0]], [[0.1, 0.9], [0.8, 0.0], [0.5, 0.5], [-1.0, 0.2]])
    assert top_k_items(model, torch.tensor([0, 1]), 2).tolist() == [[1, 2], [0, 2]]
    assert top_k_items(model, torch.tensor([0]), 10).shape == (1, 4)  # k > catalogue
    assert top_k_items(model, torch.tensor([0, 1, 0]), 2).tolist() == [[1, 2], [0, 2], [1, 2]]


def test_evaluate_reference_accuracy_counts_only_five_star_rows() -> None:
    # user 0 ranks items 1, 2 first; user 1 ranks 0, 2 first (k=2)
    model = _model_with([[1.0, 0.0], [0.0, 1.0]], [[0.1, 0.9], [0.8, 0.0], [0.5, 0.5], [-1.0, 0.2]])
    test = EncodedInteractions(
        user=torch.tensor([0, 0, 1, 1, 0]),
        item=torch.tensor([1, 3, 0, 3, 0]),
        label=torch.tensor([1.0, 1.0, 1.0, 0.75, 0.0]),  # 5, 5, 5, 4, 1 stars
    )
    report = evaluate(model, test, k=2)
    # five-star rows: (0,1) hit, (0,3) miss, (1,0) hit -> 2/3; the 4-star (1,3) row is ignored
    assert report.n_top_k_rows == 3
    assert report.top_k_accuracy == pytest.approx(2 / 3)
    with torch.no_grad():
        pred = model.predict_rating(model.embed_users(test.user), model.embed_items(test.item))
    expected = math.sqrt(float(((pred - test.label) ** 2).mean()))
    assert report.rmse == pytest.approx(expected, rel=1e-6)
    assert report.rmse_stars == pytest.approx(4 * expected, rel=1e-6)


def test_evaluate_training_items_are_not_excluded_in_reference_protocol() -> None:
    # The reference protocol scores the whole catalogue: a top item stays a hit.
    model = _model_with([[1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]])
    test = EncodedInteractions(torch.tensor([0]), torch.tensor([0]), torch.tensor([1.0]))
    assert evaluate(model, test, k=1).top_k_accuracy == 1.0


def test_ranking_metrics_by_hand() -> None:
    import numpy as np

    from mtrec.evaluate import ranking_metrics

    top = np.array([[3, 1, 2], [0, 4, -1], [5, 6, 7]])
    # user 0: relevant {1, 9}, one hit at rank 2; user 1: relevant {4}, hit at rank 2;
    # user 2: nothing relevant, left out of every mean
    got = ranking_metrics(top, np.array([0, 0, 1]), np.array([1, 9, 4]))
    d2 = 1 / math.log2(3)
    assert got["recall"] == pytest.approx((1 / 2 + 1) / 2)
    assert got["ndcg"] == pytest.approx((d2 / (1 + d2) + d2 / 1) / 2)
    assert got["mrr"] == pytest.approx(0.5)
    assert got["n_users"] == 2
    none = ranking_metrics(top, np.array([], dtype=np.int64), np.array([], dtype=np.int64))
    assert math.isnan(none["recall"]) and none["n_users"] == 0
    perfect = ranking_metrics(np.array([[7, 8]]), np.array([0, 0, 0]), np.array([7, 8, 9]))
    assert perfect["recall"] == pytest.approx(2 / 3) and perfect["ndcg"] == pytest.approx(1.0)


def test_honest_protocol_excludes_training_items() -> None:
    from mtrec.features import SeenItems

    # one user whose best-scored item (0) was rated in training; the test item is 1
    model = _model_with([[1.0, 0.0]], [[1.0, 0.0], [0.5, 0.0], [0.1, 0.0]])
    test = EncodedInteractions(torch.tensor([0]), torch.tensor([1]), torch.tensor([1.0]))
    seen = SeenItems(np.array([0, 1]), np.array([0]), np.array([1.0], dtype=np.float32))
    reference = evaluate(model, test, k=1)
    honest = evaluate(model, test, k=1, protocol="honest", seen=seen)
    assert reference.protocol == "reference" and reference.top_k_accuracy == 0.0
    assert honest.protocol == "honest" and honest.top_k_accuracy == 1.0
    assert honest.recall == 1.0 and honest.ndcg == 1.0 and honest.mrr == 1.0
    assert honest.coverage == pytest.approx(1 / 3)
    with torch.no_grad():
        u, i = model.embed_users(test.user), model.embed_items(test.item)
        predicted = float(model.predict_rating(u, i)[0])
    assert honest.mae == pytest.approx(abs(predicted - 1.0), rel=1e-5)
    with pytest.raises(ValueError, match="needs the training items"):
        evaluate(model, test, protocol="honest")


def test_list_reports_intervals(tiny_dir) -> None:  # type: ignore[no-untyped-def]
    from mtrec.config import TrainConfig
    from mtrec.data import random_split
    from mtrec.data.movielens import read_grouplens_dir
    from mtrec.evaluate import list_reports, user_lists
    from mtrec.features import Vocabs, encode, seen_items
    from mtrec.train import train

    ds = read_grouplens_dir(tiny_dir)
    vocabs = Vocabs.from_dataset(ds)
    split = random_split(ds.interactions, seed=0)
    tr, te = encode(split.train, vocabs), encode(split.test, vocabs)
    model = MultiTaskModel(
        len(vocabs.users), len(vocabs.items), ModelConfig(embedding_dim=8, head_layers=(8,)), seed=0
    )
    train(model, tr, TrainConfig(epochs=5, batch_size=64))
    seen = seen_items(tr, len(vocabs.users))
    users = np.unique(te.user.numpy())
    lists = user_lists(model, None, seen, users, k=5, candidates=10)
    reports = list_reports(lists, users, te, n_boot=200)
    assert [r.name for r in reports] == ["served", "retrieval", "popularity", "EASE"]
    for r in reports:
        assert 0 <= r.recall <= 1 and r.recall_ci[0] <= r.recall <= r.recall_ci[1]
        assert r.ndcg_ci[0] <= r.ndcg <= r.ndcg_ci[1] and r.n_users > 0 and r.k == 5
    by_name = {r.name: r for r in reports}
    assert set(by_name["retrieval"].differences) == {"EASE"}  # never against itself
    low, high = by_name["served"].differences["retrieval"]["recall"]
    assert low <= by_name["served"].recall - by_name["retrieval"].recall <= high
    again = list_reports(user_lists(model, None, seen, users, k=5, candidates=10), users, te,
                         n_boot=200)  # fmt: skip
    assert again == reports  # seeded resampling
