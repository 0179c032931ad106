"""Checkpoints: resume is bit-identical, corrupt ones are skipped, divergence is caught."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from mtrec.config import ModelConfig, TrainConfig
from mtrec.data.movielens import read_grouplens_dir
from mtrec.errors import TrainingError
from mtrec.features import EncodedInteractions, Vocabs, encode
from mtrec.model import MultiTaskModel
from mtrec.train import EpochStats, TrainingRecord, train
from mtrec.train.checkpoint import Checkpointing, list_checkpoints, read_checkpoint

SMALL = ModelConfig(embedding_dim=8, head_layers=(16,))
CONFIG = TrainConfig(epochs=3, batch_size=100, shuffle=True, seed=7)  # 12 batches an epoch


class Crash(Exception):
    """Stands in for a kill: everything in memory is dropped."""


class CrashAt:
    def __init__(self, at_step: int) -> None:
        self.at, self.seen = at_step, 0

    def start_epoch(self, epoch: int, epochs: int, n_batches: int) -> None: ...

    def step(self, losses: dict[str, float]) -> None:
        self.seen += 1
        if self.seen == self.at:
            raise Crash

    def end_epoch(self, stats: EpochStats) -> None: ...

    def finish(self, record: TrainingRecord) -> None: ...


@pytest.fixture
def data(tiny_dir: Path) -> tuple[EncodedInteractions, int, int]:
    ds = read_grouplens_dir(tiny_dir)
    vocabs = Vocabs.from_dataset(ds)
    return encode(ds.interactions, vocabs), len(vocabs.users), len(vocabs.items)


def _model(data: tuple[EncodedInteractions, int, int]) -> MultiTaskModel:
    return MultiTaskModel(data[1], data[2], SMALL, seed=7)


def _same(a: MultiTaskModel, b: MultiTaskModel) -> bool:
    return all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


TUNED_LIKE = TrainConfig(
    epochs=3,
    batch_size=100,
    shuffle=True,
    seed=7,
    optimizer="adamw",
    learning_rate=0.01,
    weight_decay=0.05,
    logq_correction=True,
    remove_accidental_hits=True,
    positive_min_rating=0.75,
    retrieval_reduction="mean",
)
DROPOUT = ModelConfig(embedding_dim=8, head_layers=(16,), dropout=0.3, rating_biases=True)
CASES = [
    (5, CONFIG, SMALL),
    (12, CONFIG, SMALL),
    (13, CONFIG, SMALL),
    (30, CONFIG, SMALL),
    (17, TUNED_LIKE, DROPOUT),
]
"""Mid-epoch, at an epoch's end, just after, late; and AdamW with dropout and the options."""


@pytest.mark.parametrize(("crash_at", "config", "shape"), CASES)
def test_resume_after_crash_is_bit_identical(  # type: ignore[no-untyped-def]
    data, tmp_path: Path, crash_at: int, config: TrainConfig, shape: ModelConfig
) -> None:
    def fresh() -> MultiTaskModel:
        return MultiTaskModel(data[1], data[2], shape, seed=7)

    reference = fresh()
    torch.rand(3)  # other use of the global generator must not matter
    expected = train(reference, data[0], config)
    settings = Checkpointing(tmp_path / "ckpt", every_steps=4, keep=2)
    with pytest.raises(Crash):
        train(fresh(), data[0], config, CrashAt(crash_at), settings)
    resumed = fresh()
    torch.rand(5)
    history = train(
        resumed, data[0], config, checkpoints=Checkpointing(tmp_path / "ckpt", 4, 2, resume=True)
    )
    assert _same(reference, resumed)
    assert [e.loss for e in history.epochs] == pytest.approx(
        [e.loss for e in expected.epochs], rel=1e-12
    )
    assert len(list_checkpoints(tmp_path / "ckpt")) == 2


def test_corrupt_newest_checkpoint_is_skipped(
    data, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    reference = _model(data)
    train(reference, data[0], CONFIG)
    settings = Checkpointing(tmp_path, every_steps=3, keep=3)
    with pytest.raises(Crash):
        train(_model(data), data[0], CONFIG, CrashAt(20), settings)
    newest = list_checkpoints(tmp_path)[0]
    blob = bytearray(newest.read_bytes())
    blob[-10] ^= 0x01  # one flipped bit in the weights
    newest.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="corrupt"):
        read_checkpoint(newest)
    resumed = _model(data)
    with caplog.at_level(logging.WARNING, logger="mtrec.train.checkpoint"):
        train(resumed, data[0], CONFIG, checkpoints=Checkpointing(tmp_path, 3, 3, resume=True))
    assert f"skipping checkpoint {newest}" in caplog.text
    assert _same(reference, resumed)


def test_truncated_checkpoint_is_skipped(data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = Checkpointing(tmp_path, keep=5)
    train(_model(data), data[0], CONFIG, checkpoints=settings)
    newest = list_checkpoints(tmp_path)[0]
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"unreadable|corrupt"):
        read_checkpoint(newest)


def test_existing_checkpoints_need_resume_and_the_same_run(data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    train(_model(data), data[0], CONFIG, checkpoints=Checkpointing(tmp_path))
    with pytest.raises(TrainingError, match="already holds checkpoints"):
        train(_model(data), data[0], CONFIG, checkpoints=Checkpointing(tmp_path))
    other = TrainConfig(epochs=3, batch_size=100, shuffle=True, seed=7, learning_rate=0.05)
    with pytest.raises(TrainingError, match="another run"):
        train(_model(data), data[0], other, checkpoints=Checkpointing(tmp_path, resume=True))
    # more epochs extend the same run from where it stopped
    longer = TrainConfig(epochs=4, batch_size=100, shuffle=True, seed=7)
    history = train(_model(data), data[0], longer, checkpoints=Checkpointing(tmp_path, resume=True))
    assert [e.epoch for e in history.epochs] == [1, 2, 3, 4]


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    data, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    model = _model(data)

    class Poison(CrashAt):
        def step(self, losses: dict[str, float]) -> None:
            self.seen += 1
            if self.seen == 15:  # epoch 2, after batch 3: as a huge gradient would
                with torch.no_grad():
                    model.user_embedding.weight[:] = float("nan")

    with pytest.raises(
        TrainingError, match=r"loss nan at epoch 2, batch 4 of 12.*ckpt-e0002-s000000"
    ) as info:
        train(model, data[0], CONFIG, Poison(0), Checkpointing(tmp_path))
    assert "\n" not in str(info.value)
    kept = read_checkpoint(list_checkpoints(tmp_path)[0])
    assert all(torch.isfinite(t).all() for t in kept.model.values())
    # weights that turn non-finite right before a checkpoint are never written
    model2 = _model(data)

    class PoisonAtEpochEnd(CrashAt):
        def end_epoch(self, stats: EpochStats) -> None:
            with torch.no_grad():
                model2.item_embedding.weight[0] = float("inf")

    with pytest.raises(TrainingError, match="non-finite weights after epoch 1; not checkpointed"):
        train(model2, data[0], CONFIG, PoisonAtEpochEnd(0), Checkpointing(tmp_path / "b"))
    assert list_checkpoints(tmp_path / "b") == []
