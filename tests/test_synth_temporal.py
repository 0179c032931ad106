"""Synthetic logs for benchmarks, and the temporal split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mtrec.cli import main
from mtrec.data import Interactions, synthesize, temporal_split
from mtrec.errors import ConfigError


def test_synthesize_is_seeded_skewed_and_in_range() -> None:
    log = synthesize(200_000, 2_000, 1_000, seed=3)
    again = synthesize(200_000, 2_000, 1_000, seed=3)
    assert np.array_equal(log.item, again.item) and np.array_equal(log.rating, again.rating)
    assert not np.array_equal(log.item, synthesize(200_000, 2_000, 1_000, seed=4).item)
    assert log.user.min() >= 1 and log.user.max() <= 2_000 and log.item.max() <= 1_000
    assert set(np.unique(log.rating).tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    counts = np.sort(np.bincount(log.item))[::-1]
    assert counts[:10].sum() / len(log) > 0.2  # the top 1% of items: far more than 1% of rows
    assert np.all(np.diff(log.timestamp) > 0)
    with pytest.raises(ConfigError):
        synthesize(0, 1, 1)


def test_data_synth_command_writes_parquet(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    with pytest.raises(SystemExit) as done:
        main(
            [
                "data",
                "synth",
                "-o",
                str(path),
                "--interactions",
                "5000",
                "--users",
                "50",
                "--items",
                "40",
            ]
        )
    assert done.value.code in (0, None)
    table = pq.read_table(path)
    assert table.num_rows == 5000 and table.column_names == [
        "user_id",
        "item_id",
        "rating",
        "timestamp",
    ]
    assert str(table.schema.field("user_id").type) == "int32"


def _log(users: list[int], times: list[int]) -> Interactions:
    n = len(users)
    return Interactions(
        np.array(users), np.arange(n) + 100, np.ones(n, dtype=np.float32), np.array(times)
    )


def test_temporal_split_global() -> None:
    log = _log([1, 2, 1, 3, 2], [50, 10, 40, 30, 20])
    split = temporal_split(log, test_fraction=0.4)
    assert sorted(split.test.timestamp.tolist()) == [40, 50]
    assert sorted(split.train.timestamp.tolist()) == [10, 20, 30]
    assert max(split.train.timestamp) < min(split.test.timestamp)


def test_temporal_split_per_user() -> None:
    # user 1: four rows, the newest one goes to test; user 2: one row stays in train
    log = _log([1, 1, 2, 1, 1], [4, 1, 9, 3, 2])
    split = temporal_split(log, test_fraction=0.25, per_user=True)
    assert split.test.user.tolist() == [1] and split.test.timestamp.tolist() == [4]
    assert sorted(split.train.timestamp.tolist()) == [1, 2, 3, 9]
    assert len(split.train) + len(split.test) == len(log)
    with pytest.raises(ConfigError):
        temporal_split(_log([1], [1]), test_fraction=0.5, per_user=True)


def test_planted_logs_carry_taste_and_the_oracle_sees_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mtrec.data.synth import synthesize_planted
    from mtrec.evaluate.oracle import planted_lists

    sizes = (60_000, 3_000, 2_000)
    log, truth = synthesize_planted(*sizes, clusters=8, seed=1)
    again, _ = synthesize_planted(*sizes, clusters=8, seed=1)
    assert np.array_equal(log.user, again.user) and np.array_equal(log.item, again.item)
    pairs = log.user * 10_000 + log.item
    assert len(np.unique(pairs)) == len(pairs) <= sizes[0]  # a pair drawn twice is kept once
    assert log.user.min() >= 1 and log.item.max() <= sizes[2] and set(log.rating) <= {1, 2, 3, 4, 5}
    # each cluster's users favour their own items: the truth ranks them far above popularity
    report = planted_lists(log, truth)
    assert report.oracle["recall"] > 3 * report.popularity["recall"]
    # with taste drowned (a huge temperature), the oracle is the popularity chart
    flat, flat_truth = synthesize_planted(*sizes, clusters=8, temperature=1e6, seed=1)
    level = planted_lists(flat, flat_truth)
    assert level.oracle["recall"] == pytest.approx(level.popularity["recall"], rel=0.25)
    path = tmp_path / "p.parquet"
    args = ["data", "synth", "--planted", "-o", str(path), "--interactions", "20000"]
    with pytest.raises(SystemExit) as done:
        main([*args, "--users", "500", "--items", "300", "--clusters", "4"])
    assert done.value.code in (0, None)
    assert pq.read_table(path).num_rows <= 20_000
    assert "recall@10 oracle" in capsys.readouterr().out
