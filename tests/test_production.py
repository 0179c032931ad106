"""Production use: train on every row, evaluate on a test file of its own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_run import run_cli as _run

import mtrec
from mtrec import artifact
from mtrec.config import ModelConfig, TrainConfig
from mtrec.data import ColumnMap, Dataset, load_interactions
from mtrec.data.movielens import read_grouplens_dir
from mtrec.errors import ConfigError, DataError
from mtrec.pipeline import evaluate_saved, evaluate_saved_on, prepare, train_model
from mtrec.recommend import FRAME_COLUMNS, Recommender

SMALL = ModelConfig(embedding_dim=8, head_layers=(16,))
CONFIG = TrainConfig(epochs=2, batch_size=64, shuffle=True, seed=3)


def _write_csv(path: Path, rows: np.ndarray) -> Path:
    lines = ["user_id,item_id,rating,timestamp"]
    lines += [",".join(map(str, r)) for r in rows.tolist()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _log_rows(ds: Dataset) -> np.ndarray:
    ev = ds.interactions
    return np.stack([ev.user, ev.item, ev.rating.astype(np.int64), ev.timestamp], axis=1)


def test_holdout_none_trains_on_every_row_and_recommends_nothing_rated(tiny_dir: Path) -> None:
    ds = read_grouplens_dir(tiny_dir)
    saved = train_model(ds, SMALL, CONFIG, test_fraction=0.0)
    assert saved.data["split"]["n_train"] == len(ds.interactions)
    assert saved.data["split"]["n_test"] == 0
    assert saved.metrics["evaluation"].startswith("none")
    assert "served" not in saved.metrics and "top_k_accuracy" not in saved.metrics
    rec = Recommender(saved)
    ev = ds.interactions
    for user in np.unique(ev.user):
        rated = set(ev.item[ev.user == user].tolist())
        got = {r.item_id for r in rec.recommend(int(user), k=15).items}
        assert got and not got & rated, user  # nothing rated anywhere in the log
    # popularity (the unknown-user fallback) counts every row too
    liked = np.bincount(ev.item[ev.rating >= 4], minlength=saved.popularity.shape[0] + 1)
    assert saved.popularity.sum() == liked.sum()
    with pytest.raises(ConfigError, match="holdout none"):
        evaluate_saved(saved, ds)


def test_holdout_none_can_record_a_held_out_estimate(tiny_dir: Path) -> None:
    ds = read_grouplens_dir(tiny_dir)
    deployed = train_model(ds, SMALL, CONFIG, test_fraction=0.0, estimate_fraction=0.2)
    held_out = train_model(ds, SMALL, CONFIG, test_fraction=0.2)
    estimate = deployed.metrics["estimate"]
    assert estimate["test_fraction"] == 0.2
    for key in ("top_k_accuracy", "rmse", "served"):
        assert estimate[key] == held_out.metrics[key], key
    with pytest.raises(ConfigError, match="test_fraction 0"):
        train_model(ds, SMALL, CONFIG, estimate_fraction=0.2)


def test_a_test_file_of_its_own_counts_unseen_ids(tiny_dir: Path, tmp_path: Path) -> None:
    rows = _log_rows(read_grouplens_dir(tiny_dir))
    test_rows = rows[::5]
    train_rows = np.delete(rows, np.s_[::5], axis=0)
    unseen = np.array([[9001, 1, 4, 0], [9001, 2, 5, 0], [9002, 3, 1, 0], [1, 7777, 4, 0]])
    train_file = _write_csv(tmp_path / "base.csv", train_rows)
    test_file = _write_csv(tmp_path / "test.csv", np.concatenate([test_rows, unseen]))
    train, test = load_interactions(train_file), load_interactions(test_file)
    prepared = prepare(train, SMALL, CONFIG, test=test)
    assert len(prepared.train) == len(train_rows)  # every training row trains
    assert len(prepared.test) == len(test_rows)  # the known users' rows...
    # ...the new users' rows on known items, answered by the fallback list...
    assert prepared.new_user_test is not None and len(prepared.new_user_test) == 3
    assert set(prepared.new_user_test.user.tolist()) == {prepared.n_users, prepared.n_users + 1}
    assert prepared.unseen is not None  # ...and the unknown item's row left out: all counted
    said = {"rows": 1, "users": 2, "items": 1, "new_user_rows": 3}
    said |= {"cold_item_rows": 0, "cold_items": 0}  # no catalogue: every known item trained
    assert prepared.unseen.to_dict() == said
    saved = train_model(train, SMALL, CONFIG, test=test)
    assert saved.metrics["unseen_test"] == said
    assert saved.metrics["evaluated_users"]["without_training_rows"] == 2
    # 9001 liked two items (9002 none): one user of each list's fell back, in every list
    assert {r["fell_back"] for r in saved.metrics["lists"]} == {1}
    assert saved.metrics["n_test"] == len(test_rows)
    assert saved.data["split"]["kind"] == "given"
    # a saved model evaluated on the same file later gives what training reported
    again = evaluate_saved_on(saved, test)
    assert again.report.top_k_accuracy == saved.metrics["top_k_accuracy"]
    assert again.unseen.rows == 1
    assert [(r.name, r.recall, r.ndcg, r.fell_back) for r in again.lists] == [
        (r["name"], r["recall"], r["ndcg"], r["fell_back"]) for r in saved.metrics["lists"]
    ]


def test_cli_train_on_one_file_and_evaluate_on_another(tiny_dir: Path, tmp_path: Path) -> None:
    rows = _log_rows(read_grouplens_dir(tiny_dir))
    base = _write_csv(tmp_path / "base.csv", np.delete(rows, np.s_[::4], axis=0))
    test = _write_csv(tmp_path / "test.csv", np.concatenate([rows[::4], [[5555, 1, 3, 0]]]))
    model = tmp_path / "model"
    args = ["--preset", "reference", "--epochs", "1", "--batch-size", "64", "-q"]
    train = ["train", "--interactions", str(base), "-o", str(model), *args]
    assert _run([*train, "--test-interactions", str(test)]) == 0
    metrics = json.loads((model / "metrics.json").read_text())
    counts = {"rows": 0, "users": 1, "items": 0, "new_user_rows": 1}
    assert metrics["unseen_test"] == counts | {"cold_item_rows": 0, "cold_items": 0}
    assert _run([*train, "--test-interactions", str(test), "--holdout", "0.1"]) == 3
    deployed = tmp_path / "deployed"
    deploy = ["train", "--interactions", str(base), "-o", str(deployed), *args]
    assert _run([*deploy, "--holdout", "none"]) == 0
    assert artifact.load(deployed).data["split"]["n_test"] == 0
    assert _run(["evaluate", "-m", str(deployed), "--test-interactions", str(test)]) == 0
    assert _run(["train", "--holdout", "1.5", *args]) == 3


def _same_rows(a: Dataset, b: Dataset) -> None:
    for column in ("user", "item", "rating", "timestamp", "user_names", "item_names"):
        left, right = getattr(a.interactions, column), getattr(b.interactions, column)
        assert (left is None) == (right is None), column
        if left is not None:
            assert np.array_equal(left, right), column


@pytest.mark.parametrize("ids", ["integer", "string"])
def test_dataframes_load_row_for_row_as_the_file(ids: str, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    import pyarrow as pa

    strings = ids == "string"
    columns = {
        "user_id": ["7", "007", "12", "7", "u3"] if strings else [7, 8, 12, 7, 3],
        "item_id": ["a", "b", "a", "c", "b"] if strings else [5, 6, 5, 9, 6],
        "rating": [1.0, 2.0, 3.5, 4.0, 5.0],
        "timestamp": [1000, 1001, 1002, 1003, 1004],
    }
    csv = tmp_path / "log.csv"
    rows = zip(*columns.values(), strict=True)
    csv.write_text("user_id,item_id,rating,timestamp\n" + "".join(
        ",".join(map(str, r)) + "\n" for r in rows
    ))  # fmt: skip
    from_file = load_interactions(csv)
    if strings:  # "007" and "7" stay two users, in a file and in every frame
        assert from_file.interactions.user_names is not None
        assert len(from_file.interactions.user_names) == 4
    frames = {"pandas": pd.DataFrame(columns), "polars": pl.DataFrame(columns)}
    for kind, frame in {**frames, "arrow": pa.table(columns)}.items():
        loaded = load_interactions(frame)
        _same_rows(loaded, from_file)
        assert loaded.has_ratings, kind


def test_a_bad_frame_row_is_named_by_row_and_column() -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"user_id": [1, 2, 3], "item_id": [4, 5, 6], "rating": [1, "x", 3]})
    with pytest.raises(DataError, match=r"DataFrame, field 'rating': row 1: bad value 'x'"):
        load_interactions(frame)
    kept = load_interactions(frame, bad_rows="skip")
    assert kept.skipped == {"rating": 1} and len(kept.interactions) == 2
    frame = pd.DataFrame({"user_id": [1, None], "item_id": [4, 5]})
    with pytest.raises(DataError, match=r"field 'user_id': row 1: missing value"):
        load_interactions(frame)
    with pytest.raises(ConfigError, match="DataFrame or a pyarrow Table"):
        load_interactions([(1, 2)])


def test_fit_evaluate_recommend_save_from_frames(tiny_dir: Path, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    rows = _log_rows(read_grouplens_dir(tiny_dir))
    names = ["user", "movie", "stars", "ts"]
    train = pd.DataFrame(np.delete(rows, np.s_[::5], axis=0), columns=names)
    test = pd.DataFrame(rows[::5], columns=names)
    columns = ColumnMap("user", "movie", "stars", "ts")
    small = {"embedding_dim": 8, "head_layers": (16,), "batch_size": 64, "seed": 3}
    model = mtrec.fit(train, "reference", columns=columns, test=test, epochs=2, **small)
    assert model.train_config.epochs == 2 and model.model_config.embedding_dim == 8
    assert model.metrics["n_test"] == len(test)
    measured = model.evaluate(test, columns)
    assert measured["top_k_accuracy"] == model.metrics["top_k_accuracy"]
    assert measured["served"] == model.metrics["served"]
    counts = {"rows": 0, "users": 0, "items": 0, "new_user_rows": 0}
    assert measured["unseen_test"] == counts | {"cold_item_rows": 0, "cold_items": 0}
    lists = measured.to_frame()  # issue 31: the lists as a table, not only a nested dict
    served = lists.set_index("list").loc["served"]
    assert served["recall"] == measured["served"]["recall"] and served["k"] == 10
    assert served["recall_low"] <= served["recall"] <= served["recall_high"]
    assert list(lists["list"]) == [r["name"] for r in measured["lists"]]
    assert measured.to_frame("arrow").num_rows == len(measured["lists"])
    frame = mtrec.to_frame(model.recommend_many([1, 2, 999], k=3))
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert frame["user_id"].tolist() == [1] * 3 + [2] * 3 + [999] * 3
    assert frame["fallback"].tolist() == [False] * 6 + [True] * 3
    assert frame["rank"].tolist() == [1, 2, 3] * 3
    first = model.recommend(1, k=3)
    assert frame["item_id"].tolist()[:3] == [r.item_id for r in first.items]
    assert first.to_frame("arrow").num_rows == 3
    loaded = mtrec.load_model(model.save(tmp_path / "model"))
    assert loaded.recommend(1, k=3) == first
    # no holdout: nothing measured, every row trains
    deployed = mtrec.fit(train, "reference", columns=columns, holdout=None, epochs=1, **small)
    assert deployed.metrics["evaluation"].startswith("none")


def _weights(model: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(model / "model.safetensors"))


def _same_weights(a: Path, b: Path) -> bool:
    left, right = _weights(a), _weights(b)
    return left.keys() == right.keys() and all(np.array_equal(left[k], right[k]) for k in left)


def test_config_files_round_trip(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tiny_dir), "-q"]
    flags = ["--preset", "tuned", "--epochs", "2", "--embedding-dim", "8", "--batch-size", "64"]
    flags += ["--precision", "fp32"]  # auto decides by timing: pinned for bit-identical runs
    first, again, printed = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert _run(["train", *data, *flags, "--seed", "5", "--holdout", "0.25", "-o", str(first)]) == 0
    # the saved config.json, fed back, trains the same model on the same split
    assert _run(["train", *data, "--config", str(first / "config.json"), "-o", str(again)]) == 0
    assert _same_weights(first, again)
    assert artifact.load(again).data["split"]["test_fraction"] == 0.25
    capsys.readouterr()
    # --print-config prints a complete config; it trains the same model too
    assert _run(["train", *data, *flags, "--seed", "5", "--holdout", "0.25", "--print-config"]) == 0
    effective = json.loads(capsys.readouterr().out)
    assert effective["train"]["epochs"] == 2 and effective["model"]["embedding_dim"] == 8
    assert effective["train"]["positive_min_rating"] == 0.75  # tuned's, spelled out
    assert effective["ranker"] is False  # tuned has no ranking stage
    (tmp_path / "effective.json").write_text(json.dumps(effective))
    assert _run(["train", "--config", str(tmp_path / "effective.json"), "-o", str(printed)]) == 0
    assert _same_weights(first, printed)


def test_a_toml_config_under_flags(tiny_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        'preset = "reference"\n'
        "[model]\nembedding_dim = 8\nhead_layers = [16]\n"
        "[train]\nepochs = 3\nbatch_size = 64\nseed = 9\n"
        f'[data]\ndata_dir = "{tiny_dir}"\nholdout = "none"\n'
    )
    out = tmp_path / "model"
    assert _run(["train", "--config", str(config), "--epochs", "1", "-q", "-o", str(out)]) == 0
    saved = artifact.load(out)
    assert saved.train_config.epochs == 1  # the flag over the file
    assert saved.train_config.seed == 9 and saved.model_config.head_layers == (16,)
    assert saved.data["split"]["n_test"] == 0  # [data] holdout = "none"
    assert saved.ranker is None  # reference serves without a ranking stage
    run = _run(["train", "--config", str(config), "--holdout", "0.2", "-q", "-o", str(out)])
    assert run == 0 and artifact.load(out).data["split"]["test_fraction"] == 0.2


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[train]\nepochz = 3\n", "[train] unknown key(s) ['epochz']"),
        ("[model]\ndropout = 2.0\n", "ModelConfig.dropout"),
        ("[train]\noptimizer = 'sgd'\n", "TrainConfig.optimizer"),
        ("[data]\nuser_col = 5\n", "[data] user_col"),
        ("[ranker]\ncandidatez = 5\n", "candidatez"),
        ("colour = 'red'\n", "unknown key(s) ['colour']"),
        ("preset = 'best'\n", "preset"),
        ("[train\n", "invalid TOML"),
    ],
)
def test_config_mistakes_name_the_key(
    text: str, named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "run.toml"
    config.write_text(text)
    assert _run(["train", "--config", str(config), "--print-config"]) == 3
    assert named in capsys.readouterr().err


def _halves(tiny_dir: Path) -> tuple[Dataset, Dataset]:
    """The tiny log split in two by time (its users rate in turn: the later ones are new),
    with items 36.. held back for the second part."""
    rows = _log_rows(read_grouplens_dir(tiny_dir))
    late = (rows[:, 0] > 50) | (rows[:, 1] > 35) | (rows[:, 3] >= np.median(rows[:, 3]))
    return (
        load_interactions(_table(rows[~late])),
        load_interactions(_table(rows[late])),
    )


def _table(rows: np.ndarray) -> object:
    import pyarrow as pa

    names = ["user_id", "item_id", "rating", "timestamp"]
    return pa.table({name: rows[:, i] for i, name in enumerate(names)})


def test_warm_start_keeps_old_rows_and_appends_new_ids(tiny_dir: Path, tmp_path: Path) -> None:
    from mtrec.pipeline import build_model
    from mtrec.warm import extended_vocabs, inherit

    old_data, new_data = _halves(tiny_dir)
    old = train_model(old_data, SMALL, CONFIG, test_fraction=0.0)
    vocabs = extended_vocabs(old, new_data, new_data.interactions)
    n_users, n_items = len(old.vocabs.users), len(old.vocabs.items)
    assert vocabs.users.id_array[:n_users].tolist() == old.vocabs.users.id_array.tolist()
    assert vocabs.items.id_array[:n_items].tolist() == old.vocabs.items.id_array.tolist()
    appended = vocabs.users.id_array[n_users:].tolist()
    assert appended and appended == sorted(appended)  # only the new ids, at the end
    assert not set(appended) & set(old.vocabs.users.id_array.tolist())
    assert vocabs.users.rows(appended).tolist() == list(range(n_users, len(vocabs.users)))
    # before fine-tuning: every old weight bit for bit, new rows fresh
    fresh = build_model(new_data, vocabs, old.model_config, 7)
    before_new_rows = fresh.user_embedding.weight[n_users:].clone()
    inherit(fresh, old.model)
    assert torch.equal(fresh.user_embedding.weight[:n_users], old.model.user_embedding.weight)
    assert torch.equal(fresh.item_embedding.weight[:n_items], old.model.item_embedding.weight)
    assert torch.equal(fresh.user_embedding.weight[n_users:], before_new_rows)
    for name, tensor in old.model.rating_head.state_dict().items():
        assert torch.equal(fresh.rating_head.state_dict()[name], tensor), name
    # after: a model that knows both, excludes what each user rated in either part
    warm = train_model(new_data, SMALL, CONFIG, test_fraction=0.0, init_from=old)
    assert warm.data["warm_start"]["users"] == [n_users, len(vocabs.users)]
    rec = Recommender(warm)
    both = np.concatenate([_log_rows(old_data), _log_rows(new_data)])
    for user in (3, 55):
        rated = set(both[both[:, 0] == user, 1].tolist())
        got = {r.item_id for r in rec.recommend(user, k=10).items}
        assert got and not got & rated
    # saved and loaded, a warm-started vocabulary keeps its order
    loaded = Recommender.load(artifact.save(warm, tmp_path / "warm"))
    assert loaded.vocabs.users.id_array.tolist() == vocabs.users.id_array.tolist()
    assert loaded.recommend(55, k=5) == rec.recommend(55, k=5)


def test_replayed_rows_train_the_rating_head_only(tiny_dir: Path) -> None:
    from mtrec.features import encode
    from mtrec.warm import extended_vocabs, with_replay

    old_data, new_data = _halves(tiny_dir)
    old = train_model(old_data, SMALL, CONFIG, test_fraction=0.0)
    vocabs = extended_vocabs(old, new_data, new_data.interactions)
    new_rows = encode(new_data.interactions, vocabs, old.scale)
    assert with_replay(old.seen, new_rows, 0.0, 3) is new_rows
    rows = with_replay(old.seen, new_rows, 0.5, 3)
    replayed = int(rows.rating_only.sum())
    assert len(rows) == len(new_rows) + replayed and 0 < replayed < len(old.seen.as_rows())
    key = (rows.user * 10_000 + rows.item)[~rows.rating_only]
    assert sorted(key.tolist()) == sorted((new_rows.user * 10_000 + new_rows.item).tolist())
    assert rows.subset(torch.arange(4)).rating_only.tolist() == rows.rating_only[:4].tolist()
    assert with_replay(old.seen, new_rows, 0.5, 3).rating_only.equal(rows.rating_only)  # seeded


def test_an_implicit_warm_start_replays_nothing(tiny_dir: Path) -> None:
    """Replayed rows train the rating head only: without ratings there is none to train."""
    import pyarrow as pa

    rows = _log_rows(read_grouplens_dir(tiny_dir))
    late = rows[:, 3] >= np.median(rows[:, 3])

    def implicit(part: np.ndarray) -> Dataset:
        return load_interactions(pa.table({"user_id": part[:, 0], "item_id": part[:, 1]}))

    old = train_model(implicit(rows[~late]), SMALL, CONFIG, test_fraction=0.0)
    new = implicit(rows[late])
    prepared = prepare(new, SMALL, CONFIG, test_fraction=0.0, init_from=old, replay=1.0)
    assert prepared.train.rating_only is None and len(prepared.train) == int(late.sum())
    warm = train_model(new, SMALL, CONFIG, test_fraction=0.0, init_from=old, replay=1.0)
    assert warm.data["warm_start"]["replay"] == 0.0


def test_warm_start_keeps_the_saved_shape(tiny_dir: Path) -> None:
    old_data, new_data = _halves(tiny_dir)
    old = train_model(old_data, SMALL, CONFIG, test_fraction=0.0)
    wider = ModelConfig(embedding_dim=16, head_layers=(16,))
    with pytest.raises(ConfigError, match=r"differs from the saved model's in \['embedding_dim'\]"):
        train_model(new_data, wider, CONFIG, test_fraction=0.0, init_from=old)


def test_cli_warm_start(tiny_dir: Path, tmp_path: Path) -> None:
    rows = _log_rows(read_grouplens_dir(tiny_dir))
    late = rows[:, 3] >= np.median(rows[:, 3])
    first = _write_csv(tmp_path / "first.csv", rows[~late])
    then = _write_csv(tmp_path / "then.csv", rows[late])
    old, warm = tmp_path / "old", tmp_path / "warm"
    small = ["--embedding-dim", "8", "--batch-size", "64", "--seed", "4", "-q"]
    base = ["train", "--preset", "reference", "--epochs", "3", *small, "--holdout", "none"]
    assert _run([*base, "--interactions", str(first), "-o", str(old)]) == 0
    args = ["train", "--interactions", str(then), "--init-from", str(old), "-o", str(warm)]
    assert _run([*args, "--epochs", "1", "--replay", "0.5", "-q"]) == 0
    saved = artifact.load(warm)
    # the saved model's config is the base (its embedding width, its seed, no holdout)...
    assert saved.model_config.embedding_dim == 8 and saved.train_config.seed == 4
    assert saved.data["split"]["n_test"] == 0
    assert saved.train_config.epochs == 1  # ...under the flags
    assert saved.data["warm_start"]["replay"] == 0.5
    assert len(saved.vocabs.users) == len(np.unique(rows[:, 0]))


@pytest.mark.slow
def test_warm_start_on_a_log_split_by_time(ml100k: Dataset) -> None:
    """ML-100K by time: the old model knows the first 60%, the warm start continues it on
    the next 20%, the full retrain learns the first 80% from scratch; all are measured on
    the last 20%'s rows that the old model can score (benchmarks/warm_start.py: 3 seeds)."""
    from mtrec.features import known_rows

    ev = ml100k.interactions
    order = np.argsort(ev.timestamp, kind="stable")
    n = len(order)

    def part(a: float, b: float) -> Dataset:
        rows = np.sort(order[int(n * a) : int(n * b)])
        return Dataset("part", ev.take(rows), has_ratings=True)  # no metadata: a user's log

    old = mtrec.fit(part(0, 0.6), "default", holdout=None)
    test = part(0.8, 1.0)
    known = known_rows(test.interactions, old.vocabs).known
    test = Dataset("test", test.interactions.take(np.flatnonzero(known)), has_ratings=True)
    with pytest.raises(ConfigError, match="goes without"):  # the saved settings win: say so
        mtrec.fit(part(0.6, 0.8), "tuned", init_from=old, holdout=None)
    warm = mtrec.fit(part(0.6, 0.8), init_from=old, holdout=None)
    full = mtrec.fit(part(0, 0.8), "default", holdout=None)
    assert len(warm.vocabs.users) > len(old.vocabs.users)  # the newer part brings new users
    before, after, retrained = old.evaluate(test), warm.evaluate(test), full.evaluate(test)
    for key in ("recall", "ndcg"):  # seed 42: 0.1372 / 0.1848 against 0.1056 / 0.1590
        assert after["served"][key] >= before["served"][key], key
        assert after["served"][key] >= retrained["served"][key] - 0.01, key
    # the rating head, trained on the old rows again (the default replay): at least as good
    # as the old one, close to the retrain (0.2491 against 0.2555 old, 0.2516 retrained)
    assert after["rmse"] <= before["rmse"]
    assert after["rmse"] <= retrained["rmse"] + 0.01
