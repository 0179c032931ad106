"""The neighbourhood correction of predicted ratings: its arithmetic by hand, its fitted
weight, and that what the service shows is what the RMSE measures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from mtrec import artifact
from mtrec.config import ModelConfig, RankerConfig, TrainConfig
from mtrec.data.movielens import read_grouplens_dir
from mtrec.errors import ArtifactError
from mtrec.pipeline import train_model
from mtrec.ranking import Ranker, predicted_for_pairs, training_errors, user_queries
from mtrec.ranking.candidates import FEATURES
from mtrec.ranking.neighbours import by_user, correction, fit_weight, unit_rows
from mtrec.recommend import Recommender

HISTORY = ModelConfig(embedding_dim=8, head_layers=(16,), history=True, new_user_rate=0.2)
CONFIG = TrainConfig(epochs=8, batch_size=64, shuffle=True, seed=5, learning_rate=0.1)


def test_correction_by_hand() -> None:
    # items 0, 1, 2 at unit length; item 3 is item 0 scaled (same direction)
    items = unit_rows(np.array([[1, 0], [0, 1], [0.6, 0.8], [2, 0]], dtype=np.float32))
    assert np.allclose(items[3], [1, 0])
    # one user rated items 0 and 1 with errors +0.4 and -0.2; candidates 2 and 3, then a pad
    got = correction(
        items,
        np.array([[2, 3, -1]]),
        np.array([0, 2]),
        np.array([0, 1]),
        np.array([0.4, -0.2], dtype=np.float32),
        shrink=1.0,
    )
    # item 2: cosines 0.6 and 0.8, weights 0.36 and 0.64
    want_2 = (0.36 * 0.4 + 0.64 * -0.2) / (0.36 + 0.64 + 1.0)
    # item 3: cosines 1 and 0: all weight on item 0
    want_3 = (1.0 * 0.4) / (1.0 + 1.0)
    assert got.shape == (1, 3)
    assert np.allclose(got[0], [want_2, want_3, 0.0], atol=1e-6)


def test_opposite_items_pull_the_other_way_and_empty_histories_get_nothing() -> None:
    items = unit_rows(np.array([[1, 0], [-1, 0]], dtype=np.float32))
    got = correction(
        items,
        np.array([[1], [0]]),
        np.array([0, 1, 1]),  # user 0 rated item 0; user 1 rated nothing
        np.array([0]),
        np.array([0.5], dtype=np.float32),
        shrink=0.0,
    )
    # cosine -1 keeps its sign when squared: a loved item's opposite is predicted lower
    assert np.allclose(got[:, 0], [-0.5, 0.0])


def test_fit_weight_is_least_squares_kept_in_range() -> None:
    x = np.array([1.0, 2.0], dtype=np.float32)
    assert fit_weight(x, 0.5 * x) == pytest.approx(0.5)
    assert fit_weight(x, 5.0 * x) == pytest.approx(2.0)  # never trusted past twice
    assert fit_weight(x, -x) == 0.0  # never turned around
    assert fit_weight(np.zeros(2, dtype=np.float32), x) == 0.0


def test_by_user_puts_each_pair_in_its_users_row() -> None:
    users = np.array([7, 3, 7, 9, 3, 7])
    items = np.array([10, 11, 12, 13, 14, 15])
    distinct, matrix, (row, column) = by_user(users, items)
    assert distinct.tolist() == [3, 7, 9]
    assert matrix.tolist() == [[11, 14, -1], [10, 12, 15], [13, -1, -1]]
    assert np.array_equal(matrix[row, column], items)
    assert np.array_equal(distinct[row], users)


def test_pair_chunks_hold_whole_users_within_their_cells(monkeypatch: pytest.MonkeyPatch) -> None:
    from mtrec.ranking import ratings as ranker

    users = np.array([4, 1, 4, 2, 4, 1, 3, 4, 5, 5, 5, 5, 5, 5, 5, 5])  # user 5: 8 rows
    assert [c.tolist() for c in ranker._pair_chunks(users)] == [list(range(len(users)))]
    monkeypatch.setattr(ranker, "PAIRS_PER_CHUNK", 6)
    chunks = ranker._pair_chunks(users)
    assert sorted(np.concatenate(chunks).tolist()) == list(range(len(users)))
    for chunk in chunks:
        whose = users[chunk]
        counts = np.unique(whose, return_counts=True)[1]
        assert all((users == u).sum() == (whose == u).sum() for u in np.unique(whose))
        assert len(counts) * counts.max() <= 6 or len(counts) == 1  # user 5 alone: 8 cells
    assert len(chunks) == 3  # users 2, 3 and 1 (3 x 2 cells), user 4 (4), user 5 (8)


def test_shown_ratings_are_the_measured_ones(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = read_grouplens_dir(tiny_dir)
    saved = train_model(ds, HISTORY, CONFIG, ranker=RankerConfig(candidates=10, steps=100))
    assert saved.ranker is not None
    weight = saved.ranker.correction
    assert 0.0 < weight <= 2.0  # 0.47 on these planted ratings
    head = saved.metrics["rating_head"]["rmse"]
    assert np.isfinite(head) and saved.metrics["rmse"] != head
    loaded = artifact.load(artifact.save(saved, tmp_path / "model"))
    assert loaded.ranker is not None and loaded.ranker.correction == weight
    rec = Recommender(loaded)
    two = rec.two_stage
    assert two is not None
    # the errors saved with the model are the head's errors on the training histories
    assert loaded.rating_errors is not None and two.stage.errors is loaded.rating_errors
    recomputed = training_errors(two.stage, loaded.seen)
    # and a known user's request reads them instead of computing them again
    every_user = np.arange(len(loaded.seen.indptr) - 1)
    queries = user_queries(two.stage, every_user, loaded.seen)
    assert queries.errors is not None and np.array_equal(queries.errors, loaded.rating_errors)
    assert np.allclose(loaded.rating_errors, recomputed, atol=1e-6)
    assert np.allclose(recomputed, loaded.seen.labels - _head_of_every_entry(loaded), atol=1e-5)
    for user_id in (1, 17, 44):
        listed = rec.recommend(user_id, k=5).items
        row = loaded.vocabs.users.row(user_id)
        item_rows = np.array([loaded.vocabs.items.row(r.item_id) for r in listed])
        measured = predicted_for_pairs(two.stage, loaded.seen, np.full(5, row), item_rows)
        shown = [r.predicted_rating for r in listed]
        assert np.allclose(shown, measured, atol=1e-5)
        # Recommender.rank shows the same numbers, sorted by them
        ranked = rec.rank(user_id, [r.item_id for r in listed])
        assert sorted(shown, reverse=True) == pytest.approx([r.predicted_rating for r in ranked])
    # in chunks of a few users and small similarity blocks (what keeps 20M rows in memory),
    # the same predictions and the same fitted weight
    from mtrec.features import EncodedInteractions
    from mtrec.ranking import candidates, fit_correction, neighbours, ratings

    users = np.repeat(np.arange(len(loaded.seen.indptr) - 1), np.diff(loaded.seen.indptr))
    pairs = (users, loaded.seen.items)
    held = EncodedInteractions(*(torch.from_numpy(a) for a in (*pairs, loaded.seen.labels)))
    whole = predicted_for_pairs(two.stage, loaded.seen, *pairs)
    fitted = fit_correction(two.stage, loaded.seen, held)
    queries = user_queries(two.stage, np.unique(users), loaded.seen)
    found = candidates(two.stage, queries, 10)
    monkeypatch.setattr(ratings, "PAIRS_PER_CHUNK", 40)
    monkeypatch.setattr(neighbours, "SIMS_PER_BLOCK", 500)
    assert len(ratings._pair_chunks(users)) > 5
    np.testing.assert_allclose(
        predicted_for_pairs(two.stage, loaded.seen, *pairs), whole, atol=1e-6
    )
    assert fit_correction(two.stage, loaded.seen, held) == pytest.approx(fitted, rel=1e-5)
    # the candidates' head predictions too, a few users at a time
    again = candidates(two.stage, queries, 10)
    assert found.rows.shape[1] > 10 and np.array_equal(again.rows, found.rows)
    np.testing.assert_allclose(again.predicted, found.predicted, atol=1e-6)


def _head_of_every_entry(saved: artifact.SavedModel) -> np.ndarray:
    users = np.repeat(np.arange(len(saved.seen.indptr) - 1), np.diff(saved.seen.indptr))
    with torch.inference_mode():
        u, i = torch.from_numpy(users), torch.from_numpy(saved.seen.items)
        out = saved.model.predict_rating(
            saved.model.embed_users(u), saved.model.embed_items(i), u, i
        )
    return out.numpy()


@pytest.mark.parametrize("errors", [None, "short", "nan"])
def test_saved_errors_are_checked(tiny_dir: Path, tmp_path: Path, errors: str | None) -> None:
    ds = read_grouplens_dir(tiny_dir)
    saved = train_model(ds, HISTORY, CONFIG, ranker=RankerConfig(candidates=10, steps=20))
    assert saved.rating_errors is not None
    bad = {None: None, "short": saved.rating_errors[:-1], "nan": saved.rating_errors * np.nan}
    path = artifact.save(dataclasses.replace(saved, rating_errors=bad[errors]), tmp_path / "m")
    with pytest.raises(ArtifactError, match=r"seen\.safetensors"):
        artifact.load(path)


def test_a_ranker_saved_before_the_correction_loads_without_one() -> None:
    ranker = Ranker(np.zeros(len(FEATURES), dtype=np.float32), RankerConfig(), 0.7)
    data = ranker.to_dict()
    assert Ranker.from_dict(data, "r").correction == pytest.approx(0.7)
    # a file from before the recency feature: its ten weights, the new one at 0, no recency
    old = {**data, "features": data["features"][:10], "weights": [1.0] * 10}
    del old["recency_half_life"]
    loaded = Ranker.from_dict(old, "r")
    assert loaded.weights.tolist() == [1.0] * 10 + [0.0] and loaded.half_life is None
    with pytest.raises(ArtifactError, match="features"):
        Ranker.from_dict({**old, "features": data["features"][1:11]}, "r")
    del data["correction"]
    assert Ranker.from_dict(data, "r").correction == 0.0
    for bad in (-0.1, 2.5, float("nan"), "1", True, None):
        with pytest.raises(ArtifactError, match="correction"):
            Ranker.from_dict({**data, "correction": bad}, "ranker.json")
