"""Saved models: round trip, corruption, atomic writes; the Recommender on top of them."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from mtrec import artifact
from mtrec.config import ModelConfig, TrainConfig
from mtrec.data.movielens import read_grouplens_dir
from mtrec.errors import ArtifactError, ConfigError, UnknownIdError
from mtrec.index import ExactIndex
from mtrec.pipeline import evaluate_saved, train_model
from mtrec.recommend import Recommender, write_all_users

SMALL = ModelConfig(embedding_dim=8, head_layers=(16,))
FAST = TrainConfig(epochs=5, batch_size=64)


@pytest.fixture
def saved_dir(tiny_dir: Path, tmp_path: Path) -> Path:
    saved = train_model(read_grouplens_dir(tiny_dir), SMALL, FAST)
    return artifact.save(saved, tmp_path / "model")


def test_save_load_gives_identical_scores_and_recommendations(
    tiny_dir: Path, tmp_path: Path
) -> None:
    saved = train_model(read_grouplens_dir(tiny_dir), SMALL, FAST)
    before = Recommender(saved)
    path = artifact.save(saved, tmp_path / "model")
    after = Recommender.load(path)
    for a, b in zip(
        saved.model.state_dict().values(), after.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    users = list(range(1, 61))
    assert before.recommend_many(users, k=7) == after.recommend_many(users, k=7)
    assert before.similar(3, k=5) == after.similar(3, k=5)
    assert after.saved.metrics == json.loads(json.dumps(saved.metrics))
    assert after.saved.items.titles[0] == "Café Müller (1951)"
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "index",
        "items.json",
        "manifest.json",
        "metrics.json",
        "model.safetensors",
        "seen.safetensors",
        "vocab.json",
    ]
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in path.rglob("*") if p.is_file()}
    assert set(modes.values()) == {0o666 & ~umask}, modes  # safetensors' own files too


def test_recommend_excludes_training_items_and_ranks_by_prediction(saved_dir: Path) -> None:
    rec = Recommender.load(saved_dir)
    for user in range(1, 61):
        result = rec.recommend(user, k=8, candidates=20)
        seen = set(rec.seen(user))
        assert seen and not result.fallback
        assert not seen & {r.item_id for r in result.items}
        preds = [r.predicted_rating for r in result.items]
        assert preds == sorted(preds, reverse=True)
    with_seen = rec.recommend(1, k=40, candidates=40, exclude_seen=False)
    assert set(rec.seen(1)) <= {r.item_id for r in with_seen.items}
    assert rec.recommend("1", k=3) == rec.recommend(1, k=3)  # ids as typed on a command line


def test_candidates_are_the_top_by_retrieval_score(saved_dir: Path) -> None:
    rec = Recommender.load(saved_dir)
    result = rec.recommend(7, k=5, candidates=5, exclude_seen=False)
    user = rec.model.embed_users(torch.tensor([rec.vocabs.users.row(7)])).detach().numpy()
    _, rows = ExactIndex(rec.model.embed_items().detach().numpy()).search(user, 5)
    assert {r.item_id for r in result.items} == set(rec.vocabs.items.ids(rows[0]).tolist())


def test_unknown_user_falls_back_and_unknown_item_is_an_error(saved_dir: Path) -> None:
    rec = Recommender.load(saved_dir)
    result = rec.recommend(4242, k=4)
    assert result.fallback and result.notice and "4242" in result.notice
    assert len(result.items) == 4 and all(r.stars is None for r in result.items)
    pop = rec.saved.popularity
    assert [rec.item_row(r.item_id) for r in result.items] == np.argsort(-pop, kind="stable")[
        :4
    ].tolist()
    with pytest.raises(UnknownIdError, match="unknown item id 999"):
        rec.similar(999)
    with pytest.raises(UnknownIdError, match="unknown item id 'x'"):
        rec.rank(1, [1, "x"])
    with pytest.raises(UnknownIdError, match="unknown user"):
        rec.rank(4242, [1])


def test_rank_orders_given_items_and_similar_excludes_itself(saved_dir: Path) -> None:
    rec = Recommender.load(saved_dir)
    ranked = rec.rank(2, [5, 30, 12, 1])
    assert sorted(r.item_id for r in ranked) == [1, 5, 12, 30]
    assert [r.predicted_rating for r in ranked] == sorted(
        (r.predicted_rating for r in ranked), reverse=True
    )
    similar = rec.similar(3, k=50)
    assert len(similar) == 39 and 3 not in {s.item_id for s in similar}
    assert all(-1.0 <= s.score <= 1.0 for s in similar)


def test_all_users_export(saved_dir: Path, tmp_path: Path) -> None:
    rec = Recommender.load(saved_dir)
    n = write_all_users(rec, tmp_path / "recs.parquet", k=5, users_per_batch=7)
    table = pq.read_table(tmp_path / "recs.parquet").to_pydict()
    assert n == 60 * 5 == len(table["user_id"])
    assert table["rank"][:5] == [1, 2, 3, 4, 5] and table["user_id"][:5] == [1] * 5
    single = rec.recommend(1, k=5)
    assert table["item_id"][:5] == [r.item_id for r in single.items]
    assert table["title"][0] == single.items[0].title


def test_corrupt_or_missing_files_are_named(saved_dir: Path) -> None:
    weights = saved_dir / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ArtifactError, match=r"model\.safetensors: corrupt"):
        artifact.load(saved_dir)


def _rewrite_manifest(directory: Path, **changes: object) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    (directory / "manifest.json").write_text(json.dumps({**manifest, **changes}))


@pytest.mark.parametrize(
    "digests",
    [["a"], "abc", None, 5, {"config.json": None}, {"config.json": "00"}, {"../x": "0" * 64}],
)
def test_a_malformed_manifest_is_named_not_a_traceback(saved_dir: Path, digests: object) -> None:
    _rewrite_manifest(saved_dir, sha256=digests)
    with pytest.raises(ArtifactError, match=r"manifest\.json: "):
        artifact.load(saved_dir)


@pytest.mark.parametrize("name", ["x\x00y", "\ud800", "a\\b"])
def test_a_manifest_name_no_file_can_have_is_named_not_a_traceback(
    saved_dir: Path, name: str
) -> None:
    """Issue 34: a NUL or a lone surrogate in a listed name raised from ``open``."""
    manifest = json.loads((saved_dir / "manifest.json").read_text())
    _rewrite_manifest(saved_dir, sha256={**manifest["sha256"], name: "0" * 64})
    with pytest.raises(ArtifactError, match=r"manifest\.json: .* is not a file inside"):
        artifact.load(saved_dir)


def test_items_json_of_the_wrong_types_fails_at_load(saved_dir: Path) -> None:
    items = json.loads((saved_dir / "items.json").read_text())
    items["genres"][3] = [7]
    data = json.dumps(items).encode()
    (saved_dir / "items.json").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    manifest = json.loads((saved_dir / "manifest.json").read_text())
    _rewrite_manifest(saved_dir, sha256={**manifest["sha256"], "items.json": digest})
    with pytest.raises(ArtifactError, match=r"items\.json: 'genres' entry 3 is \[7\]"):
        artifact.load(saved_dir)


def test_a_directory_replaced_mid_load_never_mixes_two_models(
    saved_dir: Path, tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = artifact.save(
        train_model(read_grouplens_dir(tiny_dir), SMALL, TrainConfig(epochs=2, seed=9)),
        tmp_path / "other",
    )
    expected = artifact.load(saved_dir)
    real = artifact.read.read_files

    def read_then_swap(directory: Path, names: object) -> dict[str, bytes]:
        data = real(directory, names)  # type: ignore[arg-type]
        for name in data:  # the other model's files land while this load parses
            (saved_dir / name).write_bytes((other / name).read_bytes())
        return data

    monkeypatch.setattr(artifact.read, "read_files", read_then_swap)
    loaded = artifact.load(saved_dir)  # what was verified is what is parsed
    for a, b in zip(
        expected.model.state_dict().values(), loaded.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert isinstance(loaded.index, ExactIndex) and isinstance(expected.index, ExactIndex)
    assert np.array_equal(loaded.index.embeddings, expected.index.embeddings)


def test_loads_during_a_storm_of_swaps_get_one_whole_model(tiny_dir: Path, tmp_path: Path) -> None:
    import threading

    ds = read_grouplens_dir(tiny_dir)
    models = [train_model(ds, SMALL, TrainConfig(epochs=1, seed=s)) for s in (1, 2)]
    target = artifact.save(models[0], tmp_path / "model")
    weights = [m.model.item_embedding.weight.detach().clone() for m in models]
    done = threading.Event()

    def swap() -> None:
        for i in range(40):
            artifact.save(models[i % 2], target)
        done.set()

    writer = threading.Thread(target=swap)
    writer.start()
    loads = 0
    while not done.is_set() or loads < 5:
        loaded = artifact.load(target)  # never missing, never mixed, never a traceback
        got = loaded.model.item_embedding.weight
        index = loaded.index
        assert isinstance(index, ExactIndex)
        match = [torch.equal(got, w) for w in weights]
        assert any(match)
        assert np.array_equal(index.embeddings, models[match.index(True)].index.embeddings)
        loads += 1
    writer.join()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux's")
def test_a_swap_never_moves_the_model_away(
    saved_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moved = []
    real = os.replace

    def spy(src: object, dst: object) -> None:
        moved.append(Path(str(src)))
        real(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(artifact.write.os, "replace", spy)
    artifact.save(artifact.load(saved_dir), saved_dir)
    assert saved_dir not in moved  # exchanged in one step: no instant without a model


def test_a_save_removes_temporaries_of_dead_writers(saved_dir: Path, tiny_dir: Path) -> None:
    dead = saved_dir.parent / ".model.999999999.abc.tmp"  # no such process
    live = saved_dir.parent / f".model.{os.getpid()}.abc.tmp"  # a writer still at work
    dead.mkdir()
    live.mkdir()
    artifact.save(artifact.load(saved_dir), saved_dir)
    assert not dead.exists() and live.exists()


def test_missing_vocabulary(saved_dir: Path) -> None:
    (saved_dir / "vocab.json").unlink()
    with pytest.raises(ArtifactError, match=r"vocab\.json: missing"):
        artifact.load(saved_dir)


def test_flipped_byte_in_seen_items(saved_dir: Path) -> None:
    path = saved_dir / "seen.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"seen\.safetensors: corrupt"):
        artifact.load(saved_dir)


def test_newer_format_version_is_refused(saved_dir: Path) -> None:
    manifest = json.loads((saved_dir / "manifest.json").read_text())
    manifest["format_version"] = artifact.FORMAT_VERSION + 1
    (saved_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="format_version 2; this mtrec reads format 1"):
        artifact.load(saved_dir)
    with pytest.raises(ArtifactError, match="no such model directory"):
        artifact.load(saved_dir / "nope")


def test_failed_save_keeps_the_old_model_and_the_new_one_elsewhere(
    saved_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 34: a full disk mid-save lost the trained model behind a traceback. The old
    model stays, and the new one is written to the system's temporary directory, named."""
    import errno
    import tempfile

    saved = artifact.load(saved_dir)
    before = (saved_dir / "model.safetensors").read_bytes()
    real_save = saved.index.save
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(elsewhere))

    def full_beside_the_target(directory: Path) -> None:
        if not directory.is_relative_to(elsewhere):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(directory)

    monkeypatch.setattr(saved.index, "save", full_beside_the_target)
    with pytest.raises(ArtifactError, match="No space left on device") as raised:
        artifact.save(saved, saved_dir)
    assert (saved_dir / "model.safetensors").read_bytes() == before
    assert not [p for p in saved_dir.parent.iterdir() if p.name.startswith(".")]
    (kept,) = elsewhere.iterdir()
    assert f"written to {kept} instead" in str(raised.value)
    again = artifact.load(kept)
    assert again.vocabs.items.id_array.tolist() == saved.vocabs.items.id_array.tolist()

    def full_everywhere(directory: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(saved.index, "save", full_everywhere)
    with pytest.raises(ArtifactError, match=r"could not be kept in .* either"):
        artifact.save(saved, saved_dir)
    assert list(elsewhere.iterdir()) == [kept]  # the second try left nothing behind


def test_evaluate_saved_rebuilds_and_checks_the_split(tiny_dir: Path, saved_dir: Path) -> None:
    saved = artifact.load(saved_dir)
    dataset = read_grouplens_dir(tiny_dir)
    report = evaluate_saved(saved, dataset)
    assert report.rmse == pytest.approx(saved.metrics["rmse"])
    assert report.top_k_accuracy == pytest.approx(saved.metrics["top_k_accuracy"])
    lines = (tiny_dir / "u.data").read_text().splitlines()
    (tiny_dir / "u.data").write_text("\n".join(lines[:-1]) + "\n")
    from mtrec.errors import DataError

    with pytest.raises(DataError, match="differs from the one this model was evaluated on"):
        evaluate_saved(saved, read_grouplens_dir(tiny_dir))


def test_faiss_index_in_a_saved_model(tiny_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("faiss")
    saved = train_model(read_grouplens_dir(tiny_dir), SMALL, FAST, index="faiss-hnsw")
    assert saved.metrics["index"]["recall_at_10_vs_exact"] >= 0.95
    rec = Recommender.load(artifact.save(saved, tmp_path / "m"))
    assert rec.index.kind == "faiss-hnsw" and not rec.index.is_exact
    assert rec.recommend(3, k=5) == Recommender(saved).recommend(3, k=5)


def test_missing_faiss_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from mtrec.index import build_index

    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ConfigError, match=r"pip install faiss-cpu .*pip install -e '\.\[ann\]'"):
        build_index("faiss-hnsw", np.zeros((4, 2), dtype=np.float32))


def test_history_lists_the_best_rated_training_items(saved_dir: Path, tiny_dir: Path) -> None:
    rec = Recommender.load(saved_dir)
    history = rec.history(1, k=50)
    assert {h.item_id for h in history} == set(rec.seen(1))
    ratings = [h.rating for h in history]
    assert ratings == sorted(ratings, reverse=True) and set(ratings) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    raw = read_grouplens_dir(tiny_dir).interactions
    given = {
        int(i): float(r) for u, i, r in zip(raw.user, raw.item, raw.rating, strict=True) if u == 1
    }
    assert all(given[h.item_id] == h.rating for h in history)
    assert rec.history(4242) == []


def test_to_dict_matches_the_dataclass_fields(saved_dir: Path) -> None:
    import dataclasses

    rec = Recommender.load(saved_dir)

    def plain(obj: object) -> object:  # asdict, with tuples as JSON lists
        return json.loads(json.dumps(dataclasses.asdict(obj)))  # type: ignore[call-overload]

    result = rec.recommend(2, k=3)
    assert result.to_dict() == plain(result)
    assert [s.to_dict() for s in rec.similar(2, k=3)] == [plain(s) for s in rec.similar(2, k=3)]
    assert [h.to_dict() for h in rec.history(2, k=3)] == [plain(h) for h in rec.history(2, k=3)]
    assert rec.recommend(4242, k=2).to_dict() == plain(rec.recommend(4242, k=2))


def test_round_trip_with_side_features_and_biases(tiny_dir: Path, tmp_path: Path) -> None:
    config = ModelConfig(
        embedding_dim=8,
        head_layers=(8,),
        rating_biases=True,
        dropout=0.2,
        user_features=("age", "occupation"),
        item_features=("genres", "year"),
    )
    saved = train_model(read_grouplens_dir(tiny_dir), config, FAST)
    assert len(saved.model_config.feature_sizes) == 4  # filled from the data, saved with the model
    again = Recommender.load(artifact.save(saved, tmp_path / "m"))
    assert again.recommend_many(list(range(1, 61)), k=5) == Recommender(saved).recommend_many(
        list(range(1, 61)), k=5
    )
    assert torch.equal(again.model.codes_item_genres, saved.model.codes_item_genres)


def test_a_folder_that_is_not_a_model_is_never_replaced(saved_dir: Path, tmp_path: Path) -> None:
    """The attack: ``-o .`` (or ``Model.save`` onto any folder of one's own) swapped the
    folder out and deleted it, the training data included. Refused now, nothing deleted;
    a saved model is still replaced, and an empty folder filled."""
    saved = artifact.load(saved_dir)
    mine = tmp_path / "work"
    mine.mkdir()
    (mine / "ratings.csv").write_text("user_id,item_id,rating\n1,2,5\n")
    with pytest.raises(ArtifactError, match=r"ratings\.csv"):
        artifact.save(saved, mine)
    assert (mine / "ratings.csv").read_text().startswith("user_id")
    assert sorted(p.name for p in mine.iterdir()) == ["ratings.csv"]
    (saved_dir / "notes.txt").write_text("mine")  # a model folder with a file of one's own
    with pytest.raises(ArtifactError, match=r"notes\.txt"):
        artifact.save(saved, saved_dir)
    assert (saved_dir / "notes.txt").read_text() == "mine"
    (saved_dir / "notes.txt").unlink()
    assert artifact.save(saved, saved_dir) == saved_dir.resolve()  # a model: replaced
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (artifact.save(saved, empty) / "manifest.json").exists()


def test_train_refuses_a_foreign_output_folder_before_training(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli_run import run_cli

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("x")
    argv = ["train", "--data-dir", str(tiny_dir), "--preset", "reference", "--epochs", "1"]
    assert run_cli([*argv, "-q", "-o", str(out)]) == 5  # ArtifactError
    err = capsys.readouterr().err
    assert "keep" in err and "not a saved model" in err
    assert "multi-task epoch" not in err  # refused before any training
    assert (out / "keep").read_text() == "x"


def test_a_model_with_non_finite_weights_does_not_load(saved_dir: Path) -> None:
    """The attack: NaN weights with the checksums redone loaded, and then every route of
    the service answered 500 (JSON cannot encode NaN). Refused at load, the tensor named."""
    from safetensors.torch import load_file, save_file

    weights = load_file(saved_dir / "model.safetensors")
    weights["item_embedding.weight"][3, 1] = float("nan")
    save_file(weights, saved_dir / "model.safetensors")
    digest = hashlib.sha256((saved_dir / "model.safetensors").read_bytes()).hexdigest()
    manifest = json.loads((saved_dir / "manifest.json").read_text())
    _rewrite_manifest(saved_dir, sha256={**manifest["sha256"], "model.safetensors": digest})
    with pytest.raises(ArtifactError, match=r"non-finite weights in item_embedding\.weight"):
        artifact.load(saved_dir)
