"""The training loop: one seed, one optimizer, batches of tensors, per-epoch stats."""

from __future__ import annotations

import dataclasses
import platform
import time
from typing import Protocol

import torch

from mtrec.config import TrainConfig
from mtrec.features import EncodedInteractions
from mtrec.model import MultiTaskModel
from mtrec.optim import Adagrad


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


def native_bf16() -> bool:
    """Whether this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX-BF16).

    Without them bf16 matmuls are emulated and slower than float32, so ``auto`` would
    only lose accuracy.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def compute_dtype(precision: str) -> torch.dtype | None:
    """The matmul dtype for a ``TrainConfig.precision`` (None: plain float32)."""
    if precision == "bf16" or (precision == "auto" and native_bf16()):
        return torch.bfloat16
    return None


class Progress(Protocol):
    """Receives training progress; the CLI renders it as a bar, a library caller may ignore it."""

    def start_epoch(self, epoch: int, epochs: int, n_batches: int) -> None: ...
    def step(self, losses: dict[str, float]) -> None: ...
    def end_epoch(self, stats: EpochStats) -> None: ...


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> Adagrad:
    """Adagrad with Keras' constants (accumulator starts at 0.1, epsilon 1e-7), as the reference."""
    return Adagrad(
        model.parameters(), lr=config.learning_rate, initial_accumulator_value=0.1, eps=1e-7
    )


def train(
    model: MultiTaskModel,
    data: EncodedInteractions,
    config: TrainConfig,
    progress: Progress | None = None,
) -> History:
    """Fit ``model`` to ``data`` in place and return per-epoch losses.

    Batches are consecutive slices of ``data`` in its given order (the reference: rows
    shuffled once by the split, then the same order every epoch). With
    ``config.shuffle`` a generator seeded from ``config.seed`` draws a new permutation
    each epoch, so one seed fixes the batch order either way.

    >>> model = MultiTaskModel(len(vocabs.users), len(vocabs.items), ModelConfig(), seed=42)
    >>> history = train(model, encode(split.train, vocabs), TrainConfig(epochs=5))
    >>> history.epochs[-1].loss
    """
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = make_optimizer(model, config)
    n, size = len(data), config.batch_size
    n_batches = -(-n // size)
    w_ret, w_rank = config.retrieval_weight, config.ranking_weight
    dtype = compute_dtype(config.precision)
    model.train()
    stats: list[EpochStats] = []
    start_run = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(n, generator=generator) if config.shuffle else None
        sums = torch.zeros(3)
        if progress is not None:
            progress.start_epoch(epoch, config.epochs, n_batches)
        for lo in range(0, n, size):
            rows = order[lo : lo + size] if order is not None else slice(lo, lo + size)
            parts = model.loss(
                data.user[rows], data.item[rows], data.label[rows], w_ret, w_rank, dtype
            )
            optimizer.zero_grad()
            parts.total.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            batch = torch.stack(
                [
                    parts.total.detach(),
                    parts.retrieval.detach() if parts.retrieval is not None else sums.new_zeros(()),
                    parts.rating.detach() if parts.rating is not None else sums.new_zeros(()),
                ]
            )
            sums += batch
            if progress is not None:
                progress.step(_named(batch.tolist(), w_ret, w_rank))
        mean = _named((sums / n_batches).tolist(), w_ret, w_rank)
        epoch_stats = EpochStats(
            epoch,
            mean["loss"],
            mean.get("retrieval"),
            mean.get("rating"),
            time.perf_counter() - start,
        )
        stats.append(epoch_stats)
        if progress is not None:
            progress.end_epoch(epoch_stats)
    model.eval()
    precision = "bf16" if dtype is torch.bfloat16 else "fp32"
    return History(stats, time.perf_counter() - start_run, precision)


def _named(values: list[float], w_ret: float, w_rank: float) -> dict[str, float]:
    named = {"loss": values[0]}
    if w_ret:
        named["retrieval"] = values[1]
    if w_rank:
        named["rating"] = values[2]
    return named
