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
    retrieval_rows: float = 1.0
    """The rows a batch's retrieval loss sums over (``retrieval_reduction`` sum, as the
    reference: the mean batch size; 1 where it is a mean)."""

    def shown(self) -> dict[str, float]:
        """The tasks' losses as progress shows them: retrieval per row whatever the
        reduction, so that ``compare``'s reference models read like ``train``'s."""
        named = {"retrieval": self.retrieval_loss, "rating": self.rating_loss}
        if self.retrieval_loss is not None:
            named["retrieval"] = self.retrieval_loss / self.retrieval_rows
        return {task: value for task, value in named.items() if value is not None}


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
    """Receives training progress; the CLI renders it as a bar, a library caller may ignore
    it. ``step`` gets a batch's losses as ``EpochStats.shown`` names them (retrieval per
    row); ``finish`` the run's record once its last epoch has ended."""

    def start_epoch(self, epoch: int, epochs: int, n_batches: int) -> None: ...
    def step(self, losses: dict[str, float]) -> None: ...
    def end_epoch(self, stats: EpochStats) -> None: ...
    def finish(self, record: TrainingRecord) -> None: ...


def losses_text(losses: dict[str, float]) -> str:
    """``retrieval loss 7.451, rating loss 0.0611``: the words every progress line uses."""
    return ", ".join(f"{task} loss {value:.4g}" for task, value in losses.items())


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
        shown = stats.shown()
        tasks = f" ({losses_text(shown)})" if shown else ""
        self._write(
            f"epoch {stats.epoch} of at most {self.epochs}, loss {stats.loss:.4g}{tasks}, "
            f"{stats.seconds:.1f} s"
        )

    def finish(self, record: TrainingRecord) -> None:
        self._write(f"trained, {len(record.epochs)} epochs in {record.seconds:.1f} s")

    def _write(self, text: str) -> None:
        (self.stream or sys.stderr).write(f"{self.label}: {text}\n")
