"""The training loop: one seed, one optimizer, batches of tensors, per-epoch stats."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from mtrec.checkpoint import (
    Checkpointing,
    TrainState,
    list_checkpoints,
    load_latest,
    save_checkpoint,
)
from mtrec.config import TrainConfig
from mtrec.distributed import Shard, world
from mtrec.errors import ConfigError, TrainingError
from mtrec.features import EncodedInteractions
from mtrec.model import MultiTaskModel, RetrievalOptions
from mtrec.optim import Adagrad, Adam
from mtrec.runtime import move, resolve_device

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
class History:
    """What a training run did, epoch by epoch, and in which matmul precision."""

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


def native_bf16(device: torch.device | None = None) -> bool:
    """Whether ``device`` (default: the CPU) has bfloat16 matmuls in hardware: AVX512-BF16
    or AMX-BF16 on a CPU, bf16 support on a CUDA GPU (Ampere and later).

    Without them bf16 matmuls are emulated and slower than float32, so ``auto`` would
    only lose accuracy.
    """
    if device is not None and device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device is not None and device.type != "cpu":
        return False
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


BF16_MARGIN = 0.8
"""``auto`` picks bf16 only when its steps take at most this share of fp32's: close calls
stay fp32 (exact, and the same choice run after run: at 0.9 the default preset's model,
0.89 here, flipped between runs)."""
BF16_MIN_STEP = 1e-3
"""Seconds: an fp32 step faster than this stays fp32 (nothing to gain, only noise)."""


def choose_precision(
    model: MultiTaskModel, data: EncodedInteractions, config: TrainConfig, options: RetrievalOptions
) -> tuple[torch.dtype | None, str]:
    """The training matmul dtype and why. ``auto`` on a device with native bf16 matmuls
    times training steps (forward and backward on the first batch, alternating fp32 and
    bf16, a few tens of milliseconds) and takes bf16 only where it is clearly faster
    (``BF16_MARGIN``) on steps long enough to matter (``BF16_MIN_STEP``): on
    some CPUs with AVX512-BF16 but no AMX it is slower than fp32. Nothing of the trial
    stays (gradients cleared, the random state restored); data-parallel processes decide
    together."""
    if config.precision != "auto":
        dtype = torch.bfloat16 if config.precision == "bf16" else None
        return dtype, f"{config.precision}, as configured"
    device = model.user_embedding.weight.device
    if not native_bf16(device):
        what = "this CPU has no native bf16 instructions"
        return None, f"auto: fp32 ({what if device.type == 'cpu' else f'no bf16 on {device}'})"
    fp32, bf16 = _time_steps(model, data, config, options)
    said = f"bf16 steps {bf16 * 1e3:.1f} ms, fp32 {fp32 * 1e3:.1f} ms (median, timed at start)"
    if bf16 <= BF16_MARGIN * fp32 and fp32 >= BF16_MIN_STEP:
        return torch.bfloat16, f"auto: bf16 ({said})"
    why = "bf16 not faster by 20%" if fp32 >= BF16_MIN_STEP else "steps too short to gain"
    return None, f"auto: fp32 ({said}: {why})"


def _time_steps(
    model: MultiTaskModel,
    data: EncodedInteractions,
    config: TrainConfig,
    options: RetrievalOptions,
    rounds: int = 8,
) -> tuple[float, float]:
    """Median seconds of one training step's forward and backward in fp32 and in bf16."""
    device = model.user_embedding.weight.device
    batch = _device_batch(data, slice(0, min(config.batch_size, len(data))), device)
    weights = (config.retrieval_weight, config.rating_weight)
    draws = model.draws.get_state() if model.draws is not None else None  # must not shift
    times: dict[torch.dtype | None, list[float]] = {None: [], torch.bfloat16: []}
    try:
        for n in range(rounds + 1):
            for dtype in (None, torch.bfloat16) if n % 2 else (torch.bfloat16, None):
                _wait_for(device)
                started = time.perf_counter()
                model.loss(*batch, *weights, dtype, options).total.backward()  # type: ignore[no-untyped-call]
                _wait_for(device)  # a GPU runs asynchronously: time the work, not its launch
                if n:  # the first round warms both up
                    times[dtype].append(time.perf_counter() - started)
                model.zero_grad(set_to_none=True)
    finally:
        if draws is not None and model.draws is not None:
            model.draws.set_state(draws)
    medians = torch.tensor(
        [sorted(t)[len(t) // 2] for t in times.values()], dtype=torch.float64, device=device
    )
    if world().size > 1:  # every process takes the same precision
        torch.distributed.all_reduce(medians)
    return float(medians[0]), float(medians[1])


class Progress(Protocol):
    """Receives training progress; the CLI renders it as a bar, a library caller may ignore it."""

    def start_epoch(self, epoch: int, epochs: int, n_batches: int) -> None: ...
    def step(self, losses: dict[str, float]) -> None: ...
    def end_epoch(self, stats: EpochStats) -> None: ...


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> Adagrad | Adam:
    """The configured optimizer. Adagrad takes Keras' constants (accumulator starts at 0.1,
    epsilon 1e-7), as the reference; its weight decay is an L2 term in the gradient."""
    if config.optimizer == "adagrad":
        return Adagrad(
            model.parameters(),
            lr=config.learning_rate,
            initial_accumulator_value=0.1,
            eps=1e-7,
            weight_decay=config.weight_decay,
        )
    return Adam(
        model.parameters(),
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        decoupled=config.optimizer == "adamw",
    )


def train(
    model: MultiTaskModel,
    data: EncodedInteractions,
    config: TrainConfig,
    progress: Progress | None = None,
    checkpoints: Checkpointing | None = None,
) -> History:
    """Fit ``model`` to ``data`` in place and return per-epoch losses (see :func:`_fit`).

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
        history = _train(model, data, config, progress, checkpoints)
    finally:
        model.to("cpu")
    return dataclasses.replace(history, device=str(device))


def _train(
    model: MultiTaskModel,
    data: EncodedInteractions,
    config: TrainConfig,
    progress: Progress | None,
    checkpoints: Checkpointing | None,
) -> History:
    if not config.validation_fraction:
        return _fit(model, data, config, progress, checkpoints)
    if checkpoints is not None:
        raise ConfigError(
            "checkpoints with a validation slice are not supported yet; use one or the other"
        )
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(config.seed + 7919))
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
        return bool(config.patience) and epoch - best["epoch"] >= config.patience

    history = _fit(model, fit_part, config, progress, None, after_epoch)
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    if config.refit and best["epoch"]:
        model._init_weights(config.seed)
        refit = dataclasses.replace(
            config, epochs=best["epoch"], validation_fraction=0.0, refit=False
        )
        history = _fit(model, data, refit, progress, None)
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
            *_device_batch(val, rows, device),
            config.retrieval_weight,
            config.rating_weight,
            None,
            _batch_options(options, val, rows, device),
        )
        totals.append(float(parts.total))
    model.train(was_training)
    return sum(totals) / len(totals)


@dataclasses.dataclass
class _Run:
    """What one call of :func:`_fit` trains with, set up once (see :func:`_setup`)."""

    model: MultiTaskModel
    forward: torch.nn.Module
    """The model, or its ``DistributedDataParallel`` wrapper in a data-parallel run."""
    data: EncodedInteractions
    config: TrainConfig
    optimizer: Adagrad | Adam
    generator: torch.Generator
    """Draws each epoch's order with ``shuffle``; its state is part of a checkpoint."""
    options: RetrievalOptions
    dtype: torch.dtype | None
    precision_reason: str
    fingerprint: str
    checkpoints: Checkpointing | None
    device: torch.device
    last_checkpoint: Path | None = None

    @property
    def n_batches(self) -> int:
        return -(-len(self.data) // self.config.batch_size)

    @property
    def read_every(self) -> int:
        """Batches between reads of the losses: every one on the CPU, where reading costs
        nothing and lets a divergence be caught before its step; ``READ_EVERY`` elsewhere."""
        return 1 if self.device.type == "cpu" else READ_EVERY


def _fit(
    model: MultiTaskModel,
    data: EncodedInteractions,
    config: TrainConfig,
    progress: Progress | None = None,
    checkpoints: Checkpointing | None = None,
    after_epoch: Callable[[int], bool] | None = None,
) -> History:
    """Fit ``model`` to ``data`` in place and return per-epoch losses.

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
    run = _setup(model, data, config, checkpoints)
    epoch, first_step, sums, stats = 1, 0, [0.0, 0.0, 0.0], []
    if checkpoints is not None:
        resumed = _resume(checkpoints, run.fingerprint, model, run.optimizer, run.generator)
        if resumed is not None:
            state, run.last_checkpoint = resumed
            epoch, first_step, sums = state.epoch, state.step, state.sums
            stats = [EpochStats(**h) for h in state.history]
    every = (checkpoints.every_steps or 0) if checkpoints is not None else 0
    writes = checkpoints is not None and world().is_main  # one process writes for all
    run_started = time.perf_counter()
    while epoch <= config.epochs:
        epoch_started = time.perf_counter()
        epoch_rng = run.generator.get_state()  # a checkpoint mid-epoch replays this order
        order = torch.randperm(len(data), generator=run.generator) if config.shuffle else None
        if progress is not None:
            progress.start_epoch(epoch, config.epochs, run.n_batches)
        unread: list[tuple[int, torch.Tensor]] = []  # (step, its losses) not read yet
        for step in range(first_step, run.n_batches):
            unread.append((step, _train_step(run, order, epoch, step)))
            save = writes and every and (step + 1) % every == 0 and step + 1 < run.n_batches
            if save or len(unread) >= run.read_every or step + 1 == run.n_batches:
                sums = _read_losses(run, unread, epoch, sums, progress)
            if save:
                _checkpoint(run, epoch, step + 1, epoch_rng, sums, stats)
        epoch_stats = _epoch_stats(epoch, sums, run, time.perf_counter() - epoch_started)
        stats.append(epoch_stats)
        if progress is not None:
            progress.end_epoch(epoch_stats)
        epoch, first_step, sums = epoch + 1, 0, [0.0, 0.0, 0.0]
        if writes:  # positioned at the start of the next epoch
            _checkpoint(run, epoch, 0, run.generator.get_state(), sums, stats)
        if after_epoch is not None and after_epoch(epoch - 1):
            break
    model.eval()
    model.sparse_gradients(False)  # inference never needs it; a plain backward expects dense
    precision = "bf16" if run.dtype is torch.bfloat16 else "fp32"
    return History(
        stats, time.perf_counter() - run_started, precision, run.precision_reason, str(run.device)
    )


def _setup(
    model: MultiTaskModel,
    data: EncodedInteractions,
    config: TrainConfig,
    checkpoints: Checkpointing | None,
) -> _Run:
    """Seed, build the optimizer (its state where the model is) and the loss options, put
    the model in training mode."""
    device = model.user_embedding.weight.device
    generator = torch.Generator().manual_seed(config.seed)
    model.seed_draws(config.seed)  # dropout masks and new-user rows
    optimizer = make_optimizer(model, config)
    model.train()
    # Row-sparse table gradients: exact for Adagrad without weight decay (untouched rows
    # would not move), and the step then costs O(batch) instead of O(users + items).
    # Data-parallel runs all-reduce the sparse gradients too (gloo's sparse all-reduce:
    # 1M rows, 2 processes, one epoch: 11.3 s, against 36.0 s with dense gradients).
    sparse = sparse_updates(config, model.n_users + model.n_items)
    model.sparse_gradients(sparse and sparse_gradients_work(device))
    parallel = world().size > 1
    options = retrieval_options(config, data, model.n_items, device)
    dtype, reason = choose_precision(model, data, config, options)  # before any DDP hooks
    return _Run(
        model=model,
        forward=_data_parallel(model, config) if parallel else model,
        data=data,
        config=config,
        optimizer=optimizer,
        generator=generator,
        options=options,
        dtype=dtype,
        precision_reason=reason,
        fingerprint=run_fingerprint(model, config, len(data)),
        checkpoints=checkpoints,
        device=device,
    )


READ_EVERY = 50
"""Batches between reads of the losses on an accelerator: reading a value from a GPU
waits for all its queued work, so a read every step would stall it once per batch."""


def sparse_gradients_work(device: torch.device) -> bool:
    """Whether row-sparse gradients can train here: not on MPS (no sparse tensors) and not
    under NCCL, which all-reduces dense tensors only (dense steps are cheap on a GPU)."""
    if device.type not in ("cpu", "cuda"):
        return False
    return world().size == 1 or torch.distributed.get_backend() != "nccl"


def _wait_for(device: torch.device) -> None:
    """Block until ``device`` has done its queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_batch(
    data: EncodedInteractions, rows: torch.Tensor | slice, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows ``rows`` of ``data`` (gathered on the host) as (user, item, label) on ``device``."""
    return tuple(move(column[rows], device) for column in (data.user, data.item, data.label))  # type: ignore[return-value]


def _batch_options(
    options: RetrievalOptions,
    data: EncodedInteractions,
    rows: torch.Tensor | slice,
    device: torch.device,
) -> RetrievalOptions:
    """``options`` for the batch of ``rows``: which of them train the rating head only."""
    if data.rating_only is None:
        return options
    return dataclasses.replace(options, rating_only=move(data.rating_only[rows], device))


def _read_losses(
    run: _Run,
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
            progress.step(_named(losses, run.config))
    unread.clear()
    return sums


def _diverged(run: _Run, loss: float, epoch: int, step: int) -> TrainingError:
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
    run: _Run, order: torch.Tensor | None, step: int
) -> tuple[torch.Tensor | slice, Shard | None]:
    """The rows of batch ``step`` that this process trains on, and its shard of the
    global batch (None when training alone)."""
    size, n, where = run.config.batch_size, len(run.data), world()
    start, stop, shard = step * size, (step + 1) * size, None
    if where.size > 1:  # this process's slice of the global batch
        shard = Shard.of(min(size, n - start), where)
        start, stop = start + shard.rows().start, start + shard.rows().stop
    return (order[start:stop] if order is not None else slice(start, stop)), shard


def _train_step(run: _Run, order: torch.Tensor | None, epoch: int, step: int) -> torch.Tensor:
    """One optimizer step on batch ``step``; returns the global batch's (total,
    retrieval, rating) losses where they were computed. On the CPU they are checked before
    the step, so a divergence never lands."""
    config = run.config
    rows, shard = _batch(run, order, step)
    options = _batch_options(run.options, run.data, rows, run.device)
    if config.extra_negatives:  # a draw fixed by (seed, epoch, step): resumable
        draw = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch * 100_003 + step)
        negatives = torch.randint(run.model.n_items, (config.extra_negatives,), generator=draw)
        options = dataclasses.replace(options, extra_negatives=move(negatives, run.device))
    total, retrieval, rating = run.forward(
        *_device_batch(run.data, rows, run.device),
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


def _checkpoint(
    run: _Run,
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


def _epoch_stats(epoch: int, sums: list[float], run: _Run, seconds: float) -> EpochStats:
    mean = _named([s / run.n_batches for s in sums], run.config)
    return EpochStats(
        epoch=epoch,
        loss=mean["loss"],
        retrieval_loss=mean.get("retrieval"),
        rating_loss=mean.get("rating"),
        seconds=seconds,
    )


def _data_parallel(model: MultiTaskModel, config: TrainConfig) -> torch.nn.Module:
    """The model under ``DistributedDataParallel`` (gradients all-reduced during backward);
    a task with weight 0 leaves its parameters without gradients, which DDP must expect."""
    from torch.nn.parallel import DistributedDataParallel

    both = config.retrieval_weight and config.rating_weight
    return DistributedDataParallel(model, find_unused_parameters=not both)


LAZY_MIN_ROWS = 100_000
"""Users plus items from which ``sparse_updates="auto"`` trains Adam(W) lazily: below,
the dense step is cheap and keeps the arithmetic the presets were tuned with (ML-100K has
2,625 rows); above, its O(table) cost a step dominates training (the tuned preset ran at
12.8k examples/s on a 1M-row log with 280k rows, against 212k for Adagrad's sparse step)."""


def sparse_updates(config: TrainConfig, table_rows: int) -> bool:
    """Whether the embedding tables train with row-sparse gradients (see
    ``TrainConfig.sparse_updates``); ``table_rows`` is users plus items."""
    if config.sparse_updates == "off":
        return False
    if config.optimizer == "adagrad":  # exact without weight decay; impossible with it
        if config.weight_decay and config.sparse_updates == "on":
            raise ConfigError(
                "TrainConfig.sparse_updates: Adagrad with weight decay has no sparse update "
                "(the decay moves every row); use Adam(W) or no weight decay"
            )
        return not config.weight_decay
    return config.sparse_updates == "on" or table_rows >= LAZY_MIN_ROWS


def retrieval_options(
    config: TrainConfig,
    data: EncodedInteractions,
    n_items: int,
    device: torch.device | None = None,
) -> RetrievalOptions:
    """The in-batch softmax's options; log-Q from each item's share of the training rows."""
    log_q = None
    if config.logq_correction:
        counts = torch.bincount(data.item, minlength=n_items).double().clamp_min(1.0)
        log_q = (counts / len(data)).log().float()
        if device is not None:
            log_q = log_q.to(device)
    return RetrievalOptions(
        reduction=config.retrieval_reduction,
        temperature=config.temperature,
        log_q=log_q,
        remove_accidental_hits=config.remove_accidental_hits,
        positive_min_label=config.positive_min_rating,
    )


def run_fingerprint(model: MultiTaskModel, config: TrainConfig, n_rows: int) -> str:
    """Identifies a run for its checkpoints: model shape, hyperparameters except the epoch
    count (a run may be extended) and the device (it may resume on another), and the
    training data's size."""
    described = {
        "model": model.config.to_dict(),
        "tables": [model.user_embedding.num_embeddings, model.n_items],
        "train": {k: v for k, v in config.to_dict().items() if k not in ("epochs", "device")},
        "rows": n_rows,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]


def _resume(
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


def _named(values: list[float], config: TrainConfig) -> dict[str, float]:
    """(total, retrieval, rating) by name, leaving out a task with weight 0."""
    named = {"loss": values[0]}
    if config.retrieval_weight:
        named["retrieval"] = values[1]
    if config.rating_weight:
        named["rating"] = values[2]
    return named
