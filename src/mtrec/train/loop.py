"""The training loop: one seed, one optimizer, batches of tensors, per-epoch stats."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from mtrec import seeds
from mtrec.config import TrainConfig
from mtrec.distributed import Shard, world
from mtrec.errors import ConfigError, TrainingError
from mtrec.features import EncodedInteractions
from mtrec.model import MultiTaskModel
from mtrec.runtime import move, resolve_device
from mtrec.train.batches import batch_options, device_batch
from mtrec.train.checkpoint import (
    Checkpointing,
)
from mtrec.train.records import EpochStats, Progress, TrainingRecord
from mtrec.train.resume import resume_run, save_run
from mtrec.train.setup import Run, retrieval_options, setup_run


def train(
    model: MultiTaskModel,
    data: EncodedInteractions,
    config: TrainConfig,
    progress: Progress | None = None,
    checkpoints: Checkpointing | None = None,
    checks: Checks | None = None,
) -> TrainingRecord:
    """Fit ``model`` to ``data`` in place and return per-epoch losses (see :func:`_fit`).

    ``checks`` may end training at an epoch's end, or at the end of a share of one (see
    ``Checks``), as ``patience`` does.

    Training runs on ``config.device`` (the model, its batches, the loss and the optimizer
    state); the model comes back on the CPU, where evaluation and serving read it.

    With ``config.validation_fraction`` a seeded slice of ``data`` (the training rows,
    never the test rows) is held out: its loss is measured after every epoch, training
    stops after ``patience`` epochs without improvement, and the best epoch's weights are
    kept; with ``refit`` the model is then trained again from its initial weights on all
    of ``data`` for that many epochs.
    """
    device = resolve_device(config.device)
    model.to(device)
    try:
        history = _train(model, data, config, Hooks(progress, checkpoints, checks))
    finally:
        model.to("cpu")
    return dataclasses.replace(history, device=str(device))


@dataclasses.dataclass(frozen=True)
class Hooks:
    """What a run reports to (``progress``), saves to (``checkpoints``) and is stopped by
    (``checks``): ``train``'s optional arguments, passed on as one."""

    progress: Progress | None = None
    checkpoints: Checkpointing | None = None
    checks: Checks | None = None


def _train(
    model: MultiTaskModel, data: EncodedInteractions, config: TrainConfig, hooks: Hooks
) -> TrainingRecord:
    if not config.validation_fraction:
        return _fit(model, data, config, hooks)
    checks = hooks.checks
    if checks is not None and checks.per_epoch != 1:
        raise ConfigError("a validation slice is measured at epochs' ends: checks too, then")
    if hooks.checkpoints is not None:
        raise ConfigError(
            "checkpoints with a validation slice are not supported yet; use one or the other"
        )
    order = torch.randperm(
        len(data), generator=torch.Generator().manual_seed(config.seed + seeds.VALIDATION_SLICE)
    )
    n_val = max(1, round(len(data) * config.validation_fraction))
    fit_part, val_part = data.subset(order[n_val:]), data.subset(order[:n_val])
    best: dict[str, Any] = {"loss": math.inf, "epoch": 0, "state": None}
    losses: list[float] = []

    def after_epoch(epoch: int) -> bool:
        loss = validation_loss(model, val_part, fit_part, config)
        losses.append(loss)
        if loss < best["loss"]:
            best.update(
                loss=loss, epoch=epoch, state={k: v.clone() for k, v in model.state_dict().items()}
            )
        stopped = checks is not None and checks.stop(epoch)
        return stopped or (bool(config.patience) and epoch - best["epoch"] >= config.patience)

    history = _fit(model, fit_part, config, Hooks(hooks.progress, checks=Checks(after_epoch)))
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    if config.refit and best["epoch"]:
        model._init_weights(config.seed)
        refit = dataclasses.replace(
            config, epochs=best["epoch"], validation_fraction=0.0, refit=False
        )
        history = _fit(model, data, refit, Hooks(hooks.progress))
    return dataclasses.replace(history, validation=losses, best_epoch=best["epoch"])


@torch.no_grad()
def validation_loss(
    model: MultiTaskModel, val: EncodedInteractions, fit: EncodedInteractions, config: TrainConfig
) -> float:
    """The weighted training loss on held-out rows, in batches of the training size (so
    that a summed retrieval loss is comparable from epoch to epoch); dropout off."""
    was_training = model.training
    model.eval()
    device = model.user_embedding.weight.device
    options = retrieval_options(config, fit, model.n_items, device)
    size, totals = config.batch_size, []
    for lo in range(0, len(val), size):
        rows = slice(lo, lo + size)
        parts = model.loss(
            *device_batch(val, rows, device),
            config.retrieval_weight,
            config.rating_weight,
            None,
            batch_options(options, val, rows, device),
        )
        totals.append(float(parts.total))
    model.train(was_training)
    return sum(totals) / len(totals)


def _fit(
    model: MultiTaskModel, data: EncodedInteractions, config: TrainConfig, hooks: Hooks
) -> TrainingRecord:
    """Fit ``model`` to ``data`` in place and return per-epoch losses (an epoch a check
    stopped part of the way through counts its batches run).

    Batches are consecutive slices of ``data`` in its given order (the reference: rows
    shuffled once by the split, then the same order every epoch). With
    ``config.shuffle`` a generator seeded from ``config.seed`` draws a new permutation
    each epoch, so one seed fixes the batch order either way.

    ``checkpoints`` saves the run at each epoch's end (and every N batches if asked);
    with ``resume`` it continues from the newest valid checkpoint and ends with the
    same weights as an uninterrupted run. A non-finite loss raises ``TrainingError``
    before it can touch the weights, naming the epoch and batch.

    >>> model = MultiTaskModel(len(vocabs.users), len(vocabs.items), ModelConfig(), seed=42)
    >>> history = train(model, encode(split.train, vocabs), TrainConfig(epochs=5))
    >>> history.epochs[-1].loss
    """
    progress, checkpoints, checks = hooks.progress, hooks.checkpoints, hooks.checks
    run = setup_run(model, data, config, checkpoints)
    epoch, first_step, sums, stats = 1, 0, [0.0, 0.0, 0.0], []
    if checkpoints is not None:
        resumed = resume_run(checkpoints, run.fingerprint, model, run.optimizer, run.generator)
        if resumed is not None:
            state, run.last_checkpoint = resumed
            epoch, first_step, sums = state.epoch, state.step, state.sums
            stats = [EpochStats(**h) for h in state.history]
    run_started = time.perf_counter()
    while epoch <= config.epochs:
        epoch_started = time.perf_counter()
        sums, steps, stopped = _epoch(run, epoch, first_step, sums, stats, progress, checks)
        epoch_stats = _epoch_stats(epoch, sums, run, time.perf_counter() - epoch_started, steps)
        stats.append(epoch_stats)
        if progress is not None:
            progress.end_epoch(epoch_stats)
        if stopped:  # mid-epoch, by a check: the last checkpoint stays where it was
            break
        epoch, first_step, sums = epoch + 1, 0, [0.0, 0.0, 0.0]
        if run.writes_checkpoints:  # positioned at the start of the next epoch
            save_run(run, epoch, 0, run.generator.get_state(), sums, stats)
        if checks is not None and checks.stop((epoch - 1) * checks.per_epoch):
            break
    model.eval()
    model.sparse_gradients(False)  # inference never needs it; a plain backward expects dense
    precision = "bf16" if run.dtype is torch.bfloat16 else "fp32"
    record = TrainingRecord(
        stats, time.perf_counter() - run_started, precision, run.precision_reason, str(run.device)
    )
    finish = getattr(progress, "finish", None)  # a Progress written before finish existed
    if finish is not None:  # has none: it still runs
        finish(record)
    return record


@dataclasses.dataclass(frozen=True)
class Checks:
    """Where a run may stop: ``stop(n)`` is called ``per_epoch`` times an epoch, at the end
    of each of its equal shares of batches, with the count of shares done; True ends the
    run there (the model in training mode before and after)."""

    stop: Callable[[int], bool]
    per_epoch: int = 1

    def share_ended(self, epoch: int, steps: int, n_batches: int) -> int | None:
        """The count of shares done if batch ``steps`` ends one before the epoch's end."""
        for share in range(1, self.per_epoch):
            if steps == -(-share * n_batches // self.per_epoch):
                return (epoch - 1) * self.per_epoch + share
        return None


def _epoch(
    run: Run,
    epoch: int,
    first_step: int,
    sums: list[float],
    stats: list[EpochStats],
    progress: Progress | None,
    checks: Checks | None,
) -> tuple[list[float], int, bool]:
    """One epoch's batches from ``first_step``: its loss sums, its batches run (those
    before ``first_step`` too), and whether a check stopped it before its end."""
    every = (run.checkpoints.every_steps or 0) if run.checkpoints is not None else 0
    epoch_rng = run.generator.get_state()  # a checkpoint mid-epoch replays this order
    order = torch.randperm(len(run.data), generator=run.generator) if run.config.shuffle else None
    if progress is not None:
        progress.start_epoch(epoch, run.config.epochs, run.n_batches)
    unread: list[tuple[int, torch.Tensor]] = []  # (step, its losses) not read yet
    for step in range(first_step, run.n_batches):
        unread.append((step, _train_step(run, order, epoch, step)))
        last = step + 1 == run.n_batches
        save = run.writes_checkpoints and every and (step + 1) % every == 0 and not last
        share = None if checks is None else checks.share_ended(epoch, step + 1, run.n_batches)
        if save or share or len(unread) >= run.read_every or last:
            sums = _read_losses(run, unread, epoch, sums, progress)
        if save:
            save_run(run, epoch, step + 1, epoch_rng, sums, stats)
        if share and checks is not None and checks.stop(share):
            return sums, step + 1, True
    return sums, run.n_batches, False


def _read_losses(
    run: Run,
    unread: list[tuple[int, torch.Tensor]],
    epoch: int,
    sums: list[float],
    progress: Progress | None,
) -> list[float]:
    """Read the losses of the batches in ``unread`` (one host sync for all of them), check
    they are finite, report them, and return ``sums`` with them added; empties ``unread``."""
    values: list[list[float]] = torch.stack([losses for _, losses in unread]).tolist()
    for (step, _), losses in zip(unread, values, strict=True):
        if not math.isfinite(losses[0]):
            raise _diverged(run, losses[0], epoch, step)
        sums = [a + b for a, b in zip(sums, losses, strict=True)]
        if progress is not None:
            progress.step(_named(losses, run.config, run.retrieval_rows))
    unread.clear()
    return sums


def _diverged(run: Run, loss: float, epoch: int, step: int) -> TrainingError:
    good = f"{run.last_checkpoint}" if run.last_checkpoint else "none was written"
    where = f"loss {loss} at epoch {epoch}, batch {step + 1} of {run.n_batches}"
    if run.read_every == 1:
        return TrainingError(
            f"training diverged: {where}; the weights stop before it. Last good checkpoint: {good}"
        )
    return TrainingError(
        f"training diverged: {where} (on {run.device} losses are read every {run.read_every} "
        f"batches, so the weights went on past it and are not saved). Last good checkpoint: {good}"
    )


def _batch(
    run: Run, order: torch.Tensor | None, step: int
) -> tuple[torch.Tensor | slice, Shard | None]:
    """The rows of batch ``step`` that this process trains on, and its shard of the
    global batch (None when training alone)."""
    size, n, where = run.config.batch_size, len(run.data), world()
    start, stop, shard = step * size, (step + 1) * size, None
    if where.size > 1:  # this process's slice of the global batch
        shard = Shard.of(min(size, n - start), where)
        start, stop = start + shard.rows().start, start + shard.rows().stop
    return (order[start:stop] if order is not None else slice(start, stop)), shard


def _train_step(run: Run, order: torch.Tensor | None, epoch: int, step: int) -> torch.Tensor:
    """One optimizer step on batch ``step``; returns the global batch's (total,
    retrieval, rating) losses where they were computed. On the CPU they are checked before
    the step, so a divergence never lands."""
    config = run.config
    rows, shard = _batch(run, order, step)
    options = batch_options(run.options, run.data, rows, run.device)
    if config.extra_negatives:  # a draw fixed by (seed, epoch, step): resumable
        draw = torch.Generator().manual_seed(seeds.extra_negatives_seed(config.seed, epoch, step))
        negatives = torch.randint(run.model.n_items, (config.extra_negatives,), generator=draw)
        options = dataclasses.replace(options, extra_negatives=move(negatives, run.device))
    total, retrieval, rating = run.forward(
        *device_batch(run.data, rows, run.device),
        config.retrieval_weight,
        config.rating_weight,
        run.dtype,
        options,
        shard,
    )
    zero = total.new_zeros(())
    parts = [total, *(t if t is not None else zero for t in (retrieval, rating))]
    stacked = torch.stack([p.detach() for p in parts])
    # every process's losses add up to the global batch's (and all see a divergence)
    losses = stacked if shard is None else shard.total(stacked)
    if run.read_every == 1 and not math.isfinite(float(losses[0])):
        raise _diverged(run, float(losses[0]), epoch, step)
    run.optimizer.zero_grad()
    # DistributedDataParallel averages gradients over the processes; the global loss is
    # their sum
    (total if shard is None else total * len(shard.sizes)).backward()
    run.optimizer.step()
    return losses


def _epoch_stats(epoch: int, sums: list[float], run: Run, seconds: float, steps: int) -> EpochStats:
    mean = _named([s / max(steps, 1) for s in sums], run.config)
    return EpochStats(
        epoch=epoch,
        loss=mean["loss"],
        retrieval_loss=mean.get("retrieval"),
        rating_loss=mean.get("rating"),
        seconds=seconds,
        retrieval_rows=run.retrieval_rows,
    )


def _named(values: list[float], config: TrainConfig, rows: float = 1.0) -> dict[str, float]:
    """(total, retrieval, rating) by name, leaving out a task with weight 0; the retrieval
    loss divided by ``rows`` (``Run.retrieval_rows``: per row, as progress shows it)."""
    named = {"loss": values[0]}
    if config.retrieval_weight:
        named["retrieval"] = values[1] / rows
    if config.rating_weight:
        named["rating"] = values[2]
    return named
