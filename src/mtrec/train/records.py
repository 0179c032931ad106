"""What a training run reports: each epoch's losses, the run's record, and the progress
protocol.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Protocol, TextIO

log = logging.getLogger("mtrec.train")


@dataclasses.dataclass(frozen=True)
class EpochStats:
    """Mean per-batch losses of one epoch (a task with weight 0 is reported as None)."""

    epoch: int
    loss: float
    retrieval_loss: float | None
    rating_loss: float | None
    seconds: float


@dataclasses.dataclass(frozen=True)
class TrainingRecord:
    """What a training run did, epoch by epoch, and in which matmul precision (called
    ``History`` before: "history" is the users' rated items everywhere else)."""

    epochs: list[EpochStats]
    seconds: float
    precision: str
    precision_reason: str = ""
    """Why that precision: configured, or what ``auto`` measured (``choose_precision``)."""
    device: str = "cpu"
    """The device training ran on (``TrainConfig.device`` resolved)."""
    validation: list[float] = dataclasses.field(default_factory=list)
    """Loss on the validation slice after each epoch (empty without one)."""
    best_epoch: int | None = None
    """The epoch whose weights were kept (or refitted to), with a validation slice."""


History = TrainingRecord
"""The old name of :class:`TrainingRecord`, kept so that code written for it runs."""


class Progress(Protocol):
    """Receives training progress; the CLI renders it as a bar, a library caller may ignore it."""

    def start_epoch(self, epoch: int, epochs: int, n_batches: int) -> None: ...
    def step(self, losses: dict[str, float]) -> None: ...
    def end_epoch(self, stats: EpochStats) -> None: ...


class EpochLines:
    """A ``Progress`` for scripts and notebooks: one line per epoch on ``stream`` (stderr),
    named by ``label`` (two models train side by side under ``mtrec.fit``)."""

    def __init__(self, label: str, stream: TextIO | None = None) -> None:
        self.label, self.stream, self.epochs = label, stream, 0

    def start_epoch(self, epoch: int, epochs: int, n_batches: int) -> None:
        self.epochs = epochs

    def step(self, losses: dict[str, float]) -> None:
        pass

    def end_epoch(self, stats: EpochStats) -> None:
        parts = [f"{name} {value:.4g}" for name, value in (
            ("retrieval", stats.retrieval_loss), ("rating", stats.rating_loss)
        ) if value is not None]  # fmt: skip
        tasks = f" ({', '.join(parts)})" if parts else ""
        line = (
            f"{self.label}: epoch {stats.epoch} of at most {self.epochs}, loss "
            f"{stats.loss:.4g}{tasks}, {stats.seconds:.1f} s\n"
        )
        (self.stream or sys.stderr).write(line)
