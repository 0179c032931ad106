"""The ranking stage: its loss and features by hand, its training data, and new users."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mtrec import artifact
from mtrec.config import ModelConfig, RankerConfig, TrainConfig
from mtrec.data.movielens import read_grouplens_dir
from mtrec.errors import ArtifactError, ConfigError
from mtrec.features import EncodedInteractions, seen_items
from mtrec.index import ExactIndex
from mtrec.model import MultiTaskModel
from mtrec.pipeline import carve, fit_stage_one, prepare, train_model
from mtrec.ranking import (
    FEATURES,
    Candidates,
    Queries,
    Ranker,
    StageOne,
    candidates,
    fit_ranker,
    gains_of,
    listwise_loss,
)
from mtrec.ranking.candidates import _rank_feature
from mtrec.ranking.item_item import union_rows
from mtrec.recommend import Recommender

HISTORY = ModelConfig(embedding_dim=8, head_layers=(16,), history=True, new_user_rate=0.2)
CONFIG = TrainConfig(
    epochs=8, batch_size=64, shuffle=True, seed=5, learning_rate=0.1, precision="fp32"
)  # fp32: "auto" times steps, and a busy machine could flip the choice between fits
RANKER = RankerConfig(candidates=10, steps=100)


def test_listwise_loss_by_hand() -> None:
    scores = torch.tensor([[1.0, 0.0, 2.0], [0.5, 0.5, 9.0]])
    gains = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]])
    pad = torch.tensor([[False, False, False], [False, False, True]])
    z1 = math.exp(1) + 1 + math.exp(2)
    first = -(1.0 * (1 - math.log(z1)) + 0.5 * (2 - math.log(z1))) / 1.5
    second = -(0.5 - math.log(2 * math.exp(0.5)))  # the pad takes no probability
    assert listwise_loss(scores, gains, pad).item() == pytest.approx((first + second) / 2)


def test_union_and_ranks_by_hand() -> None:
    union = union_rows(np.array([[3, 1, 3, -1], [2, 2, 2, 2]]))
    assert union.tolist() == [[1, 3], [2, -1]]
    assert union_rows(np.array([[3, 1, 3, -1, 7]])).tolist() == [[1, 3, 7]]  # a request's row
    assert union_rows(np.array([[-1, -1]])).shape == (1, 0)
    ranks = _rank_feature(np.array([[0.1, 0.9, 0.5]]), np.array([[True, True, False]]))
    assert np.allclose(ranks, -np.log1p([[1.0, 0.0, 2.0]]))  # the pad ranks last


def test_gains_mark_held_aside_items() -> None:
    found = Candidates(
        rows=np.array([[4, 7, -1], [4, 2, 9]]),
        features=np.zeros((2, 3, len(FEATURES)), dtype=np.float32),
        retrieval=np.zeros((2, 3), dtype=np.float32),
        predicted=np.zeros((2, 3), dtype=np.float32),
    )
    held_users, held_items = np.array([10, 10, 11]), np.array([7, 4, 9])
    labels = np.array([1.0, 0.25, 0.8], dtype=np.float32)
    config = RankerConfig(low_rating_gain=0.3)
    gains = gains_of(found, np.array([10, 11]), held_users, held_items, labels, config, 0.75)
    assert np.allclose(gains, [[0.3, 1.0, 0.0], [0.0, 0.0, 1.0]])


def test_the_ranker_learns_the_informative_feature() -> None:
    rng = np.random.default_rng(0)
    n, c = 200, 12
    features = rng.normal(size=(n, c, len(FEATURES))).astype(np.float32)
    best = features[:, :, 2].argmax(axis=1)  # the positive is where feature 2 peaks
    gains = np.zeros((n, c), dtype=np.float32)
    gains[np.arange(n), best] = 1.0
    rows = np.tile(np.arange(c), (n, 1))
    zeros = np.zeros((n, c), dtype=np.float32)
    ranker = fit_ranker(Candidates(rows, features, zeros, zeros), gains, RankerConfig())
    assert int(np.argmax(ranker.weights)) == 2
    assert ranker.weights[2] > 3 * np.abs(np.delete(ranker.weights, 2)).max()
    again = Ranker.from_dict(ranker.to_dict(), "ranker.json")
    assert np.array_equal(again.weights, ranker.weights)
    with pytest.raises(ArtifactError, match=r"ranker\.json"):
        Ranker.from_dict({**ranker.to_dict(), "weights": [1.0]}, "ranker.json")


def test_two_tower_signal_is_standardised_over_the_catalogue() -> None:
    model = MultiTaskModel(3, 30, ModelConfig(embedding_dim=4, head_layers=(4,)), seed=1)
    with torch.inference_mode():
        items = model.embed_items().numpy()
        users = model.embed_users().numpy()
    counts = np.arange(30, dtype=np.int64)
    stage = StageOne(model, ExactIndex(items), None, counts)
    queries = Queries(users, np.arange(3), np.array([0, 1, 1, 3]), np.array([5, 6, 7]))
    found = candidates(stage, queries, per_source=8)
    scores = users @ items.T
    for u in range(3):
        valid = found.rows[u] >= 0
        expected = (scores[u] - scores[u].mean()) / scores[u].std()
        got = found.features[u, valid, FEATURES.index("two_tower")]
        assert got == pytest.approx(expected[found.rows[u, valid]], abs=1e-4)
        assert not set(found.rows[u, valid]) & set(queries.history(u))  # history left out


def test_carve_partitions_the_training_rows() -> None:
    n = 1000
    rows = EncodedInteractions(
        torch.arange(n) % 37, torch.arange(n), torch.rand(n, generator=torch.Generator())
    )
    fit, held = carve(rows, 0.2, seed=3)
    assert len(fit) + len(held) == n
    assert set(fit.item.tolist()).isdisjoint(held.item.tolist())
    assert 150 < len(held) < 250
    again, _ = carve(rows, 0.2, seed=3)
    assert torch.equal(again.item, fit.item)


def test_the_ranker_never_sees_a_test_row(tiny_dir: Path) -> None:
    ds = read_grouplens_dir(tiny_dir)
    prepared = prepare(ds, HISTORY, CONFIG)
    ranker = fit_stage_one(prepared, RANKER).ranker
    # other test labels, other test items: the ranker must come out bit for bit the same
    test = prepared.test
    scrambled = EncodedInteractions(test.user, test.item.flip(0), 1.0 - test.label)
    other = fit_stage_one(dataclasses.replace(prepared, test=scrambled), RANKER).ranker
    assert np.array_equal(ranker.weights, other.weights)
    assert ranker.correction == other.correction  # its rating correction's weight too
    assert np.any(ranker.weights != 0)


def test_the_ranker_fits_on_at_most_max_users(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mtrec.pipeline.stages

    prepared = prepare(read_grouplens_dir(tiny_dir), HISTORY, CONFIG)
    lists: list[int] = []
    real_fit = mtrec.pipeline.stages.fit_ranker

    def counting(found: Candidates, *args: object) -> Ranker:
        lists.append(len(found.rows))
        return real_fit(found, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(mtrec.pipeline.stages, "fit_ranker", counting)
    _, held = carve(prepared.train, RANKER.resolved(len(prepared.train)).holdout or 0, CONFIG.seed)
    n_held = len(np.unique(held.user.numpy()))
    assert n_held > 3
    whole = fit_stage_one(prepared, RANKER).ranker
    every = fit_stage_one(prepared, dataclasses.replace(RANKER, max_users=0)).ranker
    assert np.array_equal(every.weights, whole.weights) and every.correction == whole.correction
    small = dataclasses.replace(RANKER, max_users=3)
    sampled = fit_stage_one(prepared, small).ranker
    again = fit_stage_one(prepared, small).ranker
    # each user twice: as a known user and as a new user known by the history
    assert lists == [2 * n_held, 2 * n_held, 2 * 3, 2 * 3]
    assert np.array_equal(sampled.weights, again.weights)  # the sample is seeded
    assert not np.array_equal(sampled.weights, whole.weights)


def test_saved_ranker_round_trips_and_serves(tiny_dir: Path, tmp_path: Path) -> None:
    ds = read_grouplens_dir(tiny_dir)
    saved = train_model(ds, HISTORY, CONFIG, ranker=RANKER)
    assert saved.ranker is not None and saved.item_item is not None
    served = saved.metrics["served"]
    assert 0 < served["recall"] <= 1 and served["k"] == 10
    names = [r["name"] for r in saved.metrics["lists"]]
    assert names[0] == "served" and {"retrieval", "popularity", "EASE"} <= set(names)
    path = artifact.save(saved, tmp_path / "model")
    assert (path / "ranker.json").exists() and (path / "item_item.safetensors").exists()
    loaded = artifact.load(path)
    # exactly what was evaluated is served: EASE's weights come out of PyTorch in Fortran
    # order, which safetensors once wrote as their transpose
    assert loaded.item_item is not None
    assert not np.array_equal(saved.item_item, saved.item_item.T)
    assert np.array_equal(loaded.item_item, saved.item_item)
    users = saved.vocabs.users.id_array.tolist()
    before = [[r.item_id for r in x.items] for x in Recommender(saved).recommend_many(users, k=10)]
    after = [[r.item_id for r in x.items] for x in Recommender(loaded).recommend_many(users, k=10)]
    assert after == before
    seen = set(Recommender.load(path).seen(3))
    assert not seen & set(after[users.index(3)])


def test_a_new_user_gets_their_clusters_items(tiny_dir: Path) -> None:
    # planted: users 1-30 like items 1-20, users 31-60 like items 21-40
    ds = read_grouplens_dir(tiny_dir)
    config = dataclasses.replace(CONFIG, epochs=20)
    rec = Recommender(train_model(ds, HISTORY, config, ranker=RANKER))
    for history, cluster in (([(1, 5.0), (2, 5.0), (3, 4.0)], range(1, 21)),
                             ([(25, 5.0), (30, 4.0), (33, None)], range(21, 41))):  # fmt: skip
        result = rec.recommend_for_history(history, k=5)
        assert result.user_id is None and not result.fallback
        got = [r.item_id for r in result.items]
        assert all(item in cluster for item in got), got
        assert not {item for item, _ in history} & set(got)


def test_history_entries_are_checked(tiny_dir: Path) -> None:
    ds = read_grouplens_dir(tiny_dir)
    rec = Recommender(train_model(ds, HISTORY, CONFIG, ranker=RANKER))
    with pytest.raises(ConfigError, match=r"entry 2 \(7\): rating 9"):
        rec.recommend_for_history([(1, 5.0), (7, 9.0)])
    unknown = rec.recommend_for_history([(1, 5.0), (999, 4.0), ("x", None)], k=3)
    assert unknown.notice is not None and "999" in unknown.notice and "'x'" in unknown.notice
    empty = rec.recommend_for_history([], k=3)
    assert empty.fallback and len(empty.items) == 3
    plain = Recommender(train_model(ds, ModelConfig(embedding_dim=8, head_layers=(16,)), CONFIG))
    with pytest.raises(ConfigError, match="does not read histories"):
        plain.recommend_for_history([(1, 5.0)])


def test_history_only_training_rows_drop_the_user_row(tiny_dir: Path) -> None:
    ds = read_grouplens_dir(tiny_dir)
    prepared = prepare(ds, HISTORY, CONFIG)
    model = MultiTaskModel(prepared.n_users, prepared.n_items, HISTORY, seed=0)
    model.set_history(seen_items(prepared.train, prepared.n_users))
    rows = torch.tensor([0, 1])
    alone = torch.tensor([True, False])
    with torch.no_grad():
        mixed = model.embed_users(rows, alone=alone)
        full = model.embed_users(rows)
        history_only = model.embed_history(*_history_of(prepared, 0))
    assert torch.allclose(mixed[1], full[1])
    assert torch.allclose(mixed[0], history_only[0], atol=1e-6)


def _history_of(prepared, user):  # type: ignore[no-untyped-def]
    items, labels = prepared.seen.of(user)
    return torch.from_numpy(items), torch.from_numpy(labels)


def test_item_item_scores_sum_history_rows_either_way() -> None:
    from mtrec.ranking import item_item_rows

    rng = np.random.default_rng(2)
    n_items = 50
    weights = rng.normal(size=(n_items, n_items)).astype(np.float32)
    indptr = np.array([0, 3, 3, 5, 5])  # users 1 and 3 have empty histories
    items = np.array([1, 4, 9, 4, 7])
    got = item_item_rows(weights, indptr, items, exclude_history=False)
    expected = np.stack([weights[[1, 4, 9]].sum(0), np.zeros(n_items),
                         weights[[4, 7]].sum(0), np.zeros(n_items)])  # fmt: skip
    assert np.allclose(got, expected, atol=1e-5)
    left_out = item_item_rows(weights, indptr, items)
    assert np.isneginf(left_out[0, [1, 4, 9]]).all() and np.isneginf(left_out[2, [4, 7]]).all()
    assert np.isfinite(left_out).sum() == got.size - len(items)


def test_known_users_item_item_source_gives_the_candidates_a_request_computes() -> None:
    """Known users' item-item scores, statistics and top lists are computed once; with
    them, every user's candidates and features are those computed from the history, with
    or without a request's blocked rows, other candidate counts, or history kept."""
    from mtrec.features import SeenItems
    from mtrec.ranking import item_item_source, user_queries, with_known_item_item

    rng = np.random.default_rng(3)
    n_users, n_items = 12, 40
    weights = rng.normal(size=(n_items, n_items)).astype(np.float32)
    model = MultiTaskModel(n_users, n_items, ModelConfig(embedding_dim=4, head_layers=(4,)), 0)
    stage = StageOne(model, ExactIndex(model.embed_items().detach().numpy()), weights,
                     rng.integers(1, 9, n_items))  # fmt: skip
    lengths = rng.integers(0, 12, n_users)
    lengths[3] = 0  # an empty history
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.concatenate([np.sort(rng.choice(n_items, n, replace=False)) for n in lengths])
    seen = SeenItems(indptr, items.astype(np.int64), np.full(len(items), 0.5, np.float32))
    known = with_known_item_item(stage, seen, per_source=6)
    assert known.known_item_item is not None and stage.known_item_item is None
    users = np.arange(n_users)
    for per_source, exclude, blocked in [(6, True, None), (6, True, np.array([2, 5])),
                                         (9, True, None), (6, False, None)]:  # fmt: skip
        a, b = (user_queries(s, users, seen, exclude, blocked) for s in (known, stage))
        source = item_item_source(known, a, per_source)
        assert source is not None
        at_history = source.scores[np.repeat(users, lengths), items]
        assert np.isneginf(at_history).all() == exclude  # a history kept: computed, not read
        fast, slow = candidates(known, a, per_source), candidates(stage, b, per_source)
        assert np.array_equal(fast.rows, slow.rows)
        assert np.array_equal(fast.features, slow.features)


def test_new_user_protocol_holds_users_out_and_splits_in_time(tiny_dir: Path) -> None:
    from mtrec.experiments import evaluate_new_users, split_new_users
    from mtrec.features import RatingScale, Vocabs

    ds = read_grouplens_dir(tiny_dir)
    vocabs, scale = Vocabs.from_dataset(ds), RatingScale.of(ds)
    parts = split_new_users(ds, vocabs, scale, 0.1, seed=4)
    n_held = len(parts.history.indptr) - 1
    assert n_held == 6  # 10% of 60 users
    assert len(parts.train) + len(parts.history.items) + len(parts.targets) == len(ds.interactions)
    # each held-out user's history is the earlier half of their rows (planted timestamps
    # grow with the row), the targets the later half; none of their rows train
    stamps = {(int(u), int(i)): int(t) for u, i, t in zip(*(
        vocabs.users.rows(ds.interactions.user), vocabs.items.rows(ds.interactions.item),
        ds.interactions.timestamp), strict=True)}  # fmt: skip
    held_rows = set(np.unique(ds.interactions.user)) - set(
        vocabs.users.ids(np.unique(parts.train.user.numpy())).tolist()
    )
    assert len(held_rows) == n_held
    for position in range(n_held):
        early, _ = parts.history.of(position)
        later = parts.targets.item[parts.targets.user == position].numpy()
        assert len(early) == len(later) == 10  # 20 ratings each
        user = vocabs.users.row(sorted(held_rows)[position])
        assert max(stamps[(user, int(i))] for i in early) < min(
            stamps[(user, int(i))] for i in later
        )
    reports = evaluate_new_users(ds, HISTORY, CONFIG, RANKER, fraction=0.1)
    assert [r.name for r in reports] == ["served", "popularity", "EASE"]
    assert all(r.n_users > 0 for r in reports)


def test_history_items_never_come_back_from_a_small_catalogue() -> None:
    n_items = 6
    model = MultiTaskModel(2, n_items, ModelConfig(embedding_dim=4, head_layers=(4,)), seed=3)
    weights = np.ones((n_items, n_items), dtype=np.float32)
    with torch.inference_mode():
        items = model.embed_items().numpy()
    stage = StageOne(model, ExactIndex(items), weights, np.ones(n_items, dtype=np.int64))
    history = np.array([0, 1, 2, 4])
    queries = Queries(stage.user_embeddings[:1], np.array([0]), np.array([0, 4]), history)
    found = candidates(stage, queries, per_source=10)  # more than the catalogue holds
    assert set(found.rows[0][found.rows[0] >= 0].tolist()) == {3, 5}


def test_split_rating_head_equals_the_whole_one() -> None:
    config = ModelConfig(embedding_dim=6, head_layers=(12, 5), rating_biases=True, dropout=0.3)
    model = MultiTaskModel(4, 9, config, seed=8)
    with torch.no_grad():
        model.user_bias.weight.uniform_(-1, 1)
        model.item_bias.weight.uniform_(-1, 1)
    model.eval()
    users = torch.tensor([0, 3, -1])  # -1: a user known only by a history (no bias)
    user_emb = torch.randn(3, 6, generator=torch.Generator().manual_seed(0))
    items = torch.tensor([[1, 2], [8, 0], [4, 4]])
    with torch.no_grad():
        head = model.split_head(model.embed_items())
        assert head is not None
        split = head.predict(user_emb.numpy(), users.numpy(), items.numpy())
        whole = model.predict_rating(
            user_emb.repeat_interleave(2, 0), model.embed_items(items.reshape(-1)),
            users.repeat_interleave(2), items.reshape(-1),
        ).reshape(3, 2)  # fmt: skip
    assert split.dtype == np.float32
    assert np.allclose(split, whole.numpy(), atol=1e-5)
    dot = MultiTaskModel(4, 9, dataclasses.replace(config, dot_in_head=True), seed=8)
    assert dot.split_head(dot.embed_items()) is None  # cannot be split: the full path


def test_a_history_model_without_ranker_serves_histories_by_rating(tiny_dir: Path) -> None:
    ds = read_grouplens_dir(tiny_dir)
    rec = Recommender(train_model(ds, HISTORY, CONFIG))  # no ranking stage
    assert rec.two_stage is None
    result = rec.recommend_for_history([(1, 5.0), (2, 4.0)], k=6)
    stars = [r.stars for r in result.items]
    assert len(stars) == 6 and stars == sorted(stars, reverse=True)  # by predicted rating
    assert not {1, 2} & {r.item_id for r in result.items}
    assert all(r.rank_score is None for r in result.items)  # no ranker: no ranker score


def test_a_list_shows_the_ranker_score_that_orders_it(
    tiny_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Issue 31: `mtrec recommend`'s order matched no column it showed (#6 3.91 stars,
    #7 4.12): the ranker's score, which orders the list, is shown beside the others."""
    from cli_run import run_cli

    saved = train_model(read_grouplens_dir(tiny_dir), HISTORY, CONFIG, ranker=RANKER)
    rec = Recommender(saved)
    for result in (rec.recommend(3, k=6), rec.recommend_for_history([(1, 5.0)], k=6)):
        scores = [r.rank_score for r in result.items]
        assert None not in scores and scores == sorted(scores, reverse=True)  # type: ignore[type-var]
        assert result.to_dict()["items"][0]["rank_score"] == scores[0]
    frame = rec.recommend(3, k=6).to_frame("arrow")
    assert frame.column("rank_score").to_pylist() == [
        r.rank_score for r in rec.recommend(3, k=6).items
    ]
    model = artifact.save(saved, tmp_path / "model")
    assert run_cli(["recommend", "-m", str(model), "-u", "3", "-k", "4"]) == 0
    shown = capsys.readouterr().out
    assert "ordered by the ranker's score" in shown and "ranker score" in shown


def test_train_fits_the_ranker_beside_the_model_to_the_same_result(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mtrec import pipeline

    ds = read_grouplens_dir(tiny_dir)
    dropped = dataclasses.replace(HISTORY, dropout=0.2)  # every kind of draw
    together: list[int] = []
    real = pipeline.stages.side_by_side

    def spy(jobs, at_once=True):  # type: ignore[no-untyped-def]
        results, n = real(jobs, at_once)
        together.append(n)
        return results, n

    monkeypatch.setattr(pipeline.stages, "side_by_side", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        refit = dataclasses.replace(RANKER, refit=True)  # a second model, trained to serve
        beside = train_model(ds, dropped, CONFIG, ranker=refit)
        monkeypatch.setattr(pipeline.stages, "SIDE_BY_SIDE_MAX_ROWS", 0)  # one after the other
        after = train_model(ds, dropped, CONFIG, ranker=refit)
    finally:
        torch.set_num_threads(before)
    assert together == [2, 1]
    for name, weights in beside.model.state_dict().items():
        assert torch.equal(weights, after.model.state_dict()[name]), name
    assert beside.ranker is not None and after.ranker is not None
    # the ranker's fit: a matrix-vector product whose bits depend on the thread count on
    # some CPUs (one thread beside, two after; Intel Xeon: the 8th digit); the lists agree
    ours, theirs = beside.ranker.to_dict(), after.ranker.to_dict()
    np.testing.assert_allclose(ours.pop("weights"), theirs.pop("weights"), rtol=1e-5, atol=1e-6)
    assert ours == theirs
    assert beside.metrics["lists"] == after.metrics["lists"]


def test_a_second_model_serves_small_logs_and_stage_one_large_ones() -> None:
    """RankerConfig.refit None: a second model where the training rows are few (it is
    cheap there), stage one itself beyond ``REFIT_MAX_ROWS``; the carve follows (a fifth
    beside a second model, 5% where stage one serves) unless given."""
    from mtrec.config import REFIT_MAX_ROWS

    auto = RankerConfig()
    small, large = auto.resolved(REFIT_MAX_ROWS), auto.resolved(REFIT_MAX_ROWS + 1)
    assert (small.refit, small.holdout, large.refit, large.holdout) == (True, 0.2, False, 0.05)
    given = RankerConfig(refit=False, holdout=0.3).resolved(10)
    assert (given.refit, given.holdout) == (False, 0.3)


def test_stage_one_is_the_served_model_where_no_second_model_trains(tiny_dir: Path) -> None:
    """refit=False: one model trains, and it is the ranking stage's stage one, bit for bit,
    its user tower reading every training row (the carved-out share too)."""
    ds = read_grouplens_dir(tiny_dir)
    one = dataclasses.replace(RANKER, refit=False, min_gain=0.0)  # every epoch runs
    saved = train_model(ds, HISTORY, CONFIG, ranker=one)
    prepared = prepare(ds, HISTORY, CONFIG)
    stage = fit_stage_one(prepared, one)
    served = saved.model.state_dict()
    for name, weights in stage.model.state_dict().items():
        if not name.startswith("history_"):  # the histories: stage one's rows, then all
            assert torch.equal(weights, served[name]), name
    assert torch.equal(saved.model.history_items, torch.as_tensor(prepared.seen.items))
    assert len(stage.model.history_items) < len(saved.model.history_items)
    assert saved.ranker is not None and saved.ranker.config.holdout == 0.05
    np.testing.assert_allclose(saved.ranker.weights, stage.ranker.weights, rtol=1e-5)


def test_the_evaluation_reads_the_ranking_stages_ease_weights(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The EASE list of an evaluation is the ranking stage's item-item weights where they
    are EASE's of the same lambda over the same histories (not solved again), and its
    own solve where the lambda differs: the same lists either way."""
    from mtrec.evaluate import lists

    ds = read_grouplens_dir(tiny_dir)
    saved = train_model(ds, HISTORY, CONFIG, ranker=RANKER)
    rec = Recommender(saved)
    users = np.arange(10)
    solved = lists.user_lists(rec.model, rec.two_stage, saved.seen, users, ease_lambda=499.0)
    reused = lists.user_lists(rec.model, rec.two_stage, saved.seen, users, ease_lambda=500.0)
    assert np.array_equal(solved["EASE"], reused["EASE"])  # lambda 499 ranks as 500 here

    def no_solve(*args: object, **kwargs: object) -> None:
        raise AssertionError("EASE solved again")

    monkeypatch.setattr(lists, "ease_weights", no_solve)
    again = lists.user_lists(rec.model, rec.two_stage, saved.seen, users, ease_lambda=500.0)
    assert np.array_equal(again["EASE"], reused["EASE"])
    with pytest.raises(AssertionError, match="solved again"):
        lists.user_lists(rec.model, rec.two_stage, saved.seen, users, ease_lambda=499.0)


def test_a_batch_ranks_in_bounded_passes_to_the_same_lists(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 34: a 943-user batch with 1,000 candidates gathered every candidate at once
    (482 MB above the service's size; eight at once, 4.5 GB). Passes of at most
    ``CANDIDATE_ROWS`` users x candidates give the same lists (the scores and ratings
    shown to float32 rounding: products over fewer rows round differently on some CPUs,
    e.g. an AVX2-only AMD EPYC)."""
    from mtrec.recommend import recommender

    def shown(lists: list) -> list:  # type: ignore[type-arg]
        return [r.item_id for rs in lists for r in rs.items]

    def scores(lists: list) -> np.ndarray:  # type: ignore[type-arg]
        return np.array(
            [(r.stars, r.rank_score or 0.0, r.retrieval_score) for rs in lists for r in rs.items]
        )

    rec = Recommender(train_model(read_grouplens_dir(tiny_dir), HISTORY, CONFIG, ranker=RANKER))
    users = rec.vocabs.users.id_array[:25].tolist()
    for ranking in (True, False):
        whole = rec.recommend_many(users, k=5, candidates=20, ranking=ranking)
        monkeypatch.setattr(recommender, "CANDIDATE_ROWS", 40)  # two users a pass
        passes = rec.recommend_many(users, k=5, candidates=20, ranking=ranking)
        monkeypatch.setattr(recommender, "CANDIDATE_ROWS", 1_000_000)
        assert shown(passes) == shown(whole) and len(shown(whole)) == 125
        np.testing.assert_allclose(scores(passes), scores(whole), atol=1e-5)
