"""A run saved at an epoch's end (or every N batches) and continued from its newest valid
checkpoint.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from mtrec.errors import TrainingError
from mtrec.model import MultiTaskModel
from mtrec.train.checkpoint import (
    Checkpointing,
    TrainState,
    list_checkpoints,
    load_latest,
    save_checkpoint,
)
from mtrec.train.optim import Adagrad, Adam
from mtrec.train.records import EpochStats, log
from mtrec.train.setup import Run


def save_run(
    run: Run,
    epoch: int,
    step: int,
    epoch_rng: torch.Tensor,
    sums: list[float],
    stats: list[EpochStats],
) -> None:
    """Save the run positioned at ``step`` batches into ``epoch``; refuses non-finite weights."""
    assert run.checkpoints is not None
    if not all(bool(torch.isfinite(p).all()) for p in run.model.parameters()):
        good = f"{run.last_checkpoint}" if run.last_checkpoint else "none was written"
        position = f"after epoch {epoch - 1}" if step == 0 else f"at epoch {epoch}, batch {step}"
        raise TrainingError(
            f"training diverged: non-finite weights {position}; not checkpointed. "
            f"Last good checkpoint: {good}"
        )
    state = TrainState(
        epoch=epoch,
        step=step,
        model={name: t.cpu() for name, t in run.model.state_dict().items()},
        accumulators=[t.cpu() for t in run.optimizer.accumulators],
        epoch_rng=epoch_rng,
        sums=sums,
        history=[dataclasses.asdict(s) for s in stats],
        fingerprint=run.fingerprint,
        global_rng=run.model.draws.get_state() if run.model.draws is not None else None,
    )
    run.last_checkpoint = save_checkpoint(run.checkpoints, state)


def resume_run(
    settings: Checkpointing,
    fingerprint: str,
    model: MultiTaskModel,
    optimizer: Adagrad | Adam,
    generator: torch.Generator,
) -> tuple[TrainState, Path] | None:
    existing = list_checkpoints(settings.directory)
    if not settings.resume:
        if existing:
            raise TrainingError(
                f"{settings.directory} already holds checkpoints ({existing[0].name}); "
                "pass --resume to continue that run, or choose an empty --checkpoint-dir"
            )
        return None
    found = load_latest(settings, fingerprint)
    if found is None:
        if existing:
            log.warning(
                "no valid checkpoint in %s: starting from the beginning", settings.directory
            )
        return None
    state, path = found
    model.load_state_dict(state.model)
    with torch.no_grad():
        for mine, saved in zip(optimizer.accumulators, state.accumulators, strict=True):
            mine.copy_(saved)
    generator.set_state(state.epoch_rng)
    if state.global_rng is not None and model.draws is not None:
        model.draws.set_state(state.global_rng)
    log.info("resuming from %s (epoch %d, batch %d)", path, state.epoch, state.step)
    return state, path
