"""Users' own logs: column mapping, string ids, items files, implicit data, bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from mtrec.cli import app
from mtrec.data import random_split
from mtrec.data.files import ColumnMap, load_interactions
from mtrec.data.interactions import distinct
from mtrec.errors import DataError
from mtrec.features import RatingScale, Vocabs, encode
from mtrec.vocab import Vocab

MAP = ColumnMap(user="uid", item="sku", rating="stars", timestamp="ts")


def _log(n_users: int = 30, n_items: int = 20, per_user: int = 8, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    users, items, stars, ts = [], [], [], []
    for u in range(n_users):
        for i in rng.choice(n_items, per_user, replace=False):
            users.append(f"user-{u:03d}")
            items.append(f"SKU{i}")
            stars.append(float(rng.integers(1, 11)))  # a 1..10 scale
            ts.append(1_600_000_000 + len(ts))
    return pa.table({"uid": users, "sku": items, "stars": stars, "ts": ts, "extra": ts})


def test_csv_and_parquet_give_the_same_string_id_round_trip(tmp_path: Path) -> None:
    table = _log()
    pq.write_table(table, tmp_path / "log.parquet", row_group_size=50)
    pacsv.write_csv(table, tmp_path / "log.csv")
    a = load_interactions(tmp_path / "log.parquet", MAP)
    b = load_interactions(tmp_path / "log.csv", MAP)
    for ds in (a, b):
        ev = ds.interactions
        assert ev.user_names is not None and ev.item_names is not None
        # codes point back at exactly the strings of the file, row for row
        assert ev.user_names[ev.user].tolist() == table.column("uid").to_pylist()
        assert ev.item_names[ev.item].tolist() == table.column("sku").to_pylist()
        assert ev.rating.tolist() == table.column("stars").to_pylist()
        assert ev.timestamp.tolist() == table.column("ts").to_pylist()
        assert ev.user.dtype == np.int64 and ev.rating.dtype == np.float32
        assert ds.has_ratings and ds.name == "log"
    assert list(a.user_ids()) == sorted({f"user-{u:03d}" for u in range(30)})
    # through the vocabularies and back: rows -> the same raw ids
    vocabs = Vocabs.from_dataset(a)
    enc = encode(a.interactions, vocabs, RatingScale.of(a))
    assert vocabs.users.ids(enc.user.numpy()).tolist() == table.column("uid").to_pylist()
    assert vocabs.items.ids(enc.item.numpy()).tolist() == table.column("sku").to_pylist()
    assert RatingScale.of(a) == RatingScale(1.0, 10.0)
    assert float(enc.label.min()) == 0.0 and float(enc.label.max()) == 1.0
    # splits keep the names with the codes
    split = random_split(a.interactions, seed=1)
    assert split.test.user_names is a.interactions.user_names


def test_integer_ids_stay_integers_and_missing_rating_means_retrieval_only(
    tmp_path: Path,
) -> None:
    path = tmp_path / "clicks.csv"
    path.write_text("user_id,item_id,timestamp\n7,100,5\n7,101,6\n9,100,7\n")
    ds = load_interactions(path)
    assert ds.interactions.user_names is None and ds.interactions.user.tolist() == [7, 7, 9]
    assert not ds.has_ratings and ds.interactions.rating.tolist() == [1.0, 1.0, 1.0]
    assert RatingScale.of(ds) == RatingScale(0.0, 1.0)
    assert list(ds.item_ids()) == [100, 101]


def test_tsv_and_explicitly_no_rating_column(tmp_path: Path) -> None:
    path = tmp_path / "log.tsv"
    path.write_text("u\ti\trating\n1\t2\t4\n")
    ds = load_interactions(path, ColumnMap("u", "i", rating=""))
    assert not ds.has_ratings and ds.interactions.item.tolist() == [2]


def test_items_file_gives_titles_genres_years_and_joins_the_vocabulary(tmp_path: Path) -> None:
    pq.write_table(_log(), tmp_path / "log.parquet")
    (tmp_path / "items.csv").write_text(
        "sku,title,genres\n"
        'SKU1,"Heat, Director\'s Cut (1995)",Action|Crime\n'
        "SKU999,Never Rated,(no genres listed)\n"
    )
    ds = load_interactions(tmp_path / "log.parquet", MAP, items=tmp_path / "items.csv")
    assert ds.items is not None
    assert ds.items.ids.tolist() == ["SKU1", "SKU999"]
    assert ds.items.titles[0] == "Heat, Director's Cut (1995)" and ds.items.years[0] == 1995
    assert ds.items.genres_of(0) == ["Action", "Crime"] and ds.items.genres_of(1) == []
    assert "SKU999" in ds.item_ids().tolist()  # catalogue items without ratings are known
    vocabs = Vocabs.from_dataset(ds)
    assert len(vocabs.items) == 21


def test_a_users_file_gives_side_features_to_the_users_it_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 31: user features (age, gender, occupation) could come only with MovieLens;
    a log of one's own had no way to give them. A value left empty gets no code."""
    from cli_run import run_cli

    import mtrec
    from mtrec.config import ModelConfig
    from mtrec.features import available_features, feature_codes

    pq.write_table(_log(), tmp_path / "log.parquet")
    (tmp_path / "users.csv").write_text(
        "uid,age,gender,shoe\nuser-000,23,F,40\nuser-001,,M,41\nuser-002,61,,42\nnobody,30,F,1\n"
    )
    ds = load_interactions(tmp_path / "log.parquet", MAP, users=tmp_path / "users.csv")
    assert ds.users is not None and ds.users.ids.tolist()[:2] == ["user-000", "user-001"]
    assert ds.users.age.tolist() == [23, -1, 61, 30] and ds.users.gender.tolist()[2] == ""
    assert ds.users.has("age") and ds.users.has("gender") and not ds.users.has("occupation")
    config = ModelConfig(user_features=("age", "gender", "occupation"))
    configured, dropped = available_features(config, ds)
    assert configured.user_features == ("age", "gender") and dropped == ["user occupation"]
    vocabs = Vocabs.from_dataset(ds)
    codes = feature_codes(ds, vocabs, configured.user_features, ())
    rows = [vocabs.users.row(u) for u in ("user-000", "user-001", "user-002", "user-003")]
    ages, genders = codes.user["age"][rows, 0].tolist(), codes.user["gender"][rows, 0].tolist()
    assert ages == [2, 0, 7, 0]  # 18-24, not given, 56+, not in the users file
    assert genders[0] != genders[1] and 0 not in genders[:2] and genders[2:] == [0, 0]
    (tmp_path / "bad.csv").write_text("uid,shoe\nuser-000,40\n")
    with pytest.raises(DataError, match="no user feature column"):
        load_interactions(tmp_path / "log.parquet", MAP, users=tmp_path / "bad.csv")
    small = {"embedding_dim": 8, "head_layers": (8,), "batch_size": 64, "epochs": 1}
    model = mtrec.fit(tmp_path / "log.parquet", "tuned", columns=MAP, users=tmp_path / "users.csv",
                      progress=False, **small)  # fmt: skip
    assert model.model_config.user_features == ("age", "gender")
    args = ["train", "--interactions", str(tmp_path / "log.parquet"), "--user-col", "uid",
            "--item-col", "sku", "--rating-col", "stars", "--preset", "tuned", "--epochs", "1",
            "--users-file", str(tmp_path / "users.csv"), "-q",
            "-o", str(tmp_path / "m")]  # fmt: skip
    assert run_cli(args) == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["model_config"]["user_features"] == ["age", "gender"]


def test_integer_items_file_against_string_log_ids(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("user_id,item_id\na,1\nb,x\n")
    (tmp_path / "items.csv").write_text("item_id,title\n1,One (2001)\n")
    ds = load_interactions(tmp_path / "log.csv", items=tmp_path / "items.csv")
    assert ds.items is not None and ds.items.ids.tolist() == ["1"]
    assert sorted(ds.item_ids().tolist()) == ["1", "x"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("uid,sku,stars\nu1,i1,4\nu2,i2,four\n", r"log\.csv:3, field 'stars': bad value 'four'"),
        ("uid,sku,stars\nu1,i1,4\nu2,,4\nu3,,5\n", r":3, field 'sku': missing value \(2 rows"),
        ("uid,sku,stars\nu1,i1,4\nu2,i2,nan\n", r":3, field 'stars': missing value"),
        ("uid,sku,stars\nu1,i1,4\nu2,i2\n", r"log\.csv:3: malformed row"),
        ("who,what\n1,2\n", r"no column 'uid' \(set ColumnMap\(user=\.\.\.\)\); the file has"),
    ],
)
def test_bad_csv_rows_name_line_and_column(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "log.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        load_interactions(tmp_path / "log.csv", ColumnMap("uid", "sku", "stars"))


def test_messages_name_python_parameters_in_python_and_flags_in_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 31: a Python caller was told to set --user-col, a flag of the CLI."""
    from cli_run import run_cli

    (tmp_path / "log.csv").write_text("who,what,stars\n1,2,4\n3,4,x\n")
    with pytest.raises(DataError, match=r"ColumnMap\(user=\.\.\.\)") as raised:
        load_interactions(tmp_path / "log.csv")
    assert "--user-col" not in str(raised.value)
    with pytest.raises(DataError, match="pass bad_rows='skip' to drop") as raised:
        load_interactions(tmp_path / "log.csv", ColumnMap("who", "what", "stars"))
    assert "--skip-bad-rows" not in str(raised.value)
    log = ["train", "--interactions", str(tmp_path / "log.csv"), "-o", str(tmp_path / "m")]
    assert run_cli(log) == 2
    assert "(set --user-col)" in capsys.readouterr().err
    assert run_cli([*log, "--user-col", "who", "--item-col", "what", "--rating-col", "stars"]) == 2
    assert "pass --skip-bad-rows to drop" in capsys.readouterr().err


def test_bad_parquet_rows_name_the_row_group(tmp_path: Path) -> None:
    table = pa.table({"user_id": list(range(10)), "item_id": [1, 2, 3, 4, 5, None, 7, 8, 9, 10]})
    pq.write_table(table, tmp_path / "log.parquet", row_group_size=4)
    with pytest.raises(DataError, match=r"field 'item_id'.*row group 1, row 1: missing value"):
        load_interactions(tmp_path / "log.parquet")


def test_skip_bad_rows_drops_and_counts_per_column(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text(
        "user_id,item_id,rating\n1,1,4\n2,,4\n3,3,x\n4,4,5\n,5,1\n6,6,\n"
    )
    ds = load_interactions(tmp_path / "log.csv", bad_rows="skip")
    assert ds.interactions.user.tolist() == [1, 4]
    assert ds.skipped == {"user_id": 1, "item_id": 1, "rating": 2}


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "log.json").write_text("{}")
    with pytest.raises(DataError, match=r"unknown format '\.json'"):
        load_interactions(tmp_path / "log.json")
    with pytest.raises(DataError, match="no such file"):
        load_interactions(tmp_path / "nope.csv")


def test_direct_vocab_lookup_equals_binary_search() -> None:
    rng = np.random.default_rng(0)
    vocab = Vocab("item", rng.choice(np.arange(5, 400_000), 50_000, replace=False))
    ids = np.concatenate([rng.choice(vocab.id_array, 100_000), [-3, 4, 400_001, 10**12]])
    direct = vocab.rows(ids, unknown="oov")  # large: the table path
    searched = np.concatenate([vocab.rows(chunk, "oov") for chunk in np.array_split(ids, 100)])
    assert np.array_equal(direct, searched) and (direct[-4:] == -1).all()
    with pytest.raises(KeyError, match="unknown item id -3"):
        vocab.rows(ids)
    assert np.array_equal(distinct(ids[:-1]), np.unique(ids[:-1]))


def test_cli_trains_retrieval_only_on_a_string_id_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    table = _log(n_users=40, n_items=25, per_user=10).drop(["stars"])
    pq.write_table(table, tmp_path / "log.parquet")
    out = tmp_path / "model"
    result = CliRunner().invoke(
        app,
        [
            "train", "--interactions", str(tmp_path / "log.parquet"), "--user-col", "uid",
            "--item-col", "sku", "--timestamp-col", "ts", "--split", "temporal-user",
            "--epochs", "2", "--batch-size", "64", "-o", str(out), "-q", "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "no rating column: training the retrieval task only" in caplog.text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["rmse"] is None and 0.0 <= metrics["top_k_accuracy"] <= 1.0
    rec = CliRunner().invoke(app, ["recommend", "-m", str(out), "-u", "user-001", "--json"])
    assert rec.exit_code == 0, rec.output
    items = json.loads(rec.stdout)["items"]
    assert len(items) == 10 and all(str(r["item_id"]).startswith("SKU") for r in items)
    again_args = [
        "evaluate", "-m", str(out), "--interactions", str(tmp_path / "log.parquet"),
        "--user-col", "uid", "--item-col", "sku", "--timestamp-col", "ts", "--json",
    ]  # fmt: skip
    again = CliRunner().invoke(app, again_args)
    assert again.exit_code == 0, again.output
    now = json.loads(again.stdout)
    assert now["metrics"]["top_k_accuracy"] == metrics["top_k_accuracy"]
    assert now["metrics"]["rmse"] is None  # valid JSON: null, not NaN
    table = CliRunner().invoke(app, ["evaluate", "-m", str(out), *again_args[3:-1]])
    assert table.exit_code == 0, table.output
    assert "rmse" in table.stdout and "nan" not in table.stdout.lower()


def test_values_beyond_the_stored_types_are_bad_rows_and_timestamps_stay_exact(
    tmp_path: Path,
) -> None:
    """Found by fuzzing: 1e300 is a float64 but an infinite float32 rating."""
    (tmp_path / "log.csv").write_text("user_id,item_id,rating\n1,1,4\n2,2,1e300\n")
    with pytest.raises(DataError, match=r"log\.csv:3, field 'rating': bad value 1e\+300"):
        load_interactions(tmp_path / "log.csv")
    ns = 1_700_000_000_123_456_789  # nanoseconds: beyond float64's exact integers
    (tmp_path / "ns.csv").write_text(f"user_id,item_id,timestamp\n1,1,{ns}\n")
    assert load_interactions(tmp_path / "ns.csv").interactions.timestamp.tolist() == [ns]


def test_tuned_preset_on_a_log_without_metadata_leaves_side_features_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from mtrec.config import preset
    from mtrec.pipeline import train_model

    pq.write_table(_log(), tmp_path / "log.parquet")
    ds = load_interactions(tmp_path / "log.parquet", MAP)
    model_config, train_config = preset("tuned", epochs=1)
    saved = train_model(ds, model_config, train_config)
    assert saved.model_config.user_features == () and saved.model_config.item_features == ()
    assert saved.model_config.embedding_dim == 64  # the rest of the preset holds
    assert "no metadata for side features" in caplog.text


def test_ids_and_ratings_are_never_silently_changed(tmp_path: Path) -> None:
    # ids beyond int64 would wrap to negative ones: bad rows, named
    big = pa.array([1, 2**63 + 5], type=pa.uint64())
    pq.write_table(pa.table({"user_id": big, "item_id": [1, 2]}), tmp_path / "u64.parquet")
    with pytest.raises(DataError, match=r"field 'user_id'.*row group 0, row 1: bad value"):
        load_interactions(tmp_path / "u64.parquet")
    # "007" and "7" are two users (two strings), not one integer
    (tmp_path / "zeros.csv").write_text("user_id,item_id\n007,1\n7,1\n7,2\n")
    ds = load_interactions(tmp_path / "zeros.csv")
    assert sorted(ds.user_ids().tolist()) == ["007", "7"]
    # one stray rating would squash the scale: a bad row beyond the plausible or given range
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n1,1,4\n2,2,1e30\n3,3,6\n")
    with pytest.raises(DataError, match=r"r\.csv:3, field 'rating': bad value 1e\+30 .*\[-1e"):
        load_interactions(tmp_path / "r.csv")
    with pytest.raises(DataError, match=r"r\.csv:3.*must lie in \[1, 5\] \(rating_range\)"):
        load_interactions(tmp_path / "r.csv", rating_range=(1.0, 5.0))
    kept = load_interactions(tmp_path / "r.csv", rating_range=(1.0, 5.0), bad_rows="skip")
    assert kept.interactions.rating.tolist() == [4.0] and kept.skipped == {"rating": 2}


def test_cli_rating_range_flag(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("user_id,item_id,rating\n1,1,4\n2,2,9\n")
    runner = CliRunner()
    args = ["train", "--interactions", str(tmp_path / "r.csv"), "-o", str(tmp_path / "m")]
    for extra, message in (
        (["--rating-range", "1,5"], "must lie in [1, 5]"),
        (["--rating-range", "5,1"], "--rating-range: expected LOW,HIGH"),
    ):
        out = runner.invoke(app, [*args, *extra])
        assert out.exit_code != 0 and message in str(out.exception)
    out = runner.invoke(app, ["train", "--rating-range", "1,5", "-o", str(tmp_path / "m")])
    assert out.exit_code != 0 and "go with --interactions" in str(out.exception)


def test_float_ids_past_two_to_the_53_are_refused_not_merged() -> None:
    """The attack: pandas turns an integer id column holding a NaN into float64, which
    holds every integer only up to 2^53; 200 users of ids near 2^60 became 6, none of them
    a real id, without a word. Past 2^53 a float id is a bad row, named; below it, kept."""
    big = [float(2**60 + 64 * k) for k in range(200)]
    frame = pa.table({"user_id": big, "item_id": [1.0] * 200})
    assert len(set(big)) < 200  # the merge happened in the float column itself
    with pytest.raises(DataError, match=r"field 'user_id': row 0: bad value"):
        load_interactions(frame)
    exact = pa.table({"user_id": [1.0, 2.0**53, None], "item_id": [1.0, 2.0, 3.0]})
    ds = load_interactions(exact, bad_rows="skip")
    assert ds.user_ids().tolist() == [1, 2**53] and ds.skipped == {"user_id": 1}


def test_datetimes_with_sub_second_parts_are_read_to_the_second() -> None:
    """Issue 34: a pandas ``datetime64`` column with milliseconds refused the whole frame
    ("would lose data"); it is read to the second, as a decimal timestamp is."""
    pd = pytest.importorskip("pandas")
    from mtrec.estimator import as_dataset

    frame = pd.DataFrame({
        "user_id": [1, 2, 2],
        "item_id": [10, 10, 11],
        "rating": [4, 5, 3],
        "timestamp": pd.to_datetime(
            ["2024-01-01 00:00:01.250", "2024-01-01 00:00:02.000", "1969-12-31 23:59:59.500"]
        ),
    })  # fmt: skip
    ds = as_dataset(frame)
    assert ds.interactions.timestamp.tolist() == [1704067201, 1704067202, -1]
