"""Split invariants, vocabulary round trips and typed configuration."""

from __future__ import annotations

import numpy as np
import pytest

from mtrec.config import ModelConfig, TrainConfig
from mtrec.data import Interactions, random_split
from mtrec.errors import ArtifactError, ConfigError, UnknownIdError
from mtrec.features import RatingScale
from mtrec.vocab import Vocab


def _interactions(n: int, rng: np.random.Generator) -> Interactions:
    return Interactions(
        user=rng.integers(1, 50, n),
        item=rng.integers(1, 80, n),
        rating=rng.integers(1, 6, n).astype(np.float32),
        timestamp=np.arange(n, dtype=np.int64),
    )


def test_split_is_disjoint_complete_and_seeded(rng: np.random.Generator) -> None:
    data = _interactions(1000, rng)
    split = random_split(data, test_fraction=0.2, seed=7)
    assert (len(split.train), len(split.test)) == (800, 200)
    # timestamps are unique row ids here
    train_rows, test_rows = set(split.train.timestamp.tolist()), set(split.test.timestamp.tolist())
    assert not train_rows & test_rows
    assert train_rows | test_rows == set(range(1000))
    again = random_split(data, test_fraction=0.2, seed=7)
    assert np.array_equal(again.train.timestamp, split.train.timestamp)
    other = random_split(data, test_fraction=0.2, seed=8)
    assert not np.array_equal(other.train.timestamp, split.train.timestamp)
    # the rows keep their columns together
    pos = split.test.timestamp
    assert np.array_equal(split.test.user, data.user[pos])
    assert np.array_equal(split.test.rating, data.rating[pos])


def test_split_matches_numpy_permutation_of_the_anchor(rng: np.random.Generator) -> None:
    data = _interactions(100, rng)
    order = np.random.RandomState(42).permutation(100)
    split = random_split(data, seed=42)
    assert np.array_equal(split.train.timestamp, order[:80])
    assert np.array_equal(split.test.timestamp, order[80:])


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 0.0001])
def test_split_rejects_degenerate_fractions(rng: np.random.Generator, fraction: float) -> None:
    with pytest.raises(ConfigError):
        random_split(_interactions(100, rng), test_fraction=fraction)


def test_vocab_rows_ids_unknown_and_json() -> None:
    vocab = Vocab("item", [30, 10, 20, 10])
    assert len(vocab) == 3
    assert vocab.rows([20, 10, 30]).tolist() == [1, 0, 2]
    assert vocab.ids([2, 0]).tolist() == [30, 10]
    assert 20 in vocab and 25 not in vocab and "20" not in vocab
    with pytest.raises(UnknownIdError, match="unknown item id 25"):
        vocab.rows([10, 25])
    assert vocab.rows([10, 25], unknown="oov").tolist() == [0, -1]
    again = Vocab.from_dict(vocab.to_dict())
    assert again.id_array.tolist() == [10, 20, 30]
    with pytest.raises(ArtifactError):
        Vocab.from_dict({"ids": [1]})
    strings = Vocab("user", ["b", "a"])
    assert strings.row("b") == 1
    with pytest.raises(UnknownIdError):
        strings.row(3)


def test_rating_scale_round_trip_and_clip() -> None:
    scale = RatingScale()
    assert scale.scale([1, 3, 5]).tolist() == [0.0, 0.5, 1.0]
    assert scale.stars([0.0, 0.5, 1.0, 1.2, -0.1]).tolist() == [1.0, 3.0, 5.0, 5.0, 1.0]


def test_configs_round_trip_and_reject_bad_input() -> None:
    model = ModelConfig(embedding_dim=8, head_layers=(16, 4))
    assert ModelConfig.from_json(model.to_json()) == model
    train = TrainConfig(epochs=3, learning_rate=0.05, shuffle=True)
    assert TrainConfig.from_dict(train.to_dict()) == train
    assert TrainConfig.from_dict({"learning_rate": 1}).learning_rate == 1.0
    with pytest.raises(ConfigError, match="unknown key"):
        TrainConfig.from_dict({"epoch": 3})
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig.from_dict({"epochs": "3"})
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="both 0"):
        TrainConfig(retrieval_weight=0, rating_weight=0)
    with pytest.raises(ConfigError, match="optimizer"):
        TrainConfig.from_dict({"optimizer": "sgd"})
    with pytest.raises(ConfigError, match="head_layers"):
        ModelConfig.from_dict({"head_layers": [4, "x"]})
    with pytest.raises(ConfigError, match="invalid JSON"):
        ModelConfig.from_json("{")


def test_seen_items_csr_keeps_the_last_rating_of_a_pair() -> None:
    import torch

    from mtrec.features import EncodedInteractions, seen_items

    data = EncodedInteractions(
        torch.tensor([2, 0, 2, 2, 0]),
        torch.tensor([3, 1, 0, 3, 4]),
        torch.tensor([1.0, 0.5, 0.75, 0.2, 0.9]),
    )
    seen = seen_items(data, n_users=4)
    assert seen.indptr.tolist() == [0, 2, 2, 4, 4]
    assert seen.of(0)[0].tolist() == [1, 4] and seen.of(1)[0].tolist() == []
    items, labels = seen.of(2)
    assert items.tolist() == [0, 3] and labels.tolist() == pytest.approx([0.75, 0.2])
    assert (seen.indptr.dtype, seen.items.dtype, seen.labels.dtype) == ("int64", "int64", "float32")
    empty = seen_items(EncodedInteractions(data.user[:0], data.item[:0], data.label[:0]), 2)
    assert empty.indptr.tolist() == [0, 0, 0] and len(empty.items) == len(empty.labels) == 0


def test_the_old_name_of_the_rating_weight_still_loads() -> None:
    # format-1 models saved before the rename carry "ranking_weight" in config.json
    from mtrec.config import TrainConfig
    from mtrec.errors import ConfigError

    assert TrainConfig.from_dict({"ranking_weight": 0.25}).rating_weight == 0.25
    assert "ranking_weight" not in TrainConfig().to_dict()
    with pytest.raises(ConfigError, match="old name"):
        TrainConfig.from_dict({"ranking_weight": 0.25, "rating_weight": 1.0})


def test_non_finite_config_values_are_refused_before_any_work() -> None:
    """``inf`` passed the range checks (temperature > 0, lambda > 0) and failed only
    writing config.json after the whole training run; NaN passed every check."""
    from mtrec.config import RankerConfig, RunConfig

    for make, named in (
        (lambda: TrainConfig.from_dict({"temperature": float("inf")}), "TrainConfig.temperature"),
        (lambda: RankerConfig.from_dict({"item_item_lambda": float("inf")}), "item_item_lambda"),
        (lambda: ModelConfig(dropout=float("nan")), "ModelConfig.dropout"),
        (
            lambda: RunConfig.from_dict({"train": {"learning_rate": float("nan")}}).resolve(),
            "learning_rate",
        ),
    ):
        with pytest.raises(ConfigError, match=named):
            make()
    assert TrainConfig(temperature=0.5).temperature == 0.5


def test_minus_zero_is_not_id_zero() -> None:
    """Issue 34: "-0" was read as user 0 (a data file keeps "-0" a string id of its own)."""
    from mtrec.vocab import Vocab

    vocab = Vocab("user", np.array([0, 5, -5]))
    assert vocab.parse("0") == 0 and vocab.parse("-5") == -5
    assert vocab.parse("-0") == "-0" and "-0" not in vocab


def test_widths_are_bounded_and_tables_checked_against_memory() -> None:
    """Issue 34: a huge ``embedding_dim`` failed allocating, with a traceback, after the
    data had loaded; now the config or the model's build says which field and why."""
    from mtrec.config import ModelConfig
    from mtrec.errors import ConfigError
    from mtrec.pipeline.prepare import check_tables_fit

    with pytest.raises(ConfigError, match=r"embedding_dim: expected 1\.\.65536"):
        ModelConfig(embedding_dim=10**9)
    with pytest.raises(ConfigError, match="head_layers"):
        ModelConfig(head_layers=(10**6,))
    wide = ModelConfig(embedding_dim=4096, history=True)
    check_tables_fit(1_000, 1_000, wide, memory=2**30)  # 3 x 4 B x 4096 x 3,000: 141 MiB
    with pytest.raises(ConfigError, match=r"embedding_dim: 4096 for 100,000 users .* 2\.0 GiB"):
        check_tables_fit(100_000, 10_000, wide, memory=2 * 2**30)
